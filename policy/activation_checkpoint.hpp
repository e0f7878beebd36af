// Activation checkpointing (gradient checkpointing): a block of the network run without keeping its
// activations for the backward pass, which runs the block again to get them. Memory for activations
// drops from every layer's to one layer's at a time (plus each block's input), for about one more
// forward pass of compute. The recomputation sees the random state the first run saw, so dropout
// (LoRA's) draws the same mask and the gradients equal those of the plain run.
#pragma once

#include <functional>

#include "core/torch.hpp"

namespace grm {

// y = block(x), with block's activations freed after the forward pass and recomputed in the backward
// pass. block may read other tensors (masks, positions) and parameters: those it captures must stay
// alive until backward (capture tensors by value). Parameters' gradients accumulate into their .grad
// during the recomputation's backward. x: any shape; y: the block's output.
torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> block, const torch::Tensor& x);

}  // namespace grm
