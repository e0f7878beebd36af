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

}  // namespace grm
