#include "rm/train_state.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <random>
#include <sstream>

#include "cluster/comm.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "policy/safetensors.hpp"

namespace grm {

namespace fs = std::filesystem;

torch::Device training_device(const std::string& name) {
  if (name == "cuda" || (name == "auto" && torch::cuda::is_available())) {
    if (!torch::cuda::is_available()) fail("device: cuda requested but no CUDA device is available");
    return torch::Device(torch::kCUDA, Comm::world().local_rank() % int(torch::cuda::device_count()));
  }
  return torch::kCPU;
}

torch::Dtype frozen_dtype(const torch::Device& device, const std::string& setting) {
  if (setting == "float32") return torch::kFloat32;
  if (setting == "bfloat16") return torch::kBFloat16;
  if (setting != "auto") fail("frozen_dtype must be auto, float32 or bfloat16, not \"{}\"", setting);
  return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
}

std::vector<size_t> permutation(size_t n, uint64_t seed) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t(0));
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

double scheduled_learning_rate(double peak, double warmup_ratio, int64_t step, int64_t total, bool cosine) {
  int64_t warmup = int64_t(std::ceil(warmup_ratio * double(total)));
  if (step < warmup) return peak * double(step + 1) / double(warmup);
  if (!cosine) return peak;
  double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return peak * 0.5 * (1.0 + std::cos(M_PI * std::min(1.0, progress)));
}

void set_learning_rate(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

std::map<std::string, torch::Tensor> named_parameters_with_prefix(const torch::nn::Module& module,
                                                                  const std::string& prefix) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : module.named_parameters()) out[prefix + p.key()] = p.value();
  return out;
}

torch::Tensor cpu_rng_state() {
  return at::detail::getDefaultCPUGenerator().get_state();
}

void set_cpu_rng_state(const torch::Tensor& state) {
  auto generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(state);
}

void save_checkpoint(const std::string& dir, int64_t step,
                     const std::map<std::string, torch::Tensor>& tensors, const NamedOptimizers& optimizers,
                     Comm& comm, const std::map<std::string, torch::Tensor>& rank_tensors) {
  // Each rank's own part is written first beside the checkpoint, then moved into it by rank 0, so the
  // checkpoint directory still appears complete or not at all.
  auto rank_file = [&](int rank) {
    return fs::path(dir) / fmt::format("step_{}.rank_{}.safetensors", step, rank);
  };
  if (!rank_tensors.empty()) {
    fs::create_directories(dir);
    save_safetensors(rank_file(comm.rank()).string(), rank_tensors);
  }
  comm.barrier();
  if (comm.is_root()) {
    auto step_dir = fs::path(dir) / fmt::format("step_{}", step);
    write_directory_atomic(step_dir.string(), [&](const std::string& partial) {
      save_safetensors((fs::path(partial) / "weights.safetensors").string(), tensors);
      if (!rank_tensors.empty())
        for (int r = 0; r < comm.size(); ++r)
          fs::rename(rank_file(r), fs::path(partial) / fmt::format("rank_{}.safetensors", r));
      for (const auto& [name, optimizer] : optimizers) {
        // Serialized in memory and written by write_file_atomic: torch::save to a file on a full disk
        // throws from a destructor (std::terminate) and leaves a torn file.
        std::ostringstream bytes;
        torch::serialize::OutputArchive archive;
        optimizer->save(archive);
        archive.save_to(bytes);
        write_file_atomic((fs::path(partial) / (name + ".pt")).string(), bytes.str());
      }
    });
    write_file_atomic((fs::path(dir) / "latest").string(), fmt::format("step_{}\n", step));
    for (const auto& entry : fs::directory_iterator(dir))
      if ((entry.is_directory() && entry.path().filename() != step_dir.filename()) ||
          entry.path().filename().string().find(".rank_") != std::string::npos)
        fs::remove_all(entry.path());  // older checkpoints, and rank files of a killed save
  }
  comm.barrier();
}

const torch::Tensor& LoadedCheckpoint::at(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end())
    fail("{}: checkpoint lacks '{}' (was it written by another configuration? delete {} to restart)",
         directory, name, fs::path(directory).parent_path().string());
  return it->second;
}

std::optional<LoadedCheckpoint> load_checkpoint(const std::string& dir, const NamedOptimizers& optimizers) {
  auto latest = fs::path(dir) / "latest";
  if (!fs::exists(latest)) return std::nullopt;
  std::string name = read_file(latest.string());
  name.erase(name.find_last_not_of(" \n") + 1);
  std::string digits = name.rfind("step_", 0) == 0 ? name.substr(5) : "";
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
    fail("{}: expected 'step_N', found '{}' (delete {} to restart)", latest.string(), name, dir);
  LoadedCheckpoint checkpoint;
  checkpoint.directory = (fs::path(dir) / name).string();
  checkpoint.step = std::stoll(digits);
  checkpoint.tensors = load_safetensors((fs::path(checkpoint.directory) / "weights.safetensors").string());
  for (int r = 0;; ++r) {
    auto file = fs::path(checkpoint.directory) / fmt::format("rank_{}.safetensors", r);
    if (!fs::exists(file)) break;
    checkpoint.rank_tensors.push_back(load_safetensors(file.string()));
  }
  for (const auto& [optimizer_name, optimizer] : optimizers) {
    std::string path = (fs::path(checkpoint.directory) / (optimizer_name + ".pt")).string();
    if (!fs::exists(path)) fail("{}: missing from the checkpoint (delete {} to restart)", path, dir);
    try {
      torch::load(*optimizer, path);
    } catch (const c10::Error& error) {
      std::string what = error.what_without_backtrace();
      fail(
          "{}: the optimizer state cannot be read ({}); the file is damaged or from another "
          "configuration (delete {} to restart)",
          path, what.substr(0, what.find('\n')), dir);
    }
  }
  return checkpoint;
}

void restore_parameters(torch::nn::Module& module, const LoadedCheckpoint& checkpoint,
                        const std::string& prefix) {
  torch::NoGradGuard no_grad;
  for (auto& p : module.named_parameters()) p.value().copy_(checkpoint.at(prefix + p.key()));
}

}  // namespace grm
