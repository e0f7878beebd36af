#include "rm/memory_plan.hpp"

#include <algorithm>
#include <cmath>
#include <map>

#include "core/error.hpp"

namespace grm {
namespace {

constexpr double kGiB = double(1 << 30);

struct Shapes {
  double D, L, H, Hkv, Dh, F, V;
};

Shapes shapes_of(const ModelConfig& m) {
  return {double(m.n_embd),   double(m.n_layer), double(m.n_head), double(m.n_kv_head),
          double(m.head_dim), double(m.n_ff),    double(m.n_vocab)};
}

double backbone_parameters(const ModelConfig& m) {
  auto s = shapes_of(m);
  double q = s.D * s.H * s.Dh, kv = 2 * s.D * s.Hkv * s.Dh, o = s.H * s.Dh * s.D, mlp = 3 * s.D * s.F;
  double per_layer = q + kv + o + mlp + 2 * s.D;
  if (m.qkv_bias) per_layer += s.H * s.Dh + 2 * s.Hkv * s.Dh;
  double embeddings = s.V * s.D * (m.tie_embeddings ? 1 : 2);
  return s.L * per_layer + s.D + embeddings;
}

double head_parameters(const RmConfig& rm, double D) {
  double in = rm.method == "inform" ? double(rm.inform.latent) : D;
  double bottleneck = rm.method == "inform" ? D * 2 * in + 2 * in : 0;
  double h = double(rm.head_hidden);
  if (rm.head == "linear") return bottleneck + in + 1;
  if (rm.head == "mlp") return bottleneck + in * h + h + h + 1;
  return bottleneck + in * h + h + h * h + h + h + 1;  // mlp2
}

double lora_parameters(const ModelConfig& m, const LoraConfig& lora) {
  auto s = shapes_of(m);
  std::map<std::string, std::pair<double, double>> shape = {
      // in, out
      {"q", {s.D, s.H * s.Dh}}, {"k", {s.D, s.Hkv * s.Dh}}, {"v", {s.D, s.Hkv * s.Dh}},
      {"o", {s.H * s.Dh, s.D}}, {"gate", {s.D, s.F}},       {"up", {s.D, s.F}},
      {"down", {s.F, s.D}}};
  double per_layer = 0;
  for (const auto& target : lora.targets) {
    auto it = shape.find(target);
    if (it == shape.end()) fail("lora.targets: unknown module '{}' (q k v o gate up down)", target);
    per_layer += double(lora.rank) * (it->second.first + it->second.second);
  }
  return s.L * per_layer;
}

std::string gib(double bytes) {
  if (bytes < 0.1 * kGiB) return fmt::format("{:.1f} MiB", bytes / double(1 << 20));
  return fmt::format("{:.2f} GiB", bytes / kGiB);
}

}  // namespace

double device_memory_bytes(const std::string& device) {
  static const std::map<std::string, double> known = {{"h100-80gb", 80 * kGiB}, {"h200-141gb", 141e9},
                                                      {"a100-80gb", 80 * kGiB}, {"a100-40gb", 40 * kGiB},
                                                      {"l40s-48gb", 48 * kGiB}, {"rtx4090-24gb", 24 * kGiB},
                                                      {"cpu-24gb", 24 * kGiB}};
  auto it = known.find(device);
  if (it == known.end())
    fail(
        "unknown device '{}'; known: h100-80gb, h200-141gb, a100-80gb, a100-40gb, l40s-48gb, rtx4090-24gb, "
        "cpu-24gb",
        device);
  return it->second;
}

MemoryPlan plan_train_rm(const TrainRmConfig& c, const ModelConfig& model, int64_t ranks,
                         const std::string& device) {
  if (ranks < 1) fail("plan: ranks must be at least 1, not {}", ranks);
  auto s = shapes_of(model);
  bool gpu = device.rfind("cpu", 0) != 0;
  double e = gpu && c.bf16 ? 2 : 4;  // activations under bf16 autocast
  double backbone = backbone_parameters(model), head = head_parameters(c.rm, s.D);
  double trainable = c.rm.method == "frozen"   ? head
                     : c.rm.finetune == "lora" ? lora_parameters(model, c.rm.lora) + head
                                               : backbone + head;
  double lora = c.rm.finetune == "lora" ? lora_parameters(model, c.rm.lora) : 0;
  bool grm = c.rm.method == "grm", dpo = grm && c.rm.reg == "dpo";
  MemoryPlan plan;
  // Weights.
  std::string reference_dtype =
      c.frozen_dtype == "auto" ? (gpu && c.bf16 ? "bfloat16" : "float32") : c.frozen_dtype;
  double reference = dpo ? backbone * (reference_dtype == "bfloat16" ? 2 : 4) : 0;
  plan.terms.push_back({"weights", 4 * (backbone + head + lora) + reference,
                        fmt::format("{:.3g} parameters in fp32{}", backbone + head + lora,
                                    dpo ? fmt::format(", DPO reference in {}", reference_dtype) : "")});
  // Gradients: .grad and the all-reduce buckets (or ZeRO-2's flat copy).
  plan.terms.push_back({"gradients", 2 * 4 * trainable,
                        fmt::format("{:.3g} trainable parameters: .grad and the {} buffer", trainable,
                                    c.optim.shard == "gradients" ? "reduce-scatter" : "all-reduce")});
  double sharded = c.optim.shard == "none" ? 1 : double(ranks);
  plan.terms.push_back({"optimizer", 8 * trainable / sharded,
                        c.optim.shard == "none"
                            ? "AdamW's two fp32 moments"
                            : fmt::format("AdamW's two fp32 moments, 1/{} of them", ranks)});
  // Activations of one micro-batch.
  double T = double(c.max_length), tokens = 2 * double(c.optim.batch_size) * T;
  // The attention probabilities are kept in fp32 by the softmax, and again in bf16 for the product
  // with the values under autocast.
  double per_layer_token = e * (10 * s.D + 3 * s.Hkv * s.Dh + 4 * s.F) + s.H * T * (e == 2 ? 6 : 4);
  // At the peak the layer whose backward runs also holds its activations' gradients; checkpointed, that
  // layer's activations are the recomputed ones, beside every layer's input.
  double layers = c.gradient_checkpointing ? tokens * (s.L * e * s.D + 2 * per_layer_token)
                                           : tokens * (s.L + 1) * per_layer_token;
  double outside = tokens * e * 3 * s.D;  // embeddings, final norm, the hidden state the head reads
  double logits = 0;
  if (grm) {
    bool chunked = s.V > double(c.logprob_chunk);
    // The full path keeps the logits and their fp32 log-softmax, and backward makes a gradient of each.
    logits = chunked ? tokens * 2 * 4 * double(c.logprob_chunk) : tokens * 2 * (e + 4) * s.V;
    if (dpo) logits *= 2;  // the reference's too
  }
  plan.terms.push_back(
      {"activations", layers + outside + logits,
       fmt::format(
           "{} sequences x {} tokens{}{}", 2 * c.optim.batch_size, c.max_length,
           c.gradient_checkpointing ? ", checkpointed layers" : "",
           grm ? (s.V > double(c.logprob_chunk) ? ", chunked log-probs" : ", full logits for GRM") : "")});
  plan.terms.push_back({"kv cache", 0, "none in training"});
  for (const auto& term : plan.terms) plan.total += term.bytes;
  if (!device.empty()) {
    plan.capacity = device_memory_bytes(device) * 0.92;  // the framework's own and fragmentation
    plan.fits = plan.total <= plan.capacity;
  }
  if (!plan.fits) {
    // Each candidate change re-planned, the largest saving first.
    std::vector<std::pair<double, std::string>> options;
    auto try_change = [&](const std::string& what, TrainRmConfig changed, int64_t changed_ranks) {
      double saved = plan.total - plan_train_rm(changed, model, changed_ranks, "").total;
      if (saved > 0) options.push_back({saved, fmt::format("{} saves {}", what, gib(saved))});
    };
    TrainRmConfig changed = c;
    if (!c.gradient_checkpointing) {
      changed.gradient_checkpointing = true;
      try_change("gradient_checkpointing: true", changed, ranks);
      changed = c;
    }
    if (c.optim.shard == "none" && ranks > 1) {
      changed.optim.shard = "optimizer";
      try_change("optim.shard: optimizer", changed, ranks);
      changed = c;
    }
    if (c.rm.finetune == "full" && c.rm.method != "frozen") {
      changed.rm.finetune = "lora";
      try_change("rm.finetune: lora", changed, ranks);
      changed = c;
    }
    if (c.optim.batch_size > 1) {
      changed.optim.batch_size = c.optim.batch_size / 2;
      try_change(fmt::format("optim.batch_size: {} with optim.grad_accum: {}", changed.optim.batch_size,
                             c.optim.grad_accum * 2),
                 changed, ranks);
      changed = c;
    }
    if (dpo && reference_dtype == "float32") {
      changed.frozen_dtype = "bfloat16";
      try_change("frozen_dtype: bfloat16", changed, ranks);
      changed = c;
    }
    if (grm && s.V <= double(c.logprob_chunk) && s.V > 4096) {
      changed.logprob_chunk = 4096;
      try_change("logprob_chunk: 4096", changed, ranks);
    }
    std::sort(options.begin(), options.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (auto& [saved, text] : options) plan.advice.push_back(std::move(text));
    if (plan.advice.empty())
      plan.advice.push_back("more memory per rank: nothing in the config shrinks this");
  }
  return plan;
}

std::string format_memory_plan(const MemoryPlan& plan, const std::string& title) {
  std::string out = title + "\n";
  for (const auto& term : plan.terms)
    out += fmt::format("  {:<12} {:>11}   {}\n", term.name, gib(term.bytes), term.detail);
  out += fmt::format("  {:<12} {:>11}", "total", gib(plan.total));
  if (plan.capacity > 0)
    out += fmt::format("   of {} usable: {}", gib(plan.capacity), plan.fits ? "fits" : "does not fit");
  out += "\n";
  for (const auto& advice : plan.advice) out += "  to fit: " + advice + "\n";
  return out;
}

}  // namespace grm
