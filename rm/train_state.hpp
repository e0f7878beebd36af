// What the training loops (rm/train_rm.cpp, ppo/ppo.cpp) share: the device a rank trains on, seeded
// permutations, the learning-rate schedule, and resumable checkpoints. A checkpoint is
// DIR/step_N/{weights.safetensors, <optimizer name>.pt} plus DIR/latest naming the newest step folder;
// `latest` is replaced atomically and only after the folder is complete, so a run killed while writing
// resumes from the previous checkpoint. Named tensors carry everything else a loop must restore exactly
// (parameters, the CPU generator's state, small scalars such as a KL coefficient).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/torch.hpp"

namespace grm {

class Comm;

// "auto" | "cpu" | "cuda"; on CUDA each local rank takes its own GPU.
torch::Device training_device(const std::string& name);

// The dtype frozen weights are stored in (DPO's and PPO's references, scorers' models): "auto" is bf16 on
// a GPU (half the memory; the references' passes run in bf16 under autocast there anyway, so storing
// them so rounds nothing more) and fp32 on the CPU, where bf16 matmuls are slow; "float32" or "bfloat16"
// choose one anywhere.
torch::Dtype frozen_dtype(const torch::Device& device, const std::string& setting);

// A seeded shuffle of 0..n-1, the same on every rank and machine.
std::vector<size_t> permutation(size_t n, uint64_t seed);

// Linear warm-up over ceil(warmup_ratio * total) steps to `peak`, then cosine decay to 0 at `total`
// (or `peak` held when cosine is false).
double scheduled_learning_rate(double peak, double warmup_ratio, int64_t step, int64_t total,
                               bool cosine = true);
// Sets the learning rate of every parameter group of an AdamW optimizer.
void set_learning_rate(torch::optim::AdamW& optimizer, double lr);

using NamedOptimizers = std::vector<std::pair<std::string, torch::optim::Optimizer*>>;

// Parameters of `module` under `prefix` + their names (the tensors themselves, not copies).
std::map<std::string, torch::Tensor> named_parameters_with_prefix(const torch::nn::Module& module,
                                                                  const std::string& prefix);
torch::Tensor cpu_rng_state();
void set_cpu_rng_state(const torch::Tensor& state);

// Rank 0 writes checkpoint `step` into dir and removes older ones; every rank waits for it.
// rank_tensors: what only this rank holds (a sharded optimizer's slice), written by each rank as
// rank_R.safetensors of the same checkpoint.
void save_checkpoint(const std::string& dir, int64_t step,
                     const std::map<std::string, torch::Tensor>& tensors, const NamedOptimizers& optimizers,
                     Comm& comm, const std::map<std::string, torch::Tensor>& rank_tensors = {});

struct LoadedCheckpoint {
  int64_t step = 0;
  std::string directory;  // DIR/step_N, for messages
  std::map<std::string, torch::Tensor> tensors;
  // Every rank_R.safetensors of the checkpoint in rank order (written by however many ranks wrote it).
  std::vector<std::map<std::string, torch::Tensor>> rank_tensors;
  // The tensor `name`, or an error naming the checkpoint and what to do.
  const torch::Tensor& at(const std::string& name) const;
};

// The newest checkpoint in dir with the optimizers' states loaded, or nothing when there is none yet.
std::optional<LoadedCheckpoint> load_checkpoint(const std::string& dir, const NamedOptimizers& optimizers);
// Copies checkpoint tensors prefix + name into every parameter of module.
void restore_parameters(torch::nn::Module& module, const LoadedCheckpoint& checkpoint,
                        const std::string& prefix);

}  // namespace grm
