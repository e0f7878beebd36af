#include "rm/reward_data.hpp"

#include <algorithm>
#include <string_view>

#include "policy/chat_template.hpp"

namespace grm {

EncodedSequence encode_chat_text(const Tokenizer& tokenizer, const ChatText& text, int64_t max_length) {
  EncodedSequence out;
  auto joint = tokenize_prompt_response(tokenizer, text.prompt, text.response, text.add_special_tokens);
  out.ids = std::move(joint.ids);
  out.response_start = int64_t(joint.response_begin);
  if (text.eos && tokenizer.eos_id && (out.ids.empty() || out.ids.back() != *tokenizer.eos_id))
    out.ids.push_back(*tokenizer.eos_id);  // unless the post-processor put one there
  if (max_length > 0 && int64_t(out.ids.size()) > max_length) {
    // A template's BOS text is its first token, whether or not the tokenizer names it its BOS.
    bool keep_bos = !out.ids.empty() &&
                    ((tokenizer.bos_id && out.ids.front() == *tokenizer.bos_id) || !text.bos_text.empty());
    int64_t drop = int64_t(out.ids.size()) - max_length;
    auto first = out.ids.begin() + (keep_bos ? 1 : 0);
    out.ids.erase(first, first + drop);
    out.response_start = std::max<int64_t>(keep_bos ? 1 : 0, out.response_start - drop);
  }
  return out;
}

EncodedSequence encode_prompt_response(const Tokenizer& tokenizer, const std::string& prompt,
                                       const std::string& response, int64_t max_length) {
  ChatText text;
  text.prompt = prompt;
  text.response = response;
  return encode_chat_text(tokenizer, text, max_length);
}

namespace {

// `text` without its first `drop` bytes, moved forward to the start of a UTF-8 character.
std::string_view drop_front(std::string_view text, size_t drop) {
  drop = std::min(drop, text.size());
  while (drop < text.size() && (static_cast<unsigned char>(text[drop]) & 0xC0) == 0x80) ++drop;
  return text.substr(drop);
}

}  // namespace

EncodedSequence encode_chat_text_bounded(const Tokenizer& tokenizer, const ChatText& text, int64_t max_length,
                                         size_t max_piece_bytes) {
  size_t budget = 2 * size_t(std::max<int64_t>(1, max_length)) * std::max<size_t>(1, max_piece_bytes);
  const std::string &prompt = text.prompt, &response = text.response;
  if (max_length <= 0 || prompt.size() + response.size() <= budget)
    return encode_chat_text(tokenizer, text, max_length);
  std::string_view kept_response =
      drop_front(response, response.size() > budget ? response.size() - budget : 0);
  size_t prompt_budget = budget - std::min(budget, kept_response.size());
  std::string_view kept_prompt = drop_front(prompt, prompt.size() - std::min(prompt.size(), prompt_budget));
  ChatText kept = text;
  kept.prompt = std::string(kept_prompt);
  kept.response = std::string(kept_response);
  // The cut took the BOS text off the front (of the prompt, or of an untemplated query's whole text).
  const std::string& front = kept.prompt.empty() ? kept.response : kept.prompt;
  if (!text.bos_text.empty() && front.rfind(text.bos_text, 0) != 0) kept.prompt = text.bos_text + kept.prompt;
  return encode_chat_text(tokenizer, kept, max_length);
}

EncodedSequence encode_prompt_response_bounded(const Tokenizer& tokenizer, const std::string& prompt,
                                               const std::string& response, int64_t max_length,
                                               size_t max_piece_bytes) {
  ChatText text;
  text.prompt = prompt;
  text.response = response;
  return encode_chat_text_bounded(tokenizer, text, max_length, max_piece_bytes);
}

size_t longest_piece_bytes(const Tokenizer& tokenizer) {
  size_t longest = 1;
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id)
    longest = std::max(longest, tokenizer.decode({id}, /*skip_special_tokens=*/false).size());
  return longest;
}

Batch collate(const std::vector<const EncodedSequence*>& sequences, int64_t pad_id) {
  int64_t N = int64_t(sequences.size()), T = 1;
  for (const auto* s : sequences) T = std::max<int64_t>(T, int64_t(s->ids.size()));
  Batch batch;
  batch.ids = torch::full({N, T}, pad_id, torch::kInt64);
  batch.mask = torch::zeros({N, T}, torch::kInt64);
  batch.response_mask = torch::zeros({N, T}, torch::kInt64);
  batch.response_tokens = torch::zeros({N}, torch::kInt64);
  auto ids = batch.ids.accessor<int64_t, 2>();
  auto mask = batch.mask.accessor<int64_t, 2>();
  auto response = batch.response_mask.accessor<int64_t, 2>();
  for (int64_t n = 0; n < N; ++n) {
    const auto& s = *sequences[size_t(n)];
    for (int64_t t = 0; t < int64_t(s.ids.size()); ++t) {
      ids[n][t] = s.ids[size_t(t)];
      mask[n][t] = 1;
      response[n][t] = t >= s.response_start ? 1 : 0;
    }
    batch.response_tokens[n] =
        int64_t(s.ids.size()) - std::min<int64_t>(s.response_start, int64_t(s.ids.size()));
    batch.n_tokens += int64_t(s.ids.size());
  }
  return batch;
}

}  // namespace grm
