#include "ppo/rollout.hpp"

#include <algorithm>

#include "core/error.hpp"

namespace grm {

Rollout sample_rollout(CausalLM& actor, const Tokenizer& tokenizer,
                       const std::vector<std::string>& prompt_texts,
                       const std::vector<std::vector<int64_t>>& prompt_ids, const GenerateOptions& options,
                       const ChatFormat& format) {
  if (prompt_texts.size() != prompt_ids.size())
    fail("sample_rollout: {} prompt texts for {} tokenized prompts", prompt_texts.size(), prompt_ids.size());
  if (prompt_ids.empty()) fail("sample_rollout: no prompts");
  auto generation = generate(actor, prompt_ids, options);
  int64_t N = int64_t(prompt_ids.size()), P = 0, R = 1;
  for (size_t i = 0; i < prompt_ids.size(); ++i) {
    P = std::max<int64_t>(P, int64_t(prompt_ids[i].size()));
    R = std::max<int64_t>(R, int64_t(generation.tokens[i].size()));
  }
  Rollout rollout;
  rollout.prompt_columns = P;
  rollout.ids = torch::full({N, P + R}, options.pad_id, torch::kInt64);
  rollout.mask = torch::zeros({N, P + R}, torch::kInt64);
  rollout.response_mask = torch::zeros({N, R}, torch::kInt64);
  auto ids = rollout.ids.accessor<int64_t, 2>();
  auto mask = rollout.mask.accessor<int64_t, 2>();
  auto response_mask = rollout.response_mask.accessor<int64_t, 2>();
  for (int64_t n = 0; n < N; ++n) {
    const auto& prompt = prompt_ids[size_t(n)];
    const auto& response = generation.tokens[size_t(n)];
    int64_t offset = P - int64_t(prompt.size());
    for (size_t t = 0; t < prompt.size(); ++t)
      ids[n][offset + int64_t(t)] = prompt[t], mask[n][offset + int64_t(t)] = 1;
    for (size_t j = 0; j < response.size(); ++j) {
      ids[n][P + int64_t(j)] = response[j];
      mask[n][P + int64_t(j)] = 1;
      response_mask[n][int64_t(j)] = 1;
    }
    rollout.n_response_tokens += int64_t(response.size());
    rollout.texts.push_back(
        {prompt_texts[size_t(n)],
         format.interchange_response(decode_continuation(tokenizer, prompt, response, options.eos_ids)),
         bool(generation.stopped_at_eos[size_t(n)]), false});
  }
  auto device = actor->parameters().front().device();
  rollout.ids = rollout.ids.to(device);
  rollout.mask = rollout.mask.to(device);
  rollout.response_mask = rollout.response_mask.to(device);
  return rollout;
}

Rollout select_rows(const Rollout& rollout, const torch::Tensor& rows) {
  Rollout out;
  auto index = rows.to(rollout.ids.device());
  out.ids = rollout.ids.index_select(0, index);
  out.mask = rollout.mask.index_select(0, index);
  out.response_mask = rollout.response_mask.index_select(0, index);
  out.prompt_columns = rollout.prompt_columns;
  out.n_response_tokens = out.response_mask.sum().item<int64_t>();
  return out;
}

TokenScores response_token_scores(CausalLM& model, const Rollout& rollout, double temperature,
                                  bool want_entropy) {
  int64_t P = rollout.prompt_columns, R = rollout.response_columns();
  // Only the R positions that predict response tokens go through the (large) output projection.
  auto hidden = model->forward(rollout.ids, rollout.mask, nullptr, /*want_logits=*/false).hidden;
  auto logits = model->logits_from_hidden(hidden.narrow(1, P - 1, R)).to(torch::kFloat32);  // (N, R, V)
  if (temperature > 0 && temperature != 1.0) logits = logits / temperature;
  auto log_probs = torch::log_softmax(logits, -1);
  auto tokens = rollout.ids.narrow(1, P, R).unsqueeze(-1);  // (N, R, 1)
  TokenScores scores;
  scores.logprobs = log_probs.gather(-1, tokens).squeeze(-1);
  if (want_entropy) scores.entropy = -(log_probs.exp() * log_probs).sum(-1);
  return scores;
}

torch::Tensor response_values(RewardModel& critic, const Rollout& rollout) {
  int64_t P = rollout.prompt_columns, R = rollout.response_columns();
  auto hidden = critic->backbone()->forward(rollout.ids, rollout.mask, nullptr, /*want_logits=*/false).hidden;
  hidden = hidden.narrow(1, P - 1, R);  // (N, R, D)
  // The head is registered under its checkpoint name (rm/reward_model.hpp): `score` for a linear head,
  // `reward_head` for the MLPs. Applied position-wise, it gives the reward of every prefix.
  auto children = critic->named_children();
  torch::Tensor values;
  if (auto* score = children.find("score")) {
    values = (*score)->as<torch::nn::Linear>()->forward(hidden);
  } else if (auto* head = children.find("reward_head")) {
    values = (*head)->as<torch::nn::Sequential>()->forward(hidden);
  } else {
    fail("critic: the reward model has no `score` or `reward_head` module");
  }
  return values.squeeze(-1).to(torch::kFloat32);
}

}  // namespace grm
