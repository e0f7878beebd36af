// One huge text costs a scorer what max_length tokens cost: only the text's tail is tokenized, and the
// kept tokens are exactly those of tokenizing the whole text, for each real tokenizer here.
#include <string>

#include <gtest/gtest.h>

#include "core/text_io.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/reward_data.hpp"
#include "tests/test_util.hpp"

namespace {

// About `bytes` of real dialogue (HH-RLHF), with multi-byte characters mixed in so cuts land inside them.
std::string long_text(size_t bytes) {
  std::string text;
  auto lines = grm::read_lines(shared_path("data/hh_rlhf_harmless_test.jsonl.gz"));
  for (size_t i = 0; text.size() < bytes; ++i) text += lines[i % lines.size()] + " héllo — 你好 ";
  return text.substr(0, bytes);
}

TEST(Reliability, BoundedEncodingKeepsExactlyTheTokensOfTheWholeText) {
  const std::string prompt = long_text(60000),
                    response = " And then they all went home, happy. 🙂 The end.";
  for (const char* path : {"models/tinystories-656k", "models/stories3m", "tokenizers/gpt2/tokenizer.json",
                           "tokenizers/llama2-spm/tokenizer.model"}) {
    auto tokenizer = grm::load_tokenizer(shared_path(path));
    size_t piece = grm::longest_piece_bytes(*tokenizer);
    for (int64_t max_length : {16, 64, 200}) {
      // The response alone fits, or is itself cut; the prompt is cut at different byte offsets.
      for (const auto& [p, r] :
           {std::pair{prompt, response}, std::pair{std::string("Hi."), prompt + response},
            std::pair{prompt.substr(7), response}}) {
        auto full = grm::encode_prompt_response(*tokenizer, p, r, max_length);
        auto bounded = grm::encode_prompt_response_bounded(*tokenizer, p, r, max_length, piece);
        EXPECT_EQ(bounded.ids, full.ids) << path << " max_length " << max_length;
        EXPECT_EQ(bounded.response_start, full.response_start) << path << " max_length " << max_length;
      }
    }
  }
}

}  // namespace
