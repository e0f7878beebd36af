// The sampler chain's settings (policy/sampler.hpp), apart from LibTorch so that configs can hold them.
#pragma once

#include <cstdint>

#include "core/config.hpp"  // Range

namespace grm {

struct SamplingOptions {
  double temperature = 1.0;  // 0 means greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  // Binds the keys temperature, top_k and top_p at the level of the config that holds these settings.
  template <class V>
  void visit_keys(V& v) {
    v("temperature", temperature, Range::at_least(0));
    v("top_k", top_k, Range::at_least(0));
    v("top_p", top_p, Range::open_closed(0, 1));
  }
};

}  // namespace grm
