// Batched incremental decoding with a preallocated KV cache: prompts are left-padded into one batch,
// the prompt is run once (prefill), then one token per step for every row until each row has produced
// an EOS id or max_new_tokens. Rows that finished keep decoding padding (cheaper than reshaping the
// batch on a CPU); their outputs are cut at the EOS.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/torch.hpp"

#include "policy/model.hpp"
#include "policy/sampler.hpp"
#include "policy/tokenizer/tokenizer.hpp"

namespace grm {

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  std::vector<int64_t> eos_ids;  // empty: never stop early
  int64_t pad_id = 0;
  uint64_t seed = 0;        // the same seed, prompts and batch give the same samples
  int64_t batch_size = 64;  // rows decoded together
};

// Options that stop at the model's EOS ids (its config.json or generation_config.json; the tokenizer's EOS
// when those name none) and pad with the tokenizer's pad id (0 without one); the rest keep their defaults.
GenerateOptions generate_options_for(const ModelConfig& model, const Tokenizer& tokenizer);

struct Generation {
  std::vector<std::vector<int64_t>> tokens;  // per row: new tokens, EOS included when one was drawn
  std::vector<bool> stopped_at_eos;
  int64_t generated_tokens = 0;  // total tokens decoded over all rows (throughput accounting)
  int threads = 0;               // LibTorch threads decoding ran on (small models run on one)
};

// A generated row without its stop token, for decoding to response text (some tokenizers, TinyStories'
// among them, print their EOS token even when told to skip special tokens).
std::vector<int64_t> without_eos(const std::vector<int64_t>& tokens, const std::vector<int64_t>& eos_ids);

// The response's text as a continuation of the prompt, so that prompt_text + response_text is the text
// the model saw: decoding prompt + response together and removing the decoded prompt keeps what a
// separate decode loses at the seam (a SentencePiece-style leading space, a character split across the
// boundary). The response is cut at its first EOS id.
std::string decode_continuation(const Tokenizer& tokenizer, const std::vector<int64_t>& prompt,
                                const std::vector<int64_t>& response, const std::vector<int64_t>& eos_ids);

// One output row per prompt (repeat a prompt to draw several samples). progress(done, total) is called
// after each batch.
Generation generate(CausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                    const GenerateOptions& options,
                    const std::function<void(int64_t, int64_t)>& progress = nullptr);

}  // namespace grm
