// The few LibTorch APIs that differ between Debian's LibTorch 1.13 (CPU) and pip torch 2.x (CUDA) sit
// here, behind TORCH_VERSION_MAJOR, so the rest of the code base is written once.
#pragma once

#include <ATen/autocast_mode.h>

#include "core/torch.hpp"

#define GRM_TORCH_AT_LEAST_2_4 \
  (TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4))

namespace grm::compat {

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
