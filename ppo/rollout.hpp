// Rollouts and what the models say about them: sampling responses from the actor, laying prompt and
// response out as one batch, and the per-token quantities PPO needs on it — log-probabilities and
// entropies under a causal LM, values under a critic.
//
// Layout: prompts are left-padded to P columns (as generation batches them, so every row's response
// starts in column P) and responses right-padded to R columns after them. Response token j sits in
// column P + j and is predicted from column P + j - 1, so all per-token tensors are (N, R) and aligned:
// logprobs[:, j], values[:, j] (the value of the state before token j) and response_mask[:, j].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/torch.hpp"

#include "policy/chat_format.hpp"
#include "policy/generate.hpp"
#include "policy/model.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/reward_model.hpp"
#include "rm/scorer.hpp"

namespace grm {

struct Rollout {
  torch::Tensor ids;             // (N, P + R)
  torch::Tensor mask;            // (N, P + R) 1 for real tokens
  torch::Tensor response_mask;   // (N, R) 1 for generated tokens (an EOS drawn included)
  int64_t prompt_columns = 0;    // P
  std::vector<ScoreItem> texts;  // per row: the prompt text and the response's (policy/generate.hpp
                                 // decode_continuation), for scorers
  int64_t n_response_tokens = 0;
  int64_t n_rows() const { return ids.size(0); }
  int64_t response_columns() const { return response_mask.size(1); }
};

// Samples one response per prompt row (repeat a prompt for several samples) and lays the batch out.
// prompt_texts[i] is the interchange text of prompt_ids[i] (which `format` rendered); texts carry each
// response in the interchange form and whether it finished at a stop token.
Rollout sample_rollout(CausalLM& actor, const Tokenizer& tokenizer,
                       const std::vector<std::string>& prompt_texts,
                       const std::vector<std::vector<int64_t>>& prompt_ids, const GenerateOptions& options,
                       const ChatFormat& format = ChatFormat());

// The rows `rows` (int64 indices) of a rollout's tensors; texts are not carried. -> Rollout of rows.size(0)
Rollout select_rows(const Rollout& rollout, const torch::Tensor& rows);

struct TokenScores {
  torch::Tensor logprobs;  // (N, R) log p(token j | ...) under logits / temperature
  torch::Tensor entropy;   // (N, R) entropy of position j's distribution; undefined unless asked
};
// Response-token log-probs (and entropies) under `model` at the sampling temperature, so they are the
// log-probs of the distribution the tokens were drawn from (top-k / top-p truncation aside).
TokenScores response_token_scores(CausalLM& model, const Rollout& rollout, double temperature,
                                  bool want_entropy = false);

// Values of the states before each response token: the critic's reward head applied to every position
// instead of only the last. -> (N, R)
torch::Tensor response_values(RewardModel& critic, const Rollout& rollout);

}  // namespace grm
