// The few LibTorch APIs that differ between Debian's LibTorch 1.13 (CPU) and pip torch 2.x (CUDA) sit
// here, behind TORCH_VERSION_MAJOR, so the rest of the code base is written once.
#pragma once

#include <torch/torch.h>
#include <torch/version.h>

namespace grm::compat {

constexpr bool kTorch2 = TORCH_VERSION_MAJOR >= 2;

// Fused scaled-dot-product attention exists from torch 2.0; 1.13 gets the explicit softmax(QK^T)V.
// q: (B, H, T, Dh), k/v: (B, H, S, Dh), additive_mask: (B, 1, T, S) with 0 or -inf  ->  (B, H, T, Dh)
inline torch::Tensor attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& additive_mask, double scale) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, additive_mask, 0.0, false, scale);
#else
  auto scores = torch::matmul(q, k.transpose(-2, -1)) * scale + additive_mask;
  return torch::matmul(torch::softmax(scores, -1), v);
#endif
}

inline bool cuda_available() { return torch::cuda::is_available(); }

}  // namespace grm::compat
