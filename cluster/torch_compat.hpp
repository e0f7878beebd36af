// The few LibTorch APIs that differ between Debian's LibTorch 1.13 (CPU) and pip torch 2.x (CUDA) sit
// here, behind TORCH_VERSION_MAJOR, so the rest of the code base is written once.
#pragma once

#include <ATen/autocast_mode.h>

#include "cluster/torch.hpp"

#define GRM_TORCH_AT_LEAST_2_4 \
  (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))

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

inline bool cuda_available() {
  return torch::cuda::is_available();
}

// bf16 autocast for CUDA forward passes while alive (no-op when disabled, and on CPU-only builds where
// nothing runs on CUDA). The dtype setter was renamed in torch 2.4.
class CudaBf16Autocast {
 public:
  explicit CudaBf16Autocast(bool enabled) : enabled_(enabled) {
    if (!enabled_) return;
#if GRM_TORCH_AT_LEAST_2_4
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(true);
#endif
  }
  ~CudaBf16Autocast() {
    if (!enabled_) return;
#if GRM_TORCH_AT_LEAST_2_4
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }
  CudaBf16Autocast(const CudaBf16Autocast&) = delete;
  CudaBf16Autocast& operator=(const CudaBf16Autocast&) = delete;

 private:
  bool enabled_;
};

}  // namespace grm::compat
