#include "policy/sampler.hpp"

#include <limits>

namespace grm {
namespace {
constexpr float kMasked = -std::numeric_limits<float>::infinity();
}

torch::Tensor apply_temperature(const torch::Tensor& logits, double temperature) {
  if (temperature <= 0 || temperature == 1.0) return logits;
  return logits / temperature;
}

torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t top_k) {
  if (top_k <= 0 || top_k >= logits.size(-1)) return logits;
  auto kth = std::get<0>(logits.topk(top_k, -1)).narrow(-1, top_k - 1, 1);  // (B, 1)
  return logits.masked_fill(logits < kth, kMasked);
}

torch::Tensor apply_top_p(const torch::Tensor& logits, double top_p) {
  if (top_p >= 1.0) return logits;
  auto [sorted, order] = logits.sort(-1, /*descending=*/true);
  auto cumulative = torch::softmax(sorted.to(torch::kFloat32), -1).cumsum(-1);
  // A token is dropped when the tokens ranked before it already reach top_p; the best always stays.
  auto drop_sorted = (cumulative - torch::softmax(sorted.to(torch::kFloat32), -1)) >= top_p;
  auto drop = torch::zeros_like(drop_sorted).scatter(-1, order, drop_sorted);
  return logits.masked_fill(drop, kMasked);
}

torch::Tensor process_logits(const torch::Tensor& logits, const SamplingOptions& options) {
  auto out = apply_temperature(logits.to(torch::kFloat32), options.temperature);
  out = apply_top_k(out, options.top_k);
  return apply_top_p(out, options.top_p);
}

torch::Tensor sample_tokens(const torch::Tensor& logits, const SamplingOptions& options,
                            at::Generator& generator) {
  if (options.temperature <= 0) return logits.argmax(-1);
  auto probs = torch::softmax(process_logits(logits, options), -1);
  return at::multinomial(probs, 1, false, generator).squeeze(-1);
}

at::Generator make_generator(uint64_t seed, const torch::Device& device) {
  // A private copy of the device's default generator type, so seeding it touches no global state.
  at::Generator generator = device.is_cuda() ? at::globalContext().defaultGenerator(device).clone()
                                             : at::detail::createCPUGenerator(seed);
  generator.set_current_seed(seed);
  return generator;
}

}  // namespace grm
