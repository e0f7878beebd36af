#include "policy/model.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "policy/activation_checkpoint.hpp"
#include "policy/safetensors.hpp"

namespace grm {
namespace {

// Norm over the last dimension: RMSNorm (computed in fp32, as transformers does; Gemma scales by 1 + w)
// or LayerNorm (gpt2). Parameters are named weight / bias like transformers'.
class NormImpl : public torch::nn::Module {
 public:
  NormImpl(int64_t dim, double eps, bool layer_norm, bool plus_one)
      : eps_(eps), layer_norm_(layer_norm), plus_one_(plus_one) {
    weight_ = register_parameter("weight", torch::ones({dim}));
    if (layer_norm_) bias_ = register_parameter("bias", torch::zeros({dim}));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (..., D) -> (..., D)
    if (layer_norm_) return torch::layer_norm(x, {x.size(-1)}, weight_, bias_, eps_);
    auto x32 = x.to(torch::kFloat32);
    x32 = x32 * torch::rsqrt(x32.pow(2).mean(-1, true) + eps_);
    if (plus_one_) return (x32 * (1.0 + weight_.to(torch::kFloat32))).to(x.scalar_type());
    return weight_ * x32.to(x.scalar_type());
  }

 private:
  double eps_;
  bool layer_norm_, plus_one_;
  torch::Tensor weight_, bias_;
};
TORCH_MODULE(Norm);

// gpt2's Conv1D: a linear layer whose weight is stored (in, out).
class Conv1DImpl : public torch::nn::Module {
 public:
  Conv1DImpl(int64_t n_in, int64_t n_out) {
    weight_ = register_parameter("weight", torch::randn({n_in, n_out}) * 0.02);
    bias_ = register_parameter("bias", torch::zeros({n_out}));
  }
  torch::Tensor forward(const torch::Tensor& x) {  // (..., in) -> (..., out)
    auto out = torch::addmm(bias_, x.reshape({-1, x.size(-1)}), weight_);
    auto shape = x.sizes().vec();
    shape.back() = weight_.size(1);
    return out.view(shape);
  }

 private:
  torch::Tensor weight_, bias_;
};
TORCH_MODULE(Conv1D);

torch::nn::Linear linear(int64_t n_in, int64_t n_out, bool bias) {
  return torch::nn::Linear(torch::nn::LinearOptions(n_in, n_out).bias(bias));
}

torch::Tensor activate(const torch::Tensor& x, Activation activation) {
  switch (activation) {
    case Activation::silu:
      return torch::silu(x);
    case Activation::gelu_tanh:
      return torch::gelu(x, "tanh");
    case Activation::gelu_exact:
      return torch::gelu(x);
  }
  return x;
}

torch::Tensor rotate_half(const torch::Tensor& x) {  // (..., Dh) -> (..., Dh)
  int64_t half = x.size(-1) / 2;
  return torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
}

// Leading padding per row: mask (B, T) -> (B)
torch::Tensor leading_pad(const torch::Tensor& mask) {
  return (mask.cumsum(1) == 0).sum(1);
}

}  // namespace

// Projection slots, in the order LoRA target names are listed.
enum Projection { kQ, kK, kV, kO, kGate, kUp, kDown, kNumProjections };
constexpr const char* kProjectionNames[] = {"q", "k", "v", "o", "gate", "up", "down"};

struct CausalLMImpl::Layer {
  Norm norm_attn{nullptr}, norm_mlp{nullptr};
  torch::nn::Linear linear[kNumProjections] = {nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
  torch::Tensor lora_a[kNumProjections], lora_b[kNumProjections];  // (rank, in), (out, rank); undefined: none
  Conv1D c_attn{nullptr}, attn_proj{nullptr}, c_fc{nullptr}, mlp_proj{nullptr};  // gpt2
};

CausalLMImpl::CausalLMImpl(const ModelConfig& config) : config_(config) {
  const auto& c = config_;
  body_ = register_module(c.gpt2_layout ? "transformer" : "model", std::make_shared<torch::nn::Module>());
  token_embedding_ = body_->register_module(c.gpt2_layout ? "wte" : "embed_tokens",
                                            torch::nn::Embedding(c.n_vocab, c.n_embd));
  if (c.gpt2_layout)
    position_embedding_ = body_->register_module("wpe", torch::nn::Embedding(c.n_positions, c.n_embd));
  auto layer_list = body_->register_module(c.gpt2_layout ? "h" : "layers", torch::nn::ModuleList());
  int64_t q_dim = c.n_head * c.head_dim, kv_dim = c.n_kv_head * c.head_dim;
  for (int64_t i = 0; i < c.n_layer; ++i) {
    auto block = std::make_shared<torch::nn::Module>();
    auto layer = std::make_shared<Layer>();
    auto attention =
        block->register_module(c.gpt2_layout ? "attn" : "self_attn", std::make_shared<torch::nn::Module>());
    auto mlp = block->register_module("mlp", std::make_shared<torch::nn::Module>());
    layer->norm_attn = block->register_module(c.gpt2_layout ? "ln_1" : "input_layernorm",
                                              Norm(c.n_embd, c.norm_eps, c.gpt2_layout, c.gemma_norm));
    layer->norm_mlp = block->register_module(c.gpt2_layout ? "ln_2" : "post_attention_layernorm",
                                             Norm(c.n_embd, c.norm_eps, c.gpt2_layout, c.gemma_norm));
    if (c.gpt2_layout) {
      layer->c_attn = attention->register_module("c_attn", Conv1D(c.n_embd, 3 * c.n_embd));
      layer->attn_proj = attention->register_module("c_proj", Conv1D(c.n_embd, c.n_embd));
      layer->c_fc = mlp->register_module("c_fc", Conv1D(c.n_embd, c.n_ff));
      layer->mlp_proj = mlp->register_module("c_proj", Conv1D(c.n_ff, c.n_embd));
    } else {
      layer->linear[kQ] = attention->register_module("q_proj", linear(c.n_embd, q_dim, c.qkv_bias));
      layer->linear[kK] = attention->register_module("k_proj", linear(c.n_embd, kv_dim, c.qkv_bias));
      layer->linear[kV] = attention->register_module("v_proj", linear(c.n_embd, kv_dim, c.qkv_bias));
      layer->linear[kO] = attention->register_module("o_proj", linear(q_dim, c.n_embd, c.out_bias));
      layer->linear[kGate] = mlp->register_module("gate_proj", linear(c.n_embd, c.n_ff, c.mlp_bias));
      layer->linear[kUp] = mlp->register_module("up_proj", linear(c.n_embd, c.n_ff, c.mlp_bias));
      layer->linear[kDown] = mlp->register_module("down_proj", linear(c.n_ff, c.n_embd, c.mlp_bias));
    }
    layer_list->push_back(block);
    layers_.push_back(layer);
  }
  final_norm_ = body_->register_module(c.gpt2_layout ? "ln_f" : "norm",
                                       Norm(c.n_embd, c.norm_eps, c.gpt2_layout, c.gemma_norm).ptr());
  if (!c.tie_embeddings) lm_head_ = register_module("lm_head", linear(c.n_embd, c.n_vocab, false));
  if (!c.gpt2_layout) {
    auto exponents = torch::arange(0, c.head_dim, 2, torch::kInt64).to(torch::kFloat32) / double(c.head_dim);
    inv_freq_ = register_buffer("inv_freq", 1.0 / torch::pow(c.rope_theta, exponents));
  }
}

torch::Tensor CausalLMImpl::norm(torch::nn::Module& module, const torch::Tensor& x) {
  return static_cast<NormImpl&>(module).forward(x);
}

torch::Tensor CausalLMImpl::project(Layer& layer, int which,
                                    const torch::Tensor& x) {  // (.., in) -> (.., out)
  auto out = layer.linear[which](x);
  if (!layer.lora_a[which].defined()) return out;
  auto h = lora_dropout_ > 0 && is_training() ? torch::dropout(x, lora_dropout_, true) : x;
  return out +
         lora_scale_ * torch::matmul(torch::matmul(h, layer.lora_a[which].t()), layer.lora_b[which].t());
}

torch::Tensor CausalLMImpl::mlp(Layer& layer, const torch::Tensor& x) {  // (B, T, D) -> (B, T, D)
  if (config_.gpt2_layout) return layer.mlp_proj(activate(layer.c_fc(x), config_.activation));
  return project(layer, kDown,
                 activate(project(layer, kGate, x), config_.activation) * project(layer, kUp, x));
}

void CausalLMImpl::enable_lora(const LoraConfig& options) {
  if (config_.gpt2_layout) fail("LoRA is implemented for llama-family layouts, not gpt2");
  if (options.rank <= 0) fail("lora.rank must be positive, got {}", options.rank);
  for (auto& p : parameters()) p.set_requires_grad(false);
  std::vector<int> which;
  for (const auto& target : options.targets) {
    auto it = std::find(std::begin(kProjectionNames), std::end(kProjectionNames), target);
    if (it == std::end(kProjectionNames))
      fail("lora.targets: unknown module '{}' (q k v o gate up down)", target);
    which.push_back(int(it - std::begin(kProjectionNames)));
  }
  lora_scale_ = options.alpha / double(options.rank);
  lora_dropout_ = options.dropout;
  for (size_t i = 0; i < layers_.size(); ++i) {
    auto& layer = *layers_[i];
    for (int w : which) {
      auto& base = layer.linear[w];
      int64_t n_in = base->weight.size(1), n_out = base->weight.size(0);
      auto name = fmt::format("lora_{}_{}", i, kProjectionNames[w]);
      layer.lora_a[w] =
          register_parameter(name + "_A", torch::randn({options.rank, n_in}) / std::sqrt(double(n_in)));
      layer.lora_b[w] = register_parameter(name + "_B", torch::zeros({n_out, options.rank}));
    }
  }
}

void CausalLMImpl::merge_lora() {
  torch::NoGradGuard no_grad;
  for (auto& layer : layers_)
    for (int w = 0; w < kNumProjections; ++w)
      if (layer->lora_a[w].defined()) {
        layer->linear[w]->weight.add_(lora_scale_ * torch::matmul(layer->lora_b[w], layer->lora_a[w]));
        layer->lora_a[w] = torch::Tensor();
        layer->lora_b[w] = torch::Tensor();
      }
  lora_scale_ = 0;
}

// x (B, T, D), positions (B, T), additive_mask (B, 1, T, S) -> (B, T, D)
torch::Tensor CausalLMImpl::attention(Layer& layer, int64_t index, const torch::Tensor& x,
                                      const torch::Tensor& positions, const torch::Tensor& additive_mask,
                                      KVCache* cache) {
  const auto& c = config_;
  int64_t B = x.size(0), T = x.size(1), H = c.n_head, Hkv = c.n_kv_head, Dh = c.head_dim;
  torch::Tensor q, k, v;
  if (c.gpt2_layout) {
    auto qkv = layer.c_attn(x).split(c.n_embd, -1);
    q = qkv[0], k = qkv[1], v = qkv[2];
  } else {
    q = project(layer, kQ, x), k = project(layer, kK, x), v = project(layer, kV, x);
  }
  q = q.view({B, T, H, Dh}).transpose(1, 2);    // (B, H, T, Dh)
  k = k.view({B, T, Hkv, Dh}).transpose(1, 2);  // (B, Hkv, T, Dh)
  v = v.view({B, T, Hkv, Dh}).transpose(1, 2);
  if (!c.gpt2_layout) {
    auto freqs = positions.to(torch::kFloat32).unsqueeze(-1) * inv_freq_;  // (B, T, Dh/2)
    auto angles = torch::cat({freqs, freqs}, -1).unsqueeze(1);             // (B, 1, T, Dh)
    auto cos = angles.cos().to(q.scalar_type()), sin = angles.sin().to(q.scalar_type());
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
  }
  if (cache) {
    int64_t start = cache->length;
    cache->keys[index].narrow(2, start, T).copy_(k);
    cache->values[index].narrow(2, start, T).copy_(v);
    k = cache->keys[index].narrow(2, 0, start + T);
    v = cache->values[index].narrow(2, 0, start + T);
  }
  int64_t S = k.size(2), n_rep = H / Hkv;
  // Grouped-query attention without copying keys: query heads sharing a key head are stacked along time.
  auto grouped_q = q.reshape({B, Hkv, n_rep * T, Dh});
  auto scores = torch::matmul(grouped_q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(Dh)));
  scores = scores.view({B, Hkv, n_rep, T, S}) + additive_mask.view({B, 1, 1, T, S});
  auto probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  auto out = torch::matmul(probs.view({B, Hkv, n_rep * T, S}), v);  // (B, Hkv, n_rep*T, Dh)
  out = out.view({B, H, T, Dh}).transpose(1, 2).reshape({B, T, H * Dh});
  return c.gpt2_layout ? layer.attn_proj(out) : project(layer, kO, out);
}

ForwardOutput CausalLMImpl::forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                                    KVCache* cache, bool want_logits) {
  const auto& c = config_;
  TORCH_CHECK(ids.dim() == 2 && attention_mask.sizes() == ids.sizes(),
              "ids and attention_mask must be (B, T)");
  int64_t B = ids.size(0), T = ids.size(1), past = cache ? cache->length : 0;
  if (cache && past + T > cache->capacity())
    fail("KV cache holds {} positions; {} more do not fit after {}", cache->capacity(), T, past);
  auto mask = attention_mask.to(torch::kInt64);
  torch::Tensor positions;  // (B, T): real tokens count from 0 whichever side the padding is on
  auto steps = torch::arange(T, ids.options().dtype(torch::kInt64)).unsqueeze(0);
  if (cache) {
    cache->attention_mask.narrow(1, past, T).copy_(mask);
    auto seen = cache->attention_mask.narrow(1, 0, past).sum(1, true);
    positions = (seen + steps - leading_pad(mask).unsqueeze(1)).clamp_min(0);
  } else {
    positions = (steps - leading_pad(mask).unsqueeze(1)).clamp_min(0);
  }
  auto key_mask = cache ? cache->attention_mask.narrow(1, 0, past + T) : mask;  // (B, S)
  int64_t S = key_mask.size(1);
  auto query_pos = (torch::arange(T, positions.options()) + past).view({T, 1});
  auto key_pos = torch::arange(S, positions.options()).view({1, S});
  auto allowed = (key_pos <= query_pos).unsqueeze(0) & key_mask.to(torch::kBool).unsqueeze(1);  // (B, T, S)
  if (c.sliding_window) allowed = allowed & (key_pos > query_pos - *c.sliding_window).unsqueeze(0);
  auto dtype = token_embedding_->weight.scalar_type();
  auto additive_mask =
      torch::zeros({B, 1, T, S}, torch::TensorOptions().dtype(dtype).device(ids.device()))
          .masked_fill(~allowed.unsqueeze(1),
                       // float's lowest does not fit bf16 or fp16
                       dtype == torch::kFloat32 ? double(std::numeric_limits<float>::lowest()) : -1e4);

  auto x = token_embedding_(ids);
  if (c.gpt2_layout) x = x + position_embedding_(positions.clamp_max(c.n_positions - 1));
  if (c.gemma_norm) x = x * torch::tensor(std::sqrt(double(c.n_embd)), x.options());
  bool recompute = gradient_checkpointing_ && is_training() && !cache && torch::GradMode::is_enabled();
  if (recompute) {  // a frozen backbone has nothing to recompute for
    auto params = parameters();
    recompute =
        std::any_of(params.begin(), params.end(), [](const torch::Tensor& p) { return p.requires_grad(); });
  }
  for (size_t i = 0; i < layers_.size(); ++i) {
    // Captures by value: a checkpointed block runs again in backward, after this call has returned.
    auto block = [this, i, positions, additive_mask, cache](const torch::Tensor& h) {
      auto& layer = *layers_[i];
      auto y = h + attention(layer, int64_t(i), norm(*layer.norm_attn, h), positions, additive_mask, cache);
      return y + mlp(layer, norm(*layer.norm_mlp, y));
    };
    x = recompute ? checkpointed(block, x) : block(x);
  }
  if (cache) cache->length += T;
  ForwardOutput out;
  out.hidden = norm(*final_norm_, x);
  if (want_logits) out.logits = logits_from_hidden(out.hidden);
  return out;
}

torch::Tensor CausalLMImpl::logits_from_hidden(const torch::Tensor& hidden) {
  if (lm_head_.is_empty()) return torch::nn::functional::linear(hidden, token_embedding_->weight);
  return lm_head_(hidden);
}

torch::Tensor CausalLMImpl::output_weight() const {
  return lm_head_.is_empty() ? token_embedding_->weight : lm_head_->weight;
}

KVCache CausalLMImpl::make_cache(int64_t batch, int64_t capacity) const {
  KVCache cache;
  auto options = token_embedding_->weight.options();
  for (int64_t i = 0; i < config_.n_layer; ++i) {
    cache.keys.push_back(torch::zeros({batch, config_.n_kv_head, capacity, config_.head_dim}, options));
    cache.values.push_back(torch::zeros({batch, config_.n_kv_head, capacity, config_.head_dim}, options));
  }
  cache.attention_mask = torch::zeros({batch, capacity}, options.dtype(torch::kInt64));
  return cache;
}

std::map<std::string, torch::Tensor> CausalLMImpl::hf_state_dict() const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : named_parameters())
    if (p.key().rfind("lora_", 0) != 0) out[p.key()] = p.value();
  return out;
}

void CausalLMImpl::load_hf_state_dict(const std::map<std::string, torch::Tensor>& tensors,
                                      const std::string& source) {
  torch::NoGradGuard no_grad;
  std::string embedding_key = config_.prefix() + (config_.gpt2_layout ? "wte.weight" : "embed_tokens.weight");
  for (auto& p : named_parameters()) {
    if (p.key().rfind("lora_", 0) == 0) continue;  // adapters are trained, not loaded
    auto it = tensors.find(p.key());
    // Tied checkpoints may store the shared matrix under the output name only (older transformers).
    if (it == tensors.end() && config_.tie_embeddings && p.key() == embedding_key)
      it = tensors.find("lm_head.weight");
    if (it == tensors.end())
      fail("{}: missing tensor '{}' (a {} checkpoint with {} layers needs it)", source, p.key(),
           config_.model_type, config_.n_layer);
    if (it->second.sizes() != p.value().sizes())
      fail("{}: tensor '{}' has shape [{}] but config.json implies [{}]", source, p.key(),
           fmt::join(it->second.sizes(), ", "), fmt::join(p.value().sizes(), ", "));
    p.value().copy_(it->second);
  }
}

CausalLM load_causal_lm(const std::string& directory, torch::Dtype dtype) {
  auto config = ModelConfig::from_file(directory);
  CausalLM model(config);
  model->load_hf_state_dict(load_safetensors(directory), directory);
  model->to(dtype);
  model->eval();
  return model;
}

void save_causal_lm(const CausalLM& model, const std::string& directory) {
  std::filesystem::create_directories(directory);
  auto config = model->config().to_json();
  write_file_atomic((std::filesystem::path(directory) / "config.json").string(), config.dump(2) + "\n");
  save_safetensors((std::filesystem::path(directory) / "model.safetensors").string(), model->hf_state_dict());
}

torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& ids) {
  int64_t T = logits.size(1);
  auto logp = torch::log_softmax(logits.narrow(1, 0, T - 1).to(torch::kFloat32), -1);
  return logp.gather(-1, ids.narrow(1, 1, T - 1).unsqueeze(-1)).squeeze(-1);
}

torch::Tensor response_logprobs(const torch::Tensor& logits, const torch::Tensor& ids,
                                const torch::Tensor& response_mask) {
  int64_t T = ids.size(1);
  auto scored = response_mask.narrow(1, 1, T - 1).to(torch::kFloat32);
  return (token_logprobs(logits, ids) * scored).sum(1);
}

}  // namespace grm
