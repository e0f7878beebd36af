// RewardModel: a policy/ backbone plus a reward head reading the final hidden state of the last real
// token. The backbone's language-model head stays attached and reads the same hidden states, which is
// what GRM's text-generation regularizers train through. Checkpoints use the Hugging Face layout: the
// backbone's tensors, lm_head.weight, and the head (`score.weight` for a linear head, so such a model
// loads as *ForSequenceClassification; `reward_head.*` for MLP heads), with a "grm" section in config.json
// recording the head and the training method.
#pragma once

#include <string>

#include <nlohmann/json.hpp>
#include "core/torch.hpp"

#include "policy/model.hpp"

namespace grm {

struct RewardHeadOptions {
  std::string type = "mlp";  // linear | mlp (Linear(D,h) -> ReLU -> Linear(h,1)) | mlp2 (two hidden layers)
  int64_t hidden = 1024;
  // Dropout on the hidden state the head reads, while training (the GRM reference applies 0.1 for every
  // head). 0 here, so a model built for something else (a PPO critic, a scorer) has none unless asked.
  double dropout = 0.0;
};

struct RewardOutput {
  torch::Tensor rewards;  // (B)
  torch::Tensor logits;   // (B, T, V) when requested (the LM head on the same hidden states)
};

class RewardModelImpl : public torch::nn::Module {
 public:
  RewardModelImpl(CausalLM backbone, const RewardHeadOptions& head);
  // ids, attention_mask (B, T); padding on either side.
  RewardOutput forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                       bool want_logits = false);
  CausalLM& backbone() { return backbone_; }
  const RewardHeadOptions& head_options() const { return head_options_; }
  // Trains only the head (the "frozen backbone" baseline).
  void freeze_backbone();
  std::map<std::string, torch::Tensor> hf_state_dict() const;  // backbone + lm_head + head, HF names
  void load_head(const std::map<std::string, torch::Tensor>& tensors, const std::string& source);
  nlohmann::json metadata;  // training method etc., written into config.json's "grm" section

 private:
  CausalLM backbone_;
  RewardHeadOptions head_options_;
  torch::nn::Sequential head_{nullptr};
  torch::nn::Linear score_{nullptr};  // linear head, HF's `score`
};
TORCH_MODULE(RewardModel);

// (B, T) mask -> (B) index of the last real token, whichever side the padding is on.
torch::Tensor last_token_index(const torch::Tensor& attention_mask);

// A new reward model on a pretrained causal LM directory (head randomly initialised from `seed`).
RewardModel make_reward_model(const std::string& model_dir, const RewardHeadOptions& head, uint64_t seed);
// Loads a reward model directory written by save_reward_model, or a Hugging Face
// *ForSequenceClassification checkpoint (linear `score` head, no LM head needed).
RewardModel load_reward_model(const std::string& directory);
// Writes config.json (with a "grm" section; linear heads also as *ForSequenceClassification) and
// model.safetensors; merges LoRA adapters first.
void save_reward_model(RewardModel& model, const std::string& directory);

}  // namespace grm
