// The sampler chain shared by generation, Best-of-N and PPO rollouts: temperature -> top-k -> top-p ->
// draw with a seeded generator (or greedy argmax). Each step is a small function on logits, tested on
// distributions worked out by hand.
#pragma once

#include <cstdint>

#include "core/torch.hpp"
#include "policy/sampling_options.hpp"

namespace grm {

torch::Tensor apply_temperature(const torch::Tensor& logits, double temperature);  // (B, V) -> (B, V)
torch::Tensor apply_top_k(const torch::Tensor& logits, int64_t top_k);             // masks all but the k best
torch::Tensor apply_top_p(const torch::Tensor& logits, double top_p);  // keeps the smallest nucleus >= top_p

// The processed logits, whose softmax is the distribution tokens are drawn from. (B, V) -> (B, V)
torch::Tensor process_logits(const torch::Tensor& logits, const SamplingOptions& options);
// Draws one token per row. logits (B, V) -> (B) int64
torch::Tensor sample_tokens(const torch::Tensor& logits, const SamplingOptions& options,
                            at::Generator& generator);

at::Generator make_generator(uint64_t seed, const torch::Device& device = torch::kCPU);

}  // namespace grm
