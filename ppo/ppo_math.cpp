#include "ppo/ppo_math.hpp"

#include <algorithm>

namespace grm {

torch::Tensor kl_k1(const torch::Tensor& logp, const torch::Tensor& ref_logp) {
  return logp - ref_logp;
}

torch::Tensor kl_k3(const torch::Tensor& logp, const torch::Tensor& ref_logp) {
  auto r = ref_logp - logp;
  return torch::exp(r) - 1 - r;
}

torch::Tensor shaped_rewards(const torch::Tensor& kl, const torch::Tensor& score, const torch::Tensor& mask,
                             double kl_coef) {
  auto rewards = -kl_coef * kl * mask;
  // The last response token of each row: index of the last 1 in the mask.
  auto positions = torch::arange(mask.size(1), mask.options().dtype(torch::kInt64)).unsqueeze(0);
  auto last = (positions * mask.to(torch::kInt64)).argmax(1, true);  // (B, 1)
  return rewards.scatter_add(1, last, score.unsqueeze(1).to(rewards.scalar_type()));
}

Advantages gae(const torch::Tensor& rewards, const torch::Tensor& values, const torch::Tensor& mask,
               double gamma, double lambda) {
  int64_t T = rewards.size(1);
  auto m = mask.to(rewards.scalar_type());
  auto advantages = torch::zeros_like(rewards);
  auto running = torch::zeros({rewards.size(0)}, rewards.options());
  auto next_value = torch::zeros_like(running);
  for (int64_t t = T - 1; t >= 0; --t) {
    auto mt = m.select(1, t);
    auto delta = rewards.select(1, t) + gamma * next_value - values.select(1, t);
    running = (delta + gamma * lambda * running) * mt;
    advantages.select(1, t).copy_(running);
    // Past the response end the next value is zero; inside it, the value of the following token.
    next_value = values.select(1, t) * mt;
  }
  return {advantages, advantages + values * m};
}

torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& mask) {
  auto m = mask.to(x.scalar_type());
  return (x * m).sum() / m.sum().clamp_min(1);
}

torch::Tensor masked_moments(const torch::Tensor& x, const torch::Tensor& mask) {
  auto m = mask.to(torch::kFloat64);
  auto x64 = x.to(torch::kFloat64) * m;
  return torch::stack({m.sum(), x64.sum(), (x64 * x64).sum()});
}

torch::Tensor whiten(const torch::Tensor& x, const torch::Tensor& mask, const torch::Tensor& moments) {
  auto count = moments[0].clamp_min(1);
  auto mean = moments[1] / count;
  // E[x^2] - E[x]^2 in float64; clamped because rounding can take it just below zero.
  auto variance = (moments[2] / count - mean * mean).clamp_min(0);
  auto scale = torch::rsqrt(variance + 1e-8);
  return ((x - mean.to(x.scalar_type())) * scale.to(x.scalar_type())) * mask.to(x.scalar_type());
}

torch::Tensor whiten(const torch::Tensor& x, const torch::Tensor& mask) {
  return whiten(x, mask, masked_moments(x, mask));
}

torch::Tensor clipped_policy_loss(const torch::Tensor& logp, const torch::Tensor& old_logp,
                                  const torch::Tensor& advantages, const torch::Tensor& mask, double clip) {
  auto ratio = torch::exp(logp - old_logp);
  auto unclipped = ratio * advantages;
  auto clipped = ratio.clamp(1 - clip, 1 + clip) * advantages;
  return masked_mean(-torch::min(unclipped, clipped), mask);
}

torch::Tensor clipped_value_loss(const torch::Tensor& values, const torch::Tensor& old_values,
                                 const torch::Tensor& returns, const torch::Tensor& mask, double clip) {
  auto clipped = old_values + (values - old_values).clamp(-clip, clip);
  return 0.5 * masked_mean(torch::max((values - returns).pow(2), (clipped - returns).pow(2)), mask);
}

void RunningMoments::add(double batch_count, double batch_sum, double batch_sum_squares) {
  if (batch_count <= 0) return;
  double batch_mean = batch_sum / batch_count;
  double batch_m2 = std::max(0.0, batch_sum_squares - batch_count * batch_mean * batch_mean);
  double total = count + batch_count, delta = batch_mean - mean;
  mean += delta * batch_count / total;
  m2 += batch_m2 + delta * delta * count * batch_count / total;
  count = total;
}

void KlController::update(double measured_kl, int64_t n_samples) {
  if (target_ <= 0) return;
  double error = std::clamp(measured_kl / target_ - 1.0, -0.2, 0.2);
  coef_ *= 1.0 + error * double(n_samples) / horizon_;
}

}  // namespace grm
