// AdamW sharded over data-parallel ranks: ZeRO stages 1 and 2 (Rajbhandari et al., 2020).
//
// Layout. The parameters, laid end to end, form one flat vector of n elements, padded with zeros to
// K * S elements (K ranks, S = ceil(n / K)); rank r owns the slice [r * S, (r + 1) * S) and keeps AdamW's
// moments (m, v) for that slice only: 2 * S floats per rank instead of 2 * n.
//
// step(max_grad_norm), after backward:
//   shard = optimizer (ZeRO-1)  the gradients were averaged over ranks already (GradientAllReducer); each
//                               rank reads its slice of them.
//   shard = gradients (ZeRO-2)  each rank's own gradients are reduce-scattered: a rank receives only its
//                               slice, summed over ranks and divided by K (half the traffic of an
//                               all-reduce), and the parameters' full gradients are dropped.
//   then the global norm sqrt(sum over ranks of |slice|^2) clips as clip_grad_norm_ does (coefficient
//   max / (norm + 1e-6) when below 1), the slice is updated exactly as torch::optim::AdamW updates it
//   (decoupled weight decay, bias-corrected moments), and the updated slices are all-gathered into every
//   rank's parameters, which stay whole and equal on every rank.
//
// Checkpoints hold each rank's slice with its offset (state_slice), so a run resumes on any number of
// ranks: load_slices reassembles the moments from every slice and each rank takes its own.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/torch.hpp"

namespace grm {

class Comm;

class ShardedAdamW {
 public:
  enum class Shard { optimizer, gradients };
  // Throws grm::Error for a shard name other than optimizer or gradients.
  static Shard shard_from_name(const std::string& name);

  ShardedAdamW(std::vector<torch::Tensor> parameters, double lr, double weight_decay, Shard shard, Comm& comm,
               double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8);
  void set_lr(double lr) { lr_ = lr; }
  void zero_grad();
  void step(double max_grad_norm);

  // Bytes of optimizer state this rank keeps (its slice's two moments).
  int64_t state_bytes() const;
  // This rank's slice: "begin" and "end" (int64 offsets into the unpadded flat vector), "exp_avg",
  // "exp_avg_sq" (float32, end - begin elements) and "step" (int64).
  std::map<std::string, torch::Tensor> state_slice() const;
  // Every rank's state_slice of a checkpoint, written by any number of ranks. Throws grm::Error naming
  // `source` when they do not cover the flat vector of these parameters exactly once.
  void load_slices(const std::vector<std::map<std::string, torch::Tensor>>& slices,
                   const std::string& source);

 private:
  torch::Tensor flat_slice(bool of_gradients) const;  // [begin, end) of the parameters or their .grad
  std::vector<torch::Tensor> parameters_;
  std::vector<int64_t> offsets_;  // parameters_[i] starts at offsets_[i] of the flat vector
  int64_t n_ = 0, slice_ = 0, begin_ = 0, end_ = 0;
  double lr_, weight_decay_, beta1_, beta2_, eps_;
  Shard shard_;
  Comm& comm_;
  torch::Tensor exp_avg_, exp_avg_sq_;  // (slice_), fp32, on the parameters' device
  int64_t step_ = 0;
};

}  // namespace grm
