#include "rm/reward_model.hpp"

#include <filesystem>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "policy/safetensors.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;

std::string class_prefix(const std::string& model_type) {
  if (model_type == "gpt2") return "GPT2";
  if (model_type == "qwen2") return "Qwen2";
  std::string out = model_type;
  out[0] = char(std::toupper(out[0]));
  return out;
}

// The tensors a saved reward model holds beside the backbone (ODIN's length head is not among them).
bool is_head_tensor(const std::string& name) {
  for (const char* prefix : {"score.", "reward_head.", "bottleneck."})
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}

}  // namespace

torch::Tensor last_token_index(const torch::Tensor& attention_mask) {
  auto positions = torch::arange(attention_mask.size(1), attention_mask.options().dtype(torch::kInt64));
  return (positions.unsqueeze(0) * attention_mask.to(torch::kInt64)).argmax(1);
}

RewardModelImpl::RewardModelImpl(CausalLM backbone, const RewardHeadOptions& head)
    : backbone_(register_module("backbone", std::move(backbone))), head_options_(head) {
  int64_t D = backbone_->config().n_embd;
  if (head.bottleneck > 0) {
    bottleneck_ = register_module("bottleneck", torch::nn::Linear(D, 2 * head.bottleneck));
    D = head.bottleneck;
  }
  if (head.length_head)
    length_head_ = register_module(
        "length_head",
        torch::nn::Linear(torch::nn::LinearOptions(backbone_->config().n_embd, 1).bias(false)));
  if (head.type == "linear") {
    score_ = register_module("score", torch::nn::Linear(torch::nn::LinearOptions(D, 1).bias(false)));
  } else if (head.type == "mlp") {
    head_ = register_module("reward_head",
                            torch::nn::Sequential(torch::nn::Linear(D, head.hidden), torch::nn::ReLU(),
                                                  torch::nn::Linear(head.hidden, 1)));
  } else if (head.type == "mlp2") {
    head_ = register_module(
        "reward_head", torch::nn::Sequential(torch::nn::Linear(D, head.hidden), torch::nn::ReLU(),
                                             torch::nn::Linear(head.hidden, head.hidden), torch::nn::ReLU(),
                                             torch::nn::Linear(head.hidden, 1)));
  } else {
    fail("reward head type '{}' is not known (linear, mlp, mlp2)", head.type);
  }
}

RewardOutput RewardModelImpl::forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                                      bool want_logits, const torch::Tensor& bottleneck_noise) {
  auto out = backbone_->forward(ids, attention_mask, nullptr, want_logits);
  auto index = last_token_index(attention_mask);  // (B)
  auto last = out.hidden.gather(1, index.view({-1, 1, 1}).expand({-1, 1, out.hidden.size(2)})).squeeze(1);
  last = torch::dropout(last, head_options_.dropout, is_training());
  RewardOutput result;
  result.logits = out.logits;
  result.hidden = out.hidden;
  auto head_input = last;
  if (!bottleneck_.is_empty()) {
    auto stats = bottleneck_(last).chunk(2, -1);
    result.mu = stats[0], result.logvar = stats[1];
    head_input = result.mu;
    if (is_training()) {
      auto eps = bottleneck_noise.defined() ? bottleneck_noise.to(result.mu.options())
                                            : torch::randn_like(result.mu);
      head_input = result.mu + (0.5 * result.logvar).exp() * eps;
    }
  }
  if (!length_head_.is_empty()) result.length_rewards = length_head_(last).squeeze(-1).to(torch::kFloat32);
  auto reward = score_.is_empty() ? head_->forward(head_input) : score_(head_input);  // (B, 1)
  result.rewards = reward.squeeze(-1).to(torch::kFloat32);
  return result;
}

torch::Tensor RewardModelImpl::head_input_weight() const {
  if (!score_.is_empty()) return score_->weight;
  return head_->ptr<torch::nn::LinearImpl>(0)->weight;
}

torch::Tensor RewardModelImpl::length_head_weight() const {
  return length_head_.is_empty() ? torch::Tensor() : length_head_->weight;
}

void RewardModelImpl::freeze_backbone() {
  for (auto& p : backbone_->parameters()) p.set_requires_grad(false);
}

std::map<std::string, torch::Tensor> RewardModelImpl::hf_state_dict() const {
  auto out = backbone_->hf_state_dict();
  for (const auto& p : named_parameters())
    if (is_head_tensor(p.key())) out[p.key()] = p.value();
  // Tied backbones store the shared matrix once; transformers' sequence-classification loaders need
  // only the backbone, the LM head reappears from the tie on our side.
  return out;
}

void RewardModelImpl::load_head(const std::map<std::string, torch::Tensor>& tensors,
                                const std::string& source) {
  torch::NoGradGuard no_grad;
  for (auto& p : named_parameters()) {
    if (!is_head_tensor(p.key())) continue;
    auto it = tensors.find(p.key());
    if (it == tensors.end()) fail("{}: missing reward-head tensor '{}'", source, p.key());
    if (it->second.sizes() != p.value().sizes())
      fail("{}: reward-head tensor '{}' has shape [{}], expected [{}]", source, p.key(),
           fmt::join(it->second.sizes(), ", "), fmt::join(p.value().sizes(), ", "));
    p.value().copy_(it->second);
  }
}

RewardModel make_reward_model(const std::string& model_dir, const RewardHeadOptions& head, uint64_t seed) {
  auto backbone = load_causal_lm(model_dir);
  torch::manual_seed(seed);
  RewardModel model(backbone, head);
  // Small head initialisation so initial rewards are near zero and the backbone's features dominate.
  torch::NoGradGuard no_grad;
  for (auto& p : model->named_parameters())
    if (is_head_tensor(p.key()) || p.key().rfind("length_head.", 0) == 0) {
      if (p.value().dim() == 2)
        p.value().normal_(0, 1.0 / std::sqrt(double(p.value().size(1))));
      else
        p.value().zero_();
    }
  return model;
}

RewardModel load_reward_model(const std::string& directory) {
  auto config = ModelConfig::from_file(directory);
  RewardHeadOptions head;
  nlohmann::json metadata = nlohmann::json::object();
  if (config.raw.contains("grm") && config.raw["grm"].is_object()) {
    metadata = config.raw["grm"];
    head.type = metadata.value("head", std::string("linear"));
    head.hidden = metadata.value("head_hidden", int64_t(1024));
    head.bottleneck = metadata.value("bottleneck", int64_t(0));
  } else {
    head.type = "linear";  // a plain *ForSequenceClassification checkpoint
    if (config.raw.value("num_labels", 1) != 1 && !config.raw.contains("id2label"))
      fail("{}: only single-output reward models are supported", directory);
  }
  auto tensors = load_safetensors(directory);
  // Sequence-classification checkpoints have no LM head; an untied backbone then keeps its embedding as
  // the output matrix so the model still runs (its LM loss is meaningless, and nothing trains it here).
  if (!config.tie_embeddings && !tensors.count("lm_head.weight")) {
    auto embed = tensors.find(config.prefix() + (config.gpt2_layout ? "wte.weight" : "embed_tokens.weight"));
    if (embed != tensors.end()) tensors["lm_head.weight"] = embed->second;
  }
  CausalLM backbone(config);
  backbone->load_hf_state_dict(tensors, directory);
  RewardModel model(backbone, head);
  model->load_head(tensors, directory);
  model->metadata = metadata;
  model->eval();
  return model;
}

void save_reward_model(RewardModel& model, const std::string& directory) {
  fs::create_directories(directory);
  if (model->backbone()->has_lora()) model->backbone()->merge_lora();
  auto config = model->backbone()->config().to_json();
  auto metadata = model->metadata.is_object() ? model->metadata : nlohmann::json::object();
  metadata["head"] = model->head_options().type;
  metadata["head_hidden"] = model->head_options().hidden;
  if (model->head_options().bottleneck > 0) metadata["bottleneck"] = model->head_options().bottleneck;
  config["grm"] = metadata;
  std::string prefix = class_prefix(config.value("model_type", std::string("llama")));
  // A linear head on the final hidden state is transformers' sequence classifier; behind InfoRM's
  // bottleneck it is not (transformers would skip the bottleneck), so that one loads only here.
  if (model->head_options().type == "linear" && model->head_options().bottleneck == 0) {
    config["architectures"] = {prefix + "ForSequenceClassification"};
    config["num_labels"] = 1;
    config["id2label"] = {{"0", "LABEL_0"}};
    config["label2id"] = {{"LABEL_0", 0}};
    if (!config.contains("pad_token_id") || config["pad_token_id"].is_null()) config["pad_token_id"] = 0;
  } else {
    config["architectures"] = {prefix + "ForCausalLM"};
  }
  write_file_atomic((fs::path(directory) / "config.json").string(), config.dump(2) + "\n");
  save_safetensors((fs::path(directory) / "model.safetensors").string(), model->hf_state_dict());
}

void average_reward_models(const std::vector<std::string>& members, const std::string& directory) {
  if (members.empty()) fail("WARM: no member models to average into {}", directory);
  auto first = load_safetensors(members.front());
  std::map<std::string, torch::Tensor> sum;  // float64, so the mean does not depend on the members' order
  for (const auto& [name, tensor] : first) sum[name] = tensor.to(torch::kFloat64);
  for (size_t k = 1; k < members.size(); ++k) {
    auto tensors = load_safetensors(members[k]);
    if (tensors.size() != first.size())
      fail("{}: {} tensors, but {} has {}; WARM averages models of one architecture", members[k],
           tensors.size(), members.front(), first.size());
    for (const auto& [name, tensor] : tensors) {
      auto it = sum.find(name);
      if (it == sum.end()) fail("{}: tensor '{}' is not in {}", members[k], name, members.front());
      if (it->second.sizes() != tensor.sizes())
        fail("{}: tensor '{}' has shape [{}], but [{}] in {}", members[k], name,
             fmt::join(tensor.sizes(), ", "), fmt::join(it->second.sizes(), ", "), members.front());
      it->second += tensor.to(torch::kFloat64);
    }
  }
  std::map<std::string, torch::Tensor> mean;
  for (auto& [name, total] : sum)
    mean[name] = (total / double(members.size())).to(first.at(name).scalar_type());
  auto config = nlohmann::json::parse(read_file((fs::path(members.front()) / "config.json").string()));
  config["grm"]["method"] = "warm";
  config["grm"]["warm_members"] = members.size();
  fs::create_directories(directory);
  write_file_atomic((fs::path(directory) / "config.json").string(), config.dump(2) + "\n");
  save_safetensors((fs::path(directory) / "model.safetensors").string(), mean);
}

}  // namespace grm
