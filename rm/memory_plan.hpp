// A memory plan for reward-model training: what one rank holds at its peak, from the model's
// config.json and the stage's config alone, before anything loads (`grm plan`).
//
// Per rank, in bytes (P: the backbone's parameters and the head's, P_t: those that train — all of them,
// or LoRA's adapters and the head; K ranks; e = 2 for activations under bf16 autocast on a GPU, else 4):
//   weights      4 P (fp32 master weights; a LoRA base is fp32 too), plus DPO's reference in
//                frozen_dtype (2 or 4 bytes per backbone parameter)
//   gradients    4 P_t in .grad, plus 4 P_t of all-reduce buckets (none under shard: gradients, which
//                reduce-scatters from a flat copy of 4 P_t instead: the same peak)
//   optimizer    AdamW's two moments, 8 P_t, divided by K under shard: optimizer | gradients
//   activations  what backward keeps of one micro-batch of 2B sequences (chosen and rejected) of T
//                tokens. Per layer and token: a = e (10 D + 3 D_kv + 4 F) + H T (4, or 6 under autocast)
//                bytes — the norms' and projections' outputs, the MLP's four F-wide tensors, the fp32
//                attention probabilities (and their bf16 copy); L + 1 layers' worth at the peak (the layer
//                whose backward runs holds their gradients too). With gradient_checkpointing every layer
//                keeps only its input (e D), and the layer being recomputed 2a. GRM's regularizer adds its
//                log-probs: the logits and their fp32 log-softmax and a gradient of each, 2 (e + 4) V per
//                token, or under logprob_chunk (V above it) one chunk's 2 * 4 * chunk per token.
//   kv cache     none in training (BoN and PPO decode with one: 2 L B H_kv D_h capacity e)
// The total is compared with the device's memory (less 8% for the framework and fragmentation), and
// when it does not fit the plan names the settings that shrink the largest terms. The model is checked
// against measured peaks in the README ("Memory"): on the CPU, against peak RSS above a minimal run's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "policy/model_config.hpp"
#include "rm/train_rm.hpp"

namespace grm {

struct MemoryTerm {
  std::string name;  // weights, gradients, optimizer, activations, kv cache
  double bytes = 0;
  std::string detail;  // how it was counted
};

struct MemoryPlan {
  std::vector<MemoryTerm> terms;
  double total = 0, capacity = 0;  // bytes; capacity 0: unknown device
  bool fits = true;
  std::vector<std::string> advice;  // settings to change when it does not fit, largest saving first
};

// Known devices' memory in bytes: h100-80gb, h200-141gb, a100-80gb, a100-40gb, l40s-48gb, rtx4090-24gb,
// cpu-24gb (this project's laptop-class machine). Throws grm::Error listing them for another name.
double device_memory_bytes(const std::string& device);

// The plan for `config` on `ranks` data-parallel ranks of `device` ("cpu" plans fp32 activations).
MemoryPlan plan_train_rm(const TrainRmConfig& config, const ModelConfig& model, int64_t ranks,
                         const std::string& device);

// The plan as an aligned table with the advice, for the terminal and the README.
std::string format_memory_plan(const MemoryPlan& plan, const std::string& title);

}  // namespace grm
