// ModelConfig: a Hugging Face config.json parsed once into the few numbers a decoder-only transformer
// needs, for the model types llama, mistral, qwen2, gemma and gpt2. The original JSON is kept so that a
// saved checkpoint writes back every key transformers expects (config round trip).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace grm {

enum class Activation { silu, gelu_tanh, gelu_exact };

struct ModelConfig {
  std::string model_type;  // llama | mistral | qwen2 | gemma | gpt2
  int64_t n_vocab = 0;
  int64_t n_embd = 0;  // hidden size D
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_kv_head = 0;  // grouped-query attention: n_head % n_kv_head == 0
  int64_t head_dim = 0;
  int64_t n_ff = 0;         // MLP inner size
  int64_t n_positions = 0;  // max_position_embeddings / n_positions
  double norm_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<int64_t> sliding_window;
  Activation activation = Activation::silu;
  bool tie_embeddings = false;
  bool qkv_bias = false;  // bias on q/k/v projections (qwen2, attention_bias)
  bool out_bias = false;  // bias on the attention output projection
  bool mlp_bias = false;
  bool gpt2_layout = false;  // learned positions, LayerNorm, fused Conv1D c_attn, plain GELU MLP
  bool gemma_norm = false;   // RMSNorm scales by (1 + w) and embeddings by sqrt(D)
  std::optional<int64_t> bos_id, pad_id;
  std::vector<int64_t> eos_ids;
  nlohmann::json raw;  // the config.json as read, for writing back

  // source names the file in error messages.
  static ModelConfig from_json(const nlohmann::json& json, const std::string& source);
  static ModelConfig from_file(const std::string& path);  // a config.json or the model directory
  nlohmann::json to_json() const;
  std::string prefix() const { return gpt2_layout ? "transformer." : "model."; }  // HF tensor-name prefix
};

}  // namespace grm
