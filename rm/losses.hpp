// Reward-model losses as small pure functions of tensors. r_c, r_r: (B) rewards of the chosen and
// rejected responses; logp_*: (B) sums of response-token log-probs log pi(y|x) (prompt and padding masked,
// see policy/model.hpp response_logprobs). Each returns a scalar mean over the batch.
#pragma once

#include "core/torch.hpp"

namespace grm {

// Bradley-Terry: -log sigmoid(r_c - r_r)
torch::Tensor bt_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected);
// -log sigmoid(r_c - r_r - m), margins (B) from the data
torch::Tensor margin_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                          const torch::Tensor& margin);
// -(1 - eps) log sigmoid(r_c - r_r) - eps log sigmoid(r_r - r_c)
torch::Tensor label_smooth_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                                double epsilon);

// GRM regularizers on the LM head (Yang et al., 2024):
// sft: -log sigmoid(beta * log pi(y_c|x)), as the authors' code
torch::Tensor sft_reg(const torch::Tensor& logp_chosen, double beta);
// sft_nll: -mean over the batch of log pi(y_c|x) summed over the response's tokens, as the reference's
// no_logsigmoid_sft
torch::Tensor sft_nll_reg(const torch::Tensor& logp_chosen);
// sft_nll_per_token: the same per response token (each sum divided by its token_count (B)), so long and
// short responses weigh alike
torch::Tensor sft_nll_per_token_reg(const torch::Tensor& logp_chosen, const torch::Tensor& token_count);
// dpo_noref: -log sigmoid(beta * (log pi(y_c|x) - log pi(y_r|x)))
torch::Tensor dpo_noref_reg(const torch::Tensor& logp_chosen, const torch::Tensor& logp_rejected,
                            double beta);
// dpo: the same with the frozen reference model's log-ratio subtracted
torch::Tensor dpo_reg(const torch::Tensor& logp_chosen, const torch::Tensor& logp_rejected,
                      const torch::Tensor& ref_logp_chosen, const torch::Tensor& ref_logp_rejected,
                      double beta);

// (1 - alpha) * reward_loss + alpha * reg_loss
torch::Tensor grm_loss(const torch::Tensor& reward_loss, const torch::Tensor& reg_loss, double alpha);

}  // namespace grm
