// RewardModel: a policy/ backbone plus a reward head reading the final hidden state of the last real
// token. The backbone's language-model head stays attached and reads the same hidden states, which is
// what GRM's text-generation regularizers train through. Checkpoints use the Hugging Face layout: the
// backbone's tensors, lm_head.weight, and the head (`score.weight` for a linear head, so such a model
// loads as *ForSequenceClassification; `reward_head.*` for MLP heads), with a "grm" section in config.json
// recording the head and the training method.
#pragma once

#include <string>
#include <vector>

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
  // InfoRM's information bottleneck, when > 0: h -> Linear(D, 2d) -> (mu, log sigma^2), the head reads
  // z = mu + sigma * eps while training and z = mu otherwise, so the head's input is d wide. Saved.
  int64_t bottleneck = 0;
  // ODIN's length head, a linear reward read beside the quality head while training; never saved, so the
  // exported model scores with the quality head alone.
  bool length_head = false;
};

struct RewardOutput {
  torch::Tensor rewards;         // (B)
  torch::Tensor logits;          // (B, T, V) when requested (the LM head on the same hidden states)
  torch::Tensor hidden;          // (B, T, D) the backbone's final hidden states
  torch::Tensor mu, logvar;      // (B, d) with a bottleneck
  torch::Tensor length_rewards;  // (B) with a length head
};

class RewardModelImpl : public torch::nn::Module {
 public:
  RewardModelImpl(CausalLM backbone, const RewardHeadOptions& head);
  // ids, attention_mask (B, T); padding on either side. bottleneck_noise (B, d): the eps of z while
  // training (drawn here when undefined; training passes its own, one draw per pair of the global batch,
  // so K ranks draw what one rank would).
  RewardOutput forward(const torch::Tensor& ids, const torch::Tensor& attention_mask,
                       bool want_logits = false, const torch::Tensor& bottleneck_noise = {});
  CausalLM& backbone() { return backbone_; }
  const RewardHeadOptions& head_options() const { return head_options_; }
  // Trains only the head (the "frozen backbone" baseline).
  void freeze_backbone();
  std::map<std::string, torch::Tensor> hf_state_dict() const;  // backbone + lm_head + head, HF names
  void load_head(const std::map<std::string, torch::Tensor>& tensors, const std::string& source);
  // The quality head's input projection (h, D) (the linear head's (1, D)) and the length head's (1, D),
  // for ODIN's orthogonality; the length head's is undefined without one.
  torch::Tensor head_input_weight() const;
  torch::Tensor length_head_weight() const;
  nlohmann::json metadata;  // training method etc., written into config.json's "grm" section

 private:
  CausalLM backbone_;
  RewardHeadOptions head_options_;
  torch::nn::Sequential head_{nullptr};
  torch::nn::Linear score_{nullptr};  // linear head, HF's `score`
  torch::nn::Linear bottleneck_{nullptr};
  torch::nn::Linear length_head_{nullptr};
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

// WARM's merge (Ramé et al., 2024): the tensor-wise mean of the reward models in `members` (directories
// written by save_reward_model from one initialization: the same names and shapes, else an error naming
// the member), written to `directory` with the first member's config.json, its "grm" section marked
// method "warm" and the member count. LoRA members were merged when saved, so averaging them averages
// their deltas on the common base.
void average_reward_models(const std::vector<std::string>& members, const std::string& directory);

}  // namespace grm
