#include "policy/model_config.hpp"

#include <filesystem>
#include <fstream>

#include "core/error.hpp"

namespace grm {
namespace {

using nlohmann::json;

// Reads a required or optional key with a message naming file and key on a missing or mistyped value.
template <typename T>
T required(const json& j, const std::string& key, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) fail("{}: missing required key '{}'", source, key);
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    fail("{}: key '{}' has the wrong type (got {})", source, key, j[key].dump());
  }
}

template <typename T>
T optional_key(const json& j, const std::string& key, T fallback, const std::string& source) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  try {
    return j[key].get<T>();
  } catch (const json::exception&) {
    fail("{}: key '{}' has the wrong type (got {})", source, key, j[key].dump());
  }
}

Activation parse_activation(const std::string& name, const std::string& source) {
  if (name == "silu" || name == "swish") return Activation::silu;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_fast") return Activation::gelu_tanh;
  if (name == "gelu") return Activation::gelu_exact;
  fail("{}: activation '{}' is not supported (silu, gelu, gelu_new, gelu_pytorch_tanh)", source, name);
}

std::vector<int64_t> eos_list(const json& j, const std::string& source) {
  if (!j.contains("eos_token_id") || j["eos_token_id"].is_null()) return {};
  const json& e = j["eos_token_id"];
  if (e.is_number_integer()) return {e.get<int64_t>()};
  if (e.is_array()) return optional_key<std::vector<int64_t>>(j, "eos_token_id", {}, source);
  fail("{}: key 'eos_token_id' must be an integer or a list of integers", source);
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: a model config must be a JSON object", source);
  ModelConfig c;
  c.raw = j;
  c.model_type = required<std::string>(j, "model_type", source);
  c.n_vocab = required<int64_t>(j, "vocab_size", source);
  if (c.model_type == "gpt2") {
    c.gpt2_layout = true;
    c.n_embd = required<int64_t>(j, "n_embd", source);
    c.n_layer = required<int64_t>(j, "n_layer", source);
    c.n_head = required<int64_t>(j, "n_head", source);
    c.n_kv_head = c.n_head;
    c.n_ff = optional_key<int64_t>(j, "n_inner", 4 * c.n_embd, source);
    c.n_positions = required<int64_t>(j, "n_positions", source);
    c.norm_eps = optional_key<double>(j, "layer_norm_epsilon", 1e-5, source);
    c.activation =
        parse_activation(optional_key<std::string>(j, "activation_function", "gelu_new", source), source);
    c.tie_embeddings = optional_key<bool>(j, "tie_word_embeddings", true, source);
    c.qkv_bias = c.out_bias = c.mlp_bias = true;
    if (!optional_key<bool>(j, "scale_attn_weights", true, source) ||
        optional_key<bool>(j, "scale_attn_by_inverse_layer_idx", false, source) ||
        optional_key<bool>(j, "reorder_and_upcast_attn", false, source))
      fail(
          "{}: gpt2 attention-scaling variants (scale_attn_weights=false, scale_attn_by_inverse_layer_idx, "
          "reorder_and_upcast_attn) are not supported",
          source);
  } else if (c.model_type == "llama" || c.model_type == "mistral" || c.model_type == "qwen2" ||
             c.model_type == "gemma") {
    c.n_embd = required<int64_t>(j, "hidden_size", source);
    c.n_layer = required<int64_t>(j, "num_hidden_layers", source);
    c.n_head = required<int64_t>(j, "num_attention_heads", source);
    c.n_kv_head = optional_key<int64_t>(j, "num_key_value_heads", c.n_head, source);
    c.n_ff = required<int64_t>(j, "intermediate_size", source);
    c.n_positions = optional_key<int64_t>(j, "max_position_embeddings", 2048, source);
    c.norm_eps = optional_key<double>(j, "rms_norm_eps", 1e-6, source);
    std::string act = optional_key<std::string>(j, "hidden_act", "silu", source);
    if (c.model_type == "gemma") act = optional_key<std::string>(j, "hidden_activation", act, source);
    c.activation = parse_activation(act, source);
    c.tie_embeddings = optional_key<bool>(j, "tie_word_embeddings", c.model_type == "gemma", source);
    bool attention_bias = optional_key<bool>(j, "attention_bias", false, source);
    c.qkv_bias = c.model_type == "qwen2" || attention_bias;
    c.out_bias = attention_bias && c.model_type != "qwen2";
    c.mlp_bias = optional_key<bool>(j, "mlp_bias", false, source);
    c.gemma_norm = c.model_type == "gemma";
    // transformers 5 nests rope settings in rope_parameters; 4.x keeps rope_theta/rope_scaling at the top.
    const json* rope =
        j.contains("rope_parameters") && j["rope_parameters"].is_object() ? &j["rope_parameters"] : nullptr;
    c.rope_theta = optional_key<double>(j, "rope_theta", 10000.0, source);
    if (rope)
      c.rope_theta = optional_key<double>(*rope, "rope_theta", c.rope_theta, source + " rope_parameters");
    std::string rope_type = "default";
    if (rope)
      rope_type = optional_key<std::string>(*rope, "rope_type", "default", source + " rope_parameters");
    if (j.contains("rope_scaling") && j["rope_scaling"].is_object())
      rope_type = optional_key<std::string>(
          j["rope_scaling"], "rope_type",
          optional_key<std::string>(j["rope_scaling"], "type", "default", source), source);
    if (rope_type != "default")
      fail("{}: rope_type '{}' is not supported yet (only the default RoPE)", source, rope_type);
    bool sliding = c.model_type == "mistral" ||
                   (c.model_type == "qwen2" && optional_key<bool>(j, "use_sliding_window", false, source));
    if (sliding && j.contains("sliding_window") && !j["sliding_window"].is_null())
      c.sliding_window = optional_key<int64_t>(j, "sliding_window", 0, source);
  } else {
    fail("{}: model_type '{}' is not supported (llama, mistral, qwen2, gemma, gpt2)", source, c.model_type);
  }
  c.head_dim = optional_key<int64_t>(j, "head_dim",
                                     c.n_head > 0 ? c.n_embd / std::max<int64_t>(c.n_head, 1) : 0, source);
  for (auto [value, name] : {std::pair{c.n_vocab, "vocab_size"},
                             {c.n_embd, "hidden size"},
                             {c.n_layer, "layers"},
                             {c.n_head, "attention heads"},
                             {c.n_kv_head, "key/value heads"},
                             {c.head_dim, "head_dim"},
                             {c.n_ff, "intermediate size"}})
    if (value <= 0) fail("{}: {} must be positive, got {}", source, name, value);
  if (c.n_head % c.n_kv_head != 0)
    fail("{}: num_attention_heads ({}) must be a multiple of num_key_value_heads ({})", source, c.n_head,
         c.n_kv_head);
  if (c.head_dim % 2 != 0 && !c.gpt2_layout)
    fail("{}: head_dim {} must be even for RoPE", source, c.head_dim);
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_id = j["bos_token_id"].get<int64_t>();
  if (j.contains("pad_token_id") && j["pad_token_id"].is_number_integer())
    c.pad_id = j["pad_token_id"].get<int64_t>();
  c.eos_ids = eos_list(j, source);
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::filesystem::path file(path);
  if (std::filesystem::is_directory(file)) file /= "config.json";
  std::ifstream in(file);
  if (!in) fail("{}: cannot open the model config (is this a Hugging Face model directory?)", file.string());
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", file.string(), e.what());
  }
  return from_json(j, file.string());
}

json ModelConfig::to_json() const {
  return raw;
}

}  // namespace grm
