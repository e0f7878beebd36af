#include "rm/losses.hpp"

namespace grm {

namespace F = torch::nn::functional;

torch::Tensor bt_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected) {
  return -F::logsigmoid(r_chosen - r_rejected).mean();
}

torch::Tensor margin_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                          const torch::Tensor& margin) {
  return -F::logsigmoid(r_chosen - r_rejected - margin.to(r_chosen.scalar_type())).mean();
}

torch::Tensor label_smooth_loss(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected,
                                double epsilon) {
  auto d = r_chosen - r_rejected;
  return (-(1 - epsilon) * F::logsigmoid(d) - epsilon * F::logsigmoid(-d)).mean();
}

torch::Tensor sft_reg(const torch::Tensor& logp_chosen, double beta) {
  return -F::logsigmoid(beta * logp_chosen).mean();
}

torch::Tensor sft_nll_reg(const torch::Tensor& logp_chosen) {
  return -logp_chosen.mean();
}

torch::Tensor sft_nll_per_token_reg(const torch::Tensor& logp_chosen, const torch::Tensor& token_count) {
  return (-logp_chosen / token_count.to(logp_chosen.scalar_type()).clamp_min(1)).mean();
}

torch::Tensor dpo_noref_reg(const torch::Tensor& logp_chosen, const torch::Tensor& logp_rejected,
                            double beta) {
  return -F::logsigmoid(beta * (logp_chosen - logp_rejected)).mean();
}

torch::Tensor dpo_reg(const torch::Tensor& logp_chosen, const torch::Tensor& logp_rejected,
                      const torch::Tensor& ref_logp_chosen, const torch::Tensor& ref_logp_rejected,
                      double beta) {
  return -F::logsigmoid(beta * ((logp_chosen - ref_logp_chosen) - (logp_rejected - ref_logp_rejected)))
              .mean();
}

torch::Tensor grm_loss(const torch::Tensor& reward_loss, const torch::Tensor& reg_loss, double alpha) {
  return (1 - alpha) * reward_loss + alpha * reg_loss;
}

torch::Tensor batch_sum_penalty(const torch::Tensor& rewards, double lambda) {
  double pairs = double(rewards.size(0)) / 2;
  return lambda * pairs * rewards.mean().pow(2);
}

torch::Tensor eurus_penalty(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected) {
  return (-F::logsigmoid(r_chosen) - F::logsigmoid(-r_rejected)).mean();
}

torch::Tensor centering_penalty(const torch::Tensor& r_chosen, const torch::Tensor& r_rejected, double coef) {
  return coef * (r_chosen + r_rejected).pow(2).mean();
}

torch::Tensor gaussian_kl(const torch::Tensor& mu, const torch::Tensor& logvar) {
  return (0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)).mean();
}

torch::Tensor pearson(const torch::Tensor& x, const torch::Tensor& y) {
  auto dx = x - x.mean(), dy = y.to(x.scalar_type()) - y.to(x.scalar_type()).mean();
  // The epsilons make a constant column give 0 (its covariance is 0 too) with a finite gradient, not 0/0.
  return (dx * dy).sum() / ((dx.pow(2).sum() + 1e-12).sqrt() * (dy.pow(2).sum() + 1e-12).sqrt());
}

torch::Tensor odin_length_penalty(const torch::Tensor& r_quality, const torch::Tensor& r_length,
                                  const torch::Tensor& length) {
  return pearson(r_quality, length).abs() - pearson(r_length, length);
}

torch::Tensor orthogonality_penalty(const torch::Tensor& quality_projection,
                                    const torch::Tensor& length_weight) {
  return quality_projection.matmul(length_weight.reshape({-1})).abs().mean();
}

}  // namespace grm
