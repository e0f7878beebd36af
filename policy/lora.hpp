// Low-rank adapters (Hu et al., 2021) on the attention and MLP projections: W x + (alpha / rank) B A x,
// with A (rank, in) random and B (out, rank) zero, so training starts from the base model exactly. The
// settings stand apart from LibTorch so that the reward-model and PPO configs can hold them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/config.hpp"  // Range

namespace grm {

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 16;
  double dropout = 0.0;
  std::vector<std::string> targets = {"q", "k", "v", "o"};  // of q k v o gate up down
  template <class V>
  void visit(V& v) {
    v("rank", rank, Range::at_least(1));
    v("alpha", alpha, Range::positive());
    v("dropout", dropout, Range::half_open(0, 1));
    v("targets", targets);
  }
};

}  // namespace grm
