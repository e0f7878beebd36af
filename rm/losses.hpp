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

// Regularizers of the methods published since GRM, each added to the Bradley-Terry loss (README,
// "Reward-model methods"). r (2B): the chosen and rejected rewards of a batch of B pairs, together.
// BSR (Hong et al., ICML 2025): lambda * B * mean(r)^2, the batch's rewards pulled to sum to zero
torch::Tensor batch_sum_penalty(const torch::Tensor& rewards, double lambda);
// Eurus (Yuan et al., 2024): -log sigmoid(r_c) - log sigmoid(-r_r), chosen above 0 and rejected below
torch::Tensor eurus_penalty(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected);
// TRL's reward centering: coef * mean((r_c + r_r)^2)
torch::Tensor centering_penalty(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected, double coef);
// InfoRM (Miao et al., NeurIPS 2024): KL(N(mu, exp(logvar)) || N(0, I)) per row, mean over rows:
// 0.5 * sum_j (mu_j^2 + exp(logvar_j) - logvar_j - 1). mu, logvar (N, d) -> ()
torch::Tensor gaussian_kl(const torch::Tensor& mu, const torch::Tensor& logvar);
// Pearson correlation of x and y (N) -> (); 0 when either is constant.
torch::Tensor pearson(const torch::Tensor& x, const torch::Tensor& y);
// ODIN (Chen et al., ICML 2024): |rho(r_quality, length)| - rho(r_length, length), the quality head
// decorrelated from response length and the length head made to carry it. All (N).
torch::Tensor odin_length_penalty(const torch::Tensor& r_quality, const torch::Tensor& r_length,
                                  const torch::Tensor& length);
// ODIN's orthogonal heads: mean |W_q w_l|, W_q (h, D) the quality head's input projection (h = 1 for a
// linear head: |w_q . w_l|, the paper's), w_l (1, D) the length head.
torch::Tensor orthogonality_penalty(const torch::Tensor& quality_projection,
                                    const torch::Tensor& length_weight);

}  // namespace grm
