#include "cluster/sharded_adamw.hpp"

#include <cmath>

#include "cluster/comm.hpp"
#include "core/error.hpp"

namespace grm {

ShardedAdamW::Shard ShardedAdamW::shard_from_name(const std::string& name) {
  if (name == "optimizer") return Shard::optimizer;
  if (name == "gradients") return Shard::gradients;
  fail("shard must be none, optimizer or gradients, not \"{}\"", name);
}

ShardedAdamW::ShardedAdamW(std::vector<torch::Tensor> parameters, double lr, double weight_decay, Shard shard,
                           Comm& comm, double beta1, double beta2, double eps)
    : parameters_(std::move(parameters)),
      lr_(lr),
      weight_decay_(weight_decay),
      beta1_(beta1),
      beta2_(beta2),
      eps_(eps),
      shard_(shard),
      comm_(comm) {
  if (parameters_.empty()) fail("sharded AdamW: no parameters to train");
  for (const auto& p : parameters_) {
    if (p.scalar_type() != torch::kFloat32)
      fail("sharded AdamW keeps fp32 parameters (the master weights), not {}",
           c10::toString(p.scalar_type()));
    offsets_.push_back(n_);
    n_ += p.numel();
  }
  slice_ = (n_ + comm_.size() - 1) / comm_.size();
  begin_ = std::min(n_, slice_ * comm_.rank());
  end_ = std::min(n_, begin_ + slice_);
  auto options = parameters_.front().options();
  exp_avg_ = torch::zeros({slice_}, options);
  exp_avg_sq_ = torch::zeros({slice_}, options);
}

void ShardedAdamW::zero_grad() {
  for (auto& p : parameters_)
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

torch::Tensor ShardedAdamW::flat_slice(bool of_gradients) const {
  auto out = torch::zeros({slice_}, parameters_.front().options());
  for (size_t i = 0; i < parameters_.size(); ++i) {
    int64_t lo = std::max(begin_, offsets_[i]), hi = std::min(end_, offsets_[i] + parameters_[i].numel());
    if (lo >= hi) continue;
    const auto& source = of_gradients ? parameters_[i].grad() : parameters_[i];
    if (!source.defined()) continue;  // a parameter unused this step has no gradient: zeros
    out.narrow(0, lo - begin_, hi - lo)
        .copy_(source.detach().reshape(-1).narrow(0, lo - offsets_[i], hi - lo));
  }
  return out;
}

void ShardedAdamW::step(double max_grad_norm) {
  torch::NoGradGuard no_grad;
  int64_t K = comm_.size();
  torch::Tensor grad;
  if (shard_ == Shard::gradients) {
    // This rank's whole gradient, padded, reduce-scattered into its slice; the full ones are dropped.
    auto full = torch::zeros({slice_ * K}, parameters_.front().options());
    for (size_t i = 0; i < parameters_.size(); ++i)
      if (parameters_[i].grad().defined())
        full.narrow(0, offsets_[i], parameters_[i].numel()).copy_(parameters_[i].grad().reshape(-1));
    zero_grad();
    grad = torch::empty({slice_}, full.options());
    comm_.reduce_scatter_sum(full, grad);
    grad.div_(double(K));
  } else {
    grad = flat_slice(/*of_gradients=*/true);
  }
  if (max_grad_norm > 0) {
    double total = std::sqrt(comm_.all_reduce_sum(grad.pow(2).sum().item<double>()));
    double coefficient = max_grad_norm / (total + 1e-6);
    if (coefficient < 1) grad.mul_(coefficient);
  }
  // torch::optim::AdamW's update, on this rank's slice.
  auto master = flat_slice(/*of_gradients=*/false);
  if (weight_decay_ != 0) master.mul_(1 - lr_ * weight_decay_);
  ++step_;
  double bias_correction1 = 1 - std::pow(beta1_, double(step_));
  double bias_correction2 = 1 - std::pow(beta2_, double(step_));
  exp_avg_.mul_(beta1_).add_(grad, 1 - beta1_);
  exp_avg_sq_.mul_(beta2_).addcmul_(grad, grad, 1 - beta2_);
  auto denom = (exp_avg_sq_.sqrt() / std::sqrt(bias_correction2)).add_(eps_);
  master.addcdiv_(exp_avg_, denom, -lr_ / bias_correction1);
  // Every rank's updated slice into every rank's parameters.
  auto full = torch::empty({slice_ * K}, master.options());
  comm_.all_gather(master, full);
  for (size_t i = 0; i < parameters_.size(); ++i)
    parameters_[i].view(-1).copy_(full.narrow(0, offsets_[i], parameters_[i].numel()));
}

int64_t ShardedAdamW::state_bytes() const {
  return (exp_avg_.numel() + exp_avg_sq_.numel()) * int64_t(exp_avg_.element_size());
}

std::map<std::string, torch::Tensor> ShardedAdamW::state_slice() const {
  int64_t width = end_ - begin_;
  return {{"begin", torch::tensor({begin_}, torch::kInt64)},
          {"end", torch::tensor({end_}, torch::kInt64)},
          {"exp_avg", exp_avg_.narrow(0, 0, width).to(torch::kCPU).clone()},
          {"exp_avg_sq", exp_avg_sq_.narrow(0, 0, width).to(torch::kCPU).clone()},
          {"step", torch::tensor({step_}, torch::kInt64)}};
}

void ShardedAdamW::load_slices(const std::vector<std::map<std::string, torch::Tensor>>& slices,
                               const std::string& source) {
  auto full_m = torch::zeros({n_}, torch::kFloat32), full_v = torch::zeros({n_}, torch::kFloat32);
  auto covered = torch::zeros({n_}, torch::kInt32);
  int64_t step = -1;
  for (const auto& slice : slices) {
    auto get = [&](const char* key) -> const torch::Tensor& {
      auto it = slice.find(key);
      if (it == slice.end())
        fail("{}: a slice of the sharded optimizer lacks '{}'; delete the checkpoint folder", source, key);
      return it->second;
    };
    int64_t begin = get("begin").item<int64_t>(), end = get("end").item<int64_t>();
    if (begin < 0 || end > n_ || begin > end || get("exp_avg").numel() != end - begin ||
        get("exp_avg_sq").numel() != end - begin)
      fail(
          "{}: an optimizer slice [{}, {}) does not fit these {} parameter values (another model or "
          "configuration?); delete the checkpoint folder to restart",
          source, begin, end, n_);
    full_m.narrow(0, begin, end - begin).copy_(get("exp_avg").reshape(-1));
    full_v.narrow(0, begin, end - begin).copy_(get("exp_avg_sq").reshape(-1));
    covered.narrow(0, begin, end - begin).add_(1);
    int64_t slice_step = get("step").item<int64_t>();
    if (step >= 0 && slice_step != step) fail("{}: optimizer slices of different steps", source);
    step = slice_step;
  }
  if (n_ > 0 && (covered.min().item<int>() != 1 || covered.max().item<int>() != 1))
    fail(
        "{}: the optimizer slices do not cover the {} parameter values exactly once; delete the checkpoint "
        "folder to restart",
        source, n_);
  torch::NoGradGuard no_grad;
  int64_t width = end_ - begin_;
  exp_avg_.zero_();
  exp_avg_sq_.zero_();
  exp_avg_.narrow(0, 0, width).copy_(full_m.narrow(0, begin_, width));
  exp_avg_sq_.narrow(0, 0, width).copy_(full_v.narrow(0, begin_, width));
  step_ = std::max<int64_t>(0, step);
}

}  // namespace grm
