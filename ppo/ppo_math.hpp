// The arithmetic of PPO as small pure functions on tensors, each checked against hand-worked values:
// KL estimators, the KL-shaped per-token reward, GAE, the clipped policy and value losses, and the
// adaptive KL controller of Ziegler et al. (2019).
#pragma once

#include <cmath>

#include "core/torch.hpp"

namespace grm {

// Per-token KL estimates from log-probs under the policy and the reference, (B, T) -> (B, T):
// k1 = logp - logp_ref (unbiased, can be negative); k3 = exp(r) - 1 - r with r = logp_ref - logp (>= 0).
torch::Tensor kl_k1(const torch::Tensor& logp, const torch::Tensor& ref_logp);
torch::Tensor kl_k3(const torch::Tensor& logp, const torch::Tensor& ref_logp);

// r_t = -kl_coef * kl_t on every response token, plus the scalar score on the last one.
// kl, mask (B, T); score (B) -> (B, T)
torch::Tensor shaped_rewards(const torch::Tensor& kl, const torch::Tensor& score, const torch::Tensor& mask,
                             double kl_coef);

struct Advantages {
  torch::Tensor advantages;  // (B, T)
  torch::Tensor returns;     // (B, T) = advantages + values
};
// Generalized advantage estimation over response tokens (mask 1); steps past the mask contribute nothing.
Advantages gae(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask,
               double gamma, double lambda);

// Masked mean over all entries where mask is 1. x, mask (B, T) -> ()
torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask);
// {count, sum, sum of squares} of x over the mask, float64, so data-parallel ranks can add theirs
// before whitening. x, mask (B, T) -> (3)
torch::Tensor masked_moments(const torch::Tensor& x, const torch::Tensor& mask);
// x normalised to mean 0, std 1 with the mean and (population) variance of `moments`; 0 off the mask.
// x, mask (B, T), moments (3) -> (B, T)
torch::Tensor whiten(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& moments);
torch::Tensor whiten(const torch::Tensor& x, const torch::Tensor& mask);  // with x's own moments

// -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A), masked mean; ratio = exp(logp - old_logp).
torch::Tensor clipped_policy_loss(const torch::Tensor& logp, const torch::Tensor& old_logp,
                                  const torch::Tensor& advantages, const torch::Tensor& mask, double clip);
// 0.5 * max((v - R)^2, (clip(v, v_old - eps, v_old + eps) - R)^2), masked mean.
torch::Tensor clipped_value_loss(const torch::Tensor& values, const torch::Tensor& old_values,
                                 const torch::Tensor& returns, const torch::Tensor& mask, double clip);

// Running mean and variance of everything added so far, merged batch by batch from (count, sum, sum of
// squares) (Chan et al., 1979), for reward normalisation.
struct RunningMoments {
  double count = 0, mean = 0, m2 = 0;  // m2: sum of squared deviations from the mean
  void add(double batch_count, double batch_sum, double batch_sum_squares);
  double std() const { return count > 0 ? std::sqrt(m2 / count) : 1.0; }
};

// Fixed (target <= 0) or adaptive KL coefficient: coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon.
class KlController {
 public:
  KlController(double initial, double target, double horizon)
      : coef_(initial), target_(target), horizon_(horizon) {}
  double coef() const { return coef_; }
  void update(double measured_kl, int64_t n_samples);

 private:
  double coef_, target_, horizon_;
};

}  // namespace grm
