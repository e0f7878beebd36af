// CausalLM: a decoder-only transformer in LibTorch for the Hugging Face model types llama, mistral,
// qwen2, gemma and gpt2, with submodules named exactly as transformers names its tensors
// ("model.layers.0.self_attn.q_proj.weight", "transformer.h.0.attn.c_attn.weight", ...), so loading and
// saving checkpoints is a name-for-name copy. Attention supports grouped-query heads, RoPE, padding on
// either side and an optional preallocated KV cache for incremental decoding.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/torch.hpp"

#include "policy/lora.hpp"
#include "policy/model_config.hpp"

namespace grm {

// Preallocated keys and values for incremental decoding; one slot per layer.
struct KVCache {
  std::vector<torch::Tensor> keys;    // per layer (B, n_kv_head, capacity, head_dim)
  std::vector<torch::Tensor> values;  // per layer (B, n_kv_head, capacity, head_dim)
  torch::Tensor attention_mask;       // (B, capacity) 1 for a real token, 0 for padding
  int64_t length = 0;                 // positions filled so far
  int64_t capacity() const { return attention_mask.defined() ? attention_mask.size(1) : 0; }
};

struct ForwardOutput {
  torch::Tensor logits;  // (B, T, V); undefined when not requested
  torch::Tensor hidden;  // (B, T, D) after the final norm
};

class CausalLMImpl : public torch::nn::Module {
 public:
  explicit CausalLMImpl(const ModelConfig& config);

  // ids (B, T), attention_mask (B, T) of 0/1. Without a cache the sequence is complete; padding may be on
  // either side (positions count real tokens only, as transformers' generate does). With a cache, ids
  // are appended at cache->length and attention covers everything cached so far.
  ForwardOutput forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                        KVCache* cache = nullptr, bool want_logits = true);
  torch::Tensor logits_from_hidden(const torch::Tensor& hidden);  // (B, T, D) -> (B, T, V)
  // The (V, D) matrix logits_from_hidden multiplies by: lm_head.weight, or the tied embedding.
  torch::Tensor output_weight() const;
  KVCache make_cache(int64_t batch, int64_t capacity) const;

  const ModelConfig& config() const { return config_; }
  // Adds LoRA adapters (llama-family layouts) and freezes every other parameter of the backbone.
  void enable_lora(const LoraConfig& options);
  // Folds the adapters into the projection weights and removes them (for export).
  void merge_lora();
  bool has_lora() const { return lora_scale_ > 0; }
  // Per-layer activation checkpointing (policy/activation_checkpoint.hpp) in training forward passes
  // that build a graph: each layer's activations are recomputed in backward instead of kept.
  void set_gradient_checkpointing(bool on) { gradient_checkpointing_ = on; }
  // Parameters under their Hugging Face names (tied output weights appear once, as the embedding).
  std::map<std::string, torch::Tensor> hf_state_dict() const;
  // Copies tensors into the parameters; every parameter must be present with the right shape, or the
  // error names the tensor and the source.
  void load_hf_state_dict(const std::map<std::string, torch::Tensor>& tensors, const std::string& source);

 private:
  struct Layer;
  torch::Tensor attention(Layer& layer, int64_t index, const torch::Tensor& x, const torch::Tensor& positions,
                          const torch::Tensor& additive_mask, KVCache* cache);
  torch::Tensor mlp(Layer& layer, const torch::Tensor& x);
  torch::Tensor norm(torch::nn::Module& module, const torch::Tensor& x);
  torch::Tensor project(Layer& layer, int which, const torch::Tensor& x);

  ModelConfig config_;
  std::vector<std::shared_ptr<Layer>> layers_;
  std::shared_ptr<torch::nn::Module> body_;  // "model" or "transformer"
  torch::nn::Embedding token_embedding_{nullptr};
  torch::nn::Embedding position_embedding_{nullptr};  // gpt2 only
  std::shared_ptr<torch::nn::Module> final_norm_;
  torch::nn::Linear lm_head_{nullptr};  // absent when tied
  torch::Tensor inv_freq_;              // (head_dim / 2) RoPE frequencies, fp32
  double lora_scale_ = 0;               // alpha / rank; 0 without adapters
  double lora_dropout_ = 0;
  bool gradient_checkpointing_ = false;
};
TORCH_MODULE(CausalLM);

// A model directory (config.json + safetensors) -> a CausalLM in eval mode, fp32 on CPU unless told.
CausalLM load_causal_lm(const std::string& directory, torch::Dtype dtype = torch::kFloat32);
// Writes config.json and model.safetensors (tensors in `dtype`, HF names) loadable by transformers.
void save_causal_lm(const CausalLM& model, const std::string& directory);

// Per-token log-probabilities of the next token: logits (B, T, V), ids (B, T) -> (B, T-1), where entry t
// is log p(ids[t+1] | ids[..t]).
torch::Tensor token_logprobs(const torch::Tensor& logits, const torch::Tensor& ids);
// Sum of token log-probs over the response: response_mask (B, T) marks response tokens (prompt and padding
// 0); the first token is never scored. -> (B)
torch::Tensor response_logprobs(const torch::Tensor& logits, const torch::Tensor& ids,
                                const torch::Tensor& response_mask);

}  // namespace grm
