// Turning (prompt, response) texts into model inputs: one joint tokenization with the response span
// known (so prompt tokens can be masked out of log-prob sums), left truncation that keeps the response's
// end (where the reward is read) and the BOS token, and right-padded batches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/torch.hpp"

#include "policy/chat_format.hpp"
#include "policy/tokenizer/tokenizer.hpp"

namespace grm {

struct EncodedSequence {
  std::vector<int64_t> ids;
  int64_t response_start = 0;  // ids[response_start..] are response tokens
};

// A model's text (policy/chat_format.hpp ChatText) tokenized with prompt and response together
// (policy/chat_template.hpp tokenize_prompt_response), the EOS appended when the text asks for it, then
// cut to max_length tokens from the left, keeping BOS.
EncodedSequence encode_chat_text(const Tokenizer& tokenizer, const ChatText& text, int64_t max_length);
// The same for text as it is: ChatText{prompt, response} (the tokenizer's special tokens, no EOS added).
EncodedSequence encode_prompt_response(const Tokenizer& tokenizer, const std::string& prompt,
                                       const std::string& response, int64_t max_length);

// The same, with the work bounded for texts of any size (scoring and serving): only the last
// 2 * max_length * max_piece_bytes bytes of prompt + response are tokenized (from a UTF-8 character
// start), which holds at least 2 * max_length tokens when no token is longer than max_piece_bytes, so the
// last max_length of them are those of the whole text unless the cut disturbs tokens more than max_length
// tokens away (no tokenizer's merges reach that far). max_piece_bytes: longest_piece_bytes(tokenizer).
// A BOS text the prompt begins with stays in front of what is kept.
EncodedSequence encode_chat_text_bounded(const Tokenizer& tokenizer, const ChatText& text, int64_t max_length,
                                         size_t max_piece_bytes);
EncodedSequence encode_prompt_response_bounded(const Tokenizer& tokenizer, const std::string& prompt,
                                               const std::string& response, int64_t max_length,
                                               size_t max_piece_bytes);
// The most bytes any single token decodes to (special tokens included).
size_t longest_piece_bytes(const Tokenizer& tokenizer);

struct Batch {
  torch::Tensor ids;              // (N, T) right-padded
  torch::Tensor mask;             // (N, T) 1 for real tokens
  torch::Tensor response_mask;    // (N, T) 1 for response tokens
  torch::Tensor response_tokens;  // (N) number of response tokens
  int64_t n_tokens = 0;           // real tokens in the batch
};

Batch collate(const std::vector<const EncodedSequence*>& sequences, int64_t pad_id);

}  // namespace grm
