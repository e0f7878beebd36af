#include "ppo/ppo.hpp"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include <nlohmann/json.hpp>

#include "cluster/comm.hpp"
#include "core/atomic_file.hpp"
#include "core/correlation.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text_io.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "ppo/ppo_math.hpp"
#include "ppo/rollout.hpp"
#include "rm/preference_data.hpp"
#include "rm/reward_model.hpp"
#include "rm/train_state.hpp"

namespace grm {

void PpoConfig::validate() const {
  // Both missing is caught when prompts are loaded: an experiment fills them in after this check.
  if (!prompt_file.empty() && !prompt_list.empty())
    fail("give the training prompts either as prompt_file (a JSONL file) or as an inline prompt_list");
  if (!eval_prompt_file.empty() && !eval_prompt_list.empty())
    fail(
        "give the held-out prompts either as eval_prompt_file (a JSONL file) or as an inline "
        "eval_prompt_list");
  auto positive = [](const char* name, int64_t value) {
    if (value < 1) fail("{} must be at least 1, got {}", name, value);
  };
  positive("rollout_batch", rollout_batch);
  positive("samples_per_prompt", samples_per_prompt);
  positive("minibatch_size", minibatch_size);
  positive("ppo_epochs", ppo_epochs);
  positive("max_new_tokens", max_new_tokens);
  positive("max_prompt_tokens", max_prompt_tokens);
  positive("n_eval_prompts", n_eval_prompts);
  positive("eval_samples_per_prompt", eval_samples_per_prompt);
  if (steps < 0) fail("steps must not be negative, got {}", steps);
  if (eval_every < 0 || checkpoint_every < 0)
    fail("eval_every and checkpoint_every must not be negative (0: off)");
  if (!(gamma >= 0 && gamma <= 1) || !(lambda >= 0 && lambda <= 1))
    fail("gamma and lambda must lie in [0, 1], got {} and {}", gamma, lambda);
  if (!(clip > 0) || !(value_clip > 0))
    fail("clip and value_clip must be positive, got {} and {}", clip, value_clip);
  // PPO's ratio needs the probabilities the tokens were drawn with; greedy decoding has none.
  if (!(sampling.temperature > 0))
    fail("temperature must be positive for PPO rollouts, got {}", sampling.temperature);
  if (kl.target > 0 && !(kl.horizon > 0)) fail("kl.horizon must be positive with an adaptive kl.target");
  if (critic.init == "rm" && proxy.model.empty())
    fail("critic.init: rm starts the critic from the proxy reward model, so proxy.model must name one");
}

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Independent, well-mixed seeds from (seed, index) pairs (splitmix64's finaliser).
uint64_t mix_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ULL * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// Streams of randomness, kept apart so that evaluating (or not) never changes training.
enum class Stream : uint64_t {
  prompts = 1,
  rollout = 2,
  minibatches = 3,
  eval = 4,
  critic_head = 5,
  torch = 6
};
uint64_t stream_seed(uint64_t seed, Stream stream, uint64_t index, uint64_t sub_index = 0) {
  return mix_seed(mix_seed(mix_seed(seed, uint64_t(stream)), index), sub_index);
}

struct Prompt {
  std::string text;
  std::vector<int64_t> ids;
};

std::string resolve_file(const std::string& path, const std::string& config_dir) {
  if (fs::exists(path) || config_dir.empty() || fs::path(path).is_absolute()) return path;
  auto beside = fs::path(config_dir) / path;
  return fs::exists(beside) ? beside.string() : path;
}

std::vector<Prompt> load_prompts(const std::string& file, const std::vector<std::string>& inline_prompts,
                                 const std::string& config_dir, const Tokenizer& tokenizer,
                                 const ChatFormat& format, int64_t max_tokens) {
  auto texts = file.empty() ? inline_prompts : read_prompt_file(resolve_file(file, config_dir));
  std::vector<Prompt> prompts;
  for (auto& text : texts) {
    ChatText rendered = format.render_prompt(text);
    auto ids = tokenizer.encode(rendered.prompt, rendered.add_special_tokens);
    // Keep the end of a long prompt (what the response continues) and its BOS.
    if (int64_t(ids.size()) > max_tokens) {
      bool keep_bos = (tokenizer.bos_id && ids.front() == *tokenizer.bos_id) || !rendered.bos_text.empty();
      auto first = ids.begin() + (keep_bos ? 1 : 0);
      ids.erase(first, first + (int64_t(ids.size()) - max_tokens));
    }
    if (ids.empty()) fail("prompt '{}' has no tokens (and the tokenizer adds no BOS); PPO needs one", text);
    prompts.push_back({std::move(text), std::move(ids)});
  }
  return prompts;
}

torch::Tensor as_tensor(const std::vector<double>& values, const torch::Device& device) {
  return torch::tensor(values, torch::kFloat64).to(torch::kFloat32).to(device);
}

// Sums over this rank's minibatch updates; averaged over updates and ranks when logged.
struct UpdateStats {
  double policy_loss = 0, value_loss = 0, entropy = 0, clipfrac = 0, approx_kl = 0, updates = 0;
};

class PpoTrainer {
 public:
  PpoTrainer(const PpoConfig& config, const std::string& policy_dir, const std::string& config_dir,
             const Tokenizer& tokenizer, ChatFormat format, std::vector<Prompt> train,
             std::vector<Prompt> eval)
      : c_(config),
        policy_dir_(policy_dir),
        tokenizer_(tokenizer),
        format_(std::move(format)),
        train_(std::move(train)),
        eval_(std::move(eval)),
        comm_(Comm::world()),
        device_(training_device(config.device)),
        kl_(config.kl.coef, config.kl.target, config.kl.horizon) {
    // LibTorch's global generator draws the LoRA initialisation and dropout masks: seeded here, so a run
    // does not depend on what the process did before, and saved in checkpoints.
    torch::manual_seed(stream_seed(c_.seed, Stream::torch, 0));
    actor_ = load_causal_lm(policy_dir);
    if (c_.finetune == "lora") actor_->enable_lora(c_.lora);
    actor_->to(device_);
    reference_ = load_causal_lm(policy_dir, frozen_dtype(device_, c_.frozen_dtype));
    for (auto& p : reference_->parameters()) p.set_requires_grad(false);
    reference_->to(device_);
    critic_ = make_critic(policy_dir, config_dir);
    critic_->to(device_);

    proxy_ = make_scorer(c_.proxy, config_dir);
    if (c_.reward_norm) {
      if (auto stats = proxy_->reward_statistics())
        log::info("reward_norm: by the proxy's training statistics (mean {:.4f}, std {:.4f})", stats->mean,
                  stats->std);
      else
        log::info("reward_norm: by running moments of the scores (the proxy recorded no statistics)");
    }
    if (c_.gold) gold_ = make_scorer(*c_.gold, config_dir);
    int64_t n_positions = actor_->config().n_positions;
    for (const auto* set : {&train_, &eval_})
      for (const auto& prompt : *set)
        if (int64_t(prompt.ids.size()) + c_.max_new_tokens > n_positions)
          fail("prompt '{}': {} tokens + max_new_tokens {} exceed the model's {} positions; lower {}",
               prompt.text.substr(0, 40), prompt.ids.size(), c_.max_new_tokens, n_positions,
               "max_prompt_tokens or max_new_tokens");

    std::vector<torch::Tensor> all;
    for (auto& p : actor_->parameters())
      if (p.requires_grad()) actor_params_.push_back(p), all.push_back(p);
    for (auto& p : critic_->parameters())
      if (p.requires_grad()) critic_params_.push_back(p), all.push_back(p);
    actor_optimizer_ = std::make_unique<torch::optim::AdamW>(
        actor_params_, torch::optim::AdamWOptions(c_.optim.lr).weight_decay(c_.optim.weight_decay));
    critic_optimizer_ = std::make_unique<torch::optim::AdamW>(
        critic_params_, torch::optim::AdamWOptions(critic_lr()).weight_decay(c_.optim.weight_decay));
    reducer_ = std::make_unique<GradientAllReducer>(all, comm_);
    n_rows_ = c_.rollout_batch * c_.samples_per_prompt;
    n_minibatches_ = (n_rows_ + c_.minibatch_size - 1) / c_.minibatch_size;
  }

  PpoResult run(const std::string& out_dir, int64_t stop_after) {
    auto checkpoint_dir = (fs::path(out_dir) / "checkpoint").string();
    auto metrics_path = (fs::path(out_dir) / "metrics.jsonl").string();
    auto curve_path = (fs::path(out_dir) / "ppo_curve.jsonl").string();
    int64_t step = resume(checkpoint_dir);
    if (comm_.is_root()) {
      keep_jsonl_before_step(metrics_path, step + 1);
      keep_jsonl_before_step(curve_path, step);  // the evaluation at `step` itself is made again below
    }
    comm_.barrier();
    if (step > 0)
      log::info("resuming at step {} of {} from {}", step, c_.steps, checkpoint_dir);
    else
      log::info("PPO: {} steps of {} prompts x {} samples on {} rank(s); {} train / {} held-out prompts",
                c_.steps, c_.rollout_batch, c_.samples_per_prompt, comm_.size(), train_.size(), eval_.size());
    PpoResult result;
    double samples = 0, tokens = 0, seconds = 0;
    int64_t executed = 0;
    while (step < c_.steps) {
      if (step == 0 || (c_.eval_every > 0 && step % c_.eval_every == 0))
        result.curve.push_back(evaluate(step, curve_path));
      auto start = std::chrono::steady_clock::now();
      json line = train_step(step);
      double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ++step, ++executed;
      samples += line["samples"].get<double>(), tokens += line["tokens"].get<double>(), seconds += elapsed;
      line["samples_per_s"] = line["samples"].get<double>() / std::max(elapsed, 1e-9);
      line["tokens_per_s"] = line["tokens"].get<double>() / std::max(elapsed, 1e-9);
      line["step"] = step;
      log_step(metrics_path, line);
      bool last = step == c_.steps;
      if ((c_.checkpoint_every > 0 && step % c_.checkpoint_every == 0) || last) save(checkpoint_dir, step);
      if (stop_after > 0 && executed >= stop_after && !last) {
        result.finished = false;
        break;
      }
    }
    result.steps = step;
    result.samples_per_second = samples / std::max(seconds, 1e-9);
    result.tokens_per_second = tokens / std::max(seconds, 1e-9);
    if (!result.finished) return result;
    result.curve.push_back(evaluate(step, curve_path));
    if (comm_.is_root()) save_outputs(out_dir, curve_path, result);
    comm_.barrier();
    return result;
  }

 private:
  double critic_lr() const { return c_.critic.lr > 0 ? c_.critic.lr : c_.optim.lr; }

  RewardModel make_critic(const std::string& policy_dir, const std::string& config_dir) {
    RewardModel critic{nullptr};
    if (c_.critic.init == "rm") {
      std::string rm_dir = resolve_model_path(c_.proxy.model, config_dir);
      if (fs::exists(fs::path(rm_dir) / "ensemble.json"))
        fail("critic.init: rm needs a single reward model, but {} is an ensemble; use critic.init: policy",
             rm_dir);
      critic = load_reward_model(rm_dir);
      if (critic->backbone()->config().n_vocab != actor_->config().n_vocab)
        fail(
            "critic.init: rm: {} has a vocabulary of {} tokens, the policy {}; the critic reads the policy's "
            "tokens, so it must share its tokenizer (use critic.init: policy)",
            rm_dir, critic->backbone()->config().n_vocab, actor_->config().n_vocab);
    } else {
      critic = make_reward_model(policy_dir, {c_.critic.head, c_.critic.head_hidden},
                                 stream_seed(c_.seed, Stream::critic_head, 0));
      // The output layer starts at zero, so the first advantages are the rewards rather than the noise
      // of a random head.
      torch::NoGradGuard no_grad;
      auto children = critic->named_children();
      if (auto* score = children.find("score")) {
        for (auto& p : (*score)->parameters()) p.zero_();
      } else if (auto* head = children.find("reward_head")) {
        auto& sequential = *(*head)->as<torch::nn::Sequential>();
        for (auto& p : sequential.ptr(sequential.size() - 1)->parameters()) p.zero_();
      }
    }
    if (c_.critic.finetune == "lora") critic->backbone()->enable_lora(c_.lora);
    if (c_.critic.finetune == "frozen") critic->freeze_backbone();
    return critic;
  }

  GenerateOptions generate_options(uint64_t seed) const {
    GenerateOptions options = generate_options_for(actor_->config(), tokenizer_);
    options.eos_ids = end_of_turn_ids(format_, tokenizer_, options.eos_ids);
    options.max_new_tokens = c_.max_new_tokens;
    options.sampling = c_.sampling;
    options.seed = seed;
    return options;
  }

  // Samples `samples_per_prompt` responses for each of the given prompts.
  Rollout sample(const std::vector<Prompt>& prompts, const std::vector<size_t>& indices,
                 int64_t samples_per_prompt, uint64_t seed) {
    std::vector<std::string> texts;
    std::vector<std::vector<int64_t>> ids;
    for (size_t i : indices)
      for (int64_t k = 0; k < samples_per_prompt; ++k)
        texts.push_back(prompts[i].text), ids.push_back(prompts[i].ids);
    actor_->eval();
    return sample_rollout(actor_, tokenizer_, texts, ids, generate_options(seed), format_);
  }

  // This rank's prompts of `step`: the step's window of the epoch's permutation, cut into rank slices.
  std::vector<size_t> step_prompts(int64_t step) const {
    int64_t global = c_.rollout_batch * comm_.size();
    int64_t per_epoch = std::max<int64_t>(1, int64_t(train_.size()) / global);
    auto order =
        permutation(train_.size(), stream_seed(c_.seed, Stream::prompts, uint64_t(step / per_epoch)));
    int64_t begin = (step % per_epoch) * global + comm_.rank() * c_.rollout_batch;
    std::vector<size_t> out;
    for (int64_t i = 0; i < c_.rollout_batch; ++i) out.push_back(order[size_t(begin + i) % order.size()]);
    return out;
  }

  // f over the rollout in chunks of minibatch_size rows, concatenated: the no-grad passes over a whole
  // rollout then need no more memory than a training minibatch. f: Rollout of n rows -> (n, R)
  torch::Tensor by_chunks(const Rollout& rollout,
                          const std::function<torch::Tensor(const Rollout&)>& f) const {
    std::vector<torch::Tensor> parts;
    for (int64_t begin = 0; begin < rollout.n_rows(); begin += c_.minibatch_size) {
      int64_t end = std::min(rollout.n_rows(), begin + c_.minibatch_size);
      parts.push_back(f(select_rows(rollout, torch::arange(begin, end, torch::kInt64))));
    }
    return torch::cat(parts);
  }
  torch::Tensor logprobs(CausalLM& model, const Rollout& rollout) const {
    return by_chunks(rollout, [&](const Rollout& part) {
      return response_token_scores(model, part, c_.sampling.temperature).logprobs;
    });
  }

  torch::Tensor kl_estimate(const torch::Tensor& logp, const torch::Tensor& ref_logp) const {
    return c_.kl.estimator == "k3" ? kl_k3(logp, ref_logp) : kl_k1(logp, ref_logp);
  }

  // One PPO step: rollouts, rewards, advantages, then ppo_epochs passes of minibatch updates. Returns the
  // step's metrics, reduced over ranks.
  json train_step(int64_t step) {
    auto start = std::chrono::steady_clock::now();
    auto rollout = sample(train_, step_prompts(step), c_.samples_per_prompt,
                          stream_seed(c_.seed, Stream::rollout, uint64_t(step), uint64_t(comm_.rank())));
    auto raw_scores = proxy_->score(rollout.texts);
    double score_sum = 0, score_squares = 0;
    for (double s : raw_scores) score_sum += s, score_squares += s * s;
    auto batch = torch::tensor({double(n_rows_), score_sum, score_squares}, torch::kFloat64);
    comm_.all_reduce_sum(batch);
    std::vector<double> scores = raw_scores;
    if (c_.reward_norm) {
      // The proxy's own training statistics when it recorded them (fixed, so a reward means the same at
      // every step); running moments of the scores seen so far otherwise.
      if (auto stats = proxy_->reward_statistics()) {
        for (double& s : scores) s = (s - stats->mean) / stats->std;
      } else {
        reward_moments_.add(batch[0].item<double>(), batch[1].item<double>(), batch[2].item<double>());
        for (double& s : scores) s = (s - reward_moments_.mean) / (reward_moments_.std() + 1e-8);
      }
    }

    auto mask = rollout.response_mask.to(torch::kFloat32);  // (N, R)
    torch::Tensor old_logp, old_values, advantages, returns, kl_per_sample, shaped_return;
    double kl_coef = kl_.coef();
    {
      torch::NoGradGuard no_grad;
      critic_->eval();
      old_logp = logprobs(actor_, rollout);
      auto ref_logp = logprobs(reference_, rollout);
      old_values = by_chunks(rollout, [&](const Rollout& part) { return response_values(critic_, part); });
      auto kl_tokens = kl_estimate(old_logp, ref_logp) * mask;
      kl_per_sample = kl_tokens.sum(1);
      auto rewards = shaped_rewards(kl_tokens, as_tensor(scores, device_), mask, kl_coef);
      shaped_return = rewards.sum(1);
      auto estimate = gae(rewards, old_values, mask, c_.gamma, c_.lambda);
      advantages = estimate.advantages;
      if (c_.whiten_advantages) {
        auto moments = masked_moments(advantages, mask);
        comm_.all_reduce_sum(moments);
        advantages = whiten(advantages, mask, moments);
      }
      returns = estimate.returns;
    }

    auto updates_start = std::chrono::steady_clock::now();
    UpdateStats stats;
    double lr_factor = 1;
    actor_->train();
    critic_->train();
    int64_t total_updates = c_.steps * c_.ppo_epochs * n_minibatches_;
    for (int64_t epoch = 0; epoch < c_.ppo_epochs; ++epoch) {
      auto order = permutation(size_t(n_rows_),
                               stream_seed(c_.seed, Stream::minibatches, uint64_t(step), uint64_t(epoch)));
      for (int64_t b = 0; b < n_minibatches_; ++b) {
        int64_t begin = b * c_.minibatch_size, end = std::min(n_rows_, begin + c_.minibatch_size);
        std::vector<int64_t> rows(order.begin() + begin, order.begin() + end);
        auto index = torch::tensor(rows, torch::kInt64).to(device_);
        auto part = select_rows(rollout, index);
        auto part_mask = mask.index_select(0, index);
        auto scores_now = response_token_scores(actor_, part, c_.sampling.temperature, /*want_entropy=*/true);
        auto values = response_values(critic_, part);
        auto part_old_logp = old_logp.index_select(0, index);
        auto policy_loss = clipped_policy_loss(scores_now.logprobs, part_old_logp,
                                               advantages.index_select(0, index), part_mask, c_.clip);
        auto value_loss = clipped_value_loss(values, old_values.index_select(0, index),
                                             returns.index_select(0, index), part_mask, c_.value_clip);
        auto entropy = masked_mean(scores_now.entropy, part_mask);
        auto loss = policy_loss + c_.vf_coef * value_loss - c_.entropy_coef * entropy;

        int64_t update = (step * c_.ppo_epochs + epoch) * n_minibatches_ + b;
        lr_factor = scheduled_learning_rate(1.0, c_.optim.warmup_ratio, update, total_updates,
                                            c_.optim.schedule == "cosine");
        set_learning_rate(*actor_optimizer_, c_.optim.lr * lr_factor);
        set_learning_rate(*critic_optimizer_, critic_lr() * lr_factor);
        actor_optimizer_->zero_grad();
        critic_optimizer_->zero_grad();
        reducer_->arm();
        loss.backward();
        reducer_->synchronize();
        if (c_.optim.max_grad_norm > 0) {
          torch::nn::utils::clip_grad_norm_(actor_params_, c_.optim.max_grad_norm);
          torch::nn::utils::clip_grad_norm_(critic_params_, c_.optim.max_grad_norm);
        }
        actor_optimizer_->step();
        critic_optimizer_->step();

        torch::NoGradGuard no_grad;
        auto log_ratio = scores_now.logprobs.detach() - part_old_logp;
        stats.policy_loss += policy_loss.item<double>();
        stats.value_loss += value_loss.item<double>();
        stats.entropy += entropy.item<double>();
        stats.clipfrac += masked_mean(((log_ratio.exp() - 1).abs() > c_.clip).to(torch::kFloat32), part_mask)
                              .item<double>();
        // k3 between the rollout policy and the current one: how far the updates moved it.
        stats.approx_kl += masked_mean(log_ratio.exp() - 1 - log_ratio, part_mask).item<double>();
        stats.updates += 1;
      }
    }

    auto end = std::chrono::steady_clock::now();
    // Sums over ranks: sample-level quantities over all samples, update averages over ranks.
    auto sums = torch::tensor(
        {double(n_rows_), double(rollout.n_response_tokens), score_sum,
         torch::tensor(scores, torch::kFloat64).sum().item<double>(), kl_per_sample.sum().item<double>(),
         shaped_return.sum().item<double>(), stats.policy_loss / stats.updates,
         stats.value_loss / stats.updates, stats.entropy / stats.updates, stats.clipfrac / stats.updates,
         stats.approx_kl / stats.updates},
        torch::kFloat64);
    comm_.all_reduce_sum(sums);
    auto s = sums.accessor<double, 1>();
    double n = s[0], ranks = double(comm_.size());
    kl_.update(s[4] / n, int64_t(n));
    return json{{"policy_loss", s[6] / ranks},
                {"value_loss", s[7] / ranks},
                {"entropy", s[8] / ranks},
                {"kl", s[4] / n},
                {"kl_coef", kl_coef},
                {"score", s[2] / n},
                {"reward", s[3] / n},
                {"return", s[5] / n},
                {"clipfrac", s[9] / ranks},
                {"approx_kl", s[10] / ranks},
                {"response_length", s[1] / n},
                {"lr", c_.optim.lr * lr_factor},
                {"rollout_s", std::chrono::duration<double>(updates_start - start).count()},
                {"update_s", std::chrono::duration<double>(end - updates_start).count()},
                {"samples", n},
                {"tokens", s[1]}};
  }

  void log_step(const std::string& path, const json& line) {
    if (!comm_.is_root()) return;
    append_line(path, line.dump());
    log::info(
        "step {}/{} score {:.3f} kl {:.3f} (coef {:.4f}) return {:.3f} | policy {:.4f} value {:.4f} entropy "
        "{:.3f} clip {:.3f} | {:.1f} samples/s {:.0f} tokens/s",
        line["step"].get<int64_t>(), c_.steps, line["score"].get<double>(), line["kl"].get<double>(),
        line["kl_coef"].get<double>(), line["return"].get<double>(), line["policy_loss"].get<double>(),
        line["value_loss"].get<double>(), line["entropy"].get<double>(), line["clipfrac"].get<double>(),
        line["samples_per_s"].get<double>(), line["tokens_per_s"].get<double>());
  }

  // The held-out evaluation: the same prompts and the same sampling seed every time, so differences
  // between points come from the policy, not from the draw.
  EvalPoint evaluate(int64_t step, const std::string& curve_path) {
    auto start = std::chrono::steady_clock::now();
    std::vector<size_t> mine;
    int64_t n_prompts = std::min<int64_t>(c_.n_eval_prompts, int64_t(eval_.size()));
    for (int64_t i = comm_.rank(); i < n_prompts; i += comm_.size()) mine.push_back(size_t(i));
    double n = 0, proxy = 0, gold = 0, kl = 0, length = 0;
    // Moments of (length, proxy, gold) over the samples, for the length correlations: sums of x, x^2
    // and of each reward times length, added over ranks.
    double l2 = 0, proxy2 = 0, gold2 = 0, proxy_l = 0, gold_l = 0;
    // Each rank fills its prompts' means; the all-reduce sum then holds every prompt's once.
    auto per_prompt = torch::zeros({2, std::max<int64_t>(n_prompts, 1)}, torch::kFloat64);
    auto per_prompt_sums = per_prompt.accessor<double, 2>();
    // And every sample's (proxy, gold), at row prompt * k + sample, for the proxy-gold rank correlation.
    int64_t k = c_.eval_samples_per_prompt;
    auto per_sample = torch::zeros({2, std::max<int64_t>(n_prompts * k, 1)}, torch::kFloat64);
    auto per_sample_scores = per_sample.accessor<double, 2>();
    auto sample_row = [&](size_t j) { return int64_t(mine[j / size_t(k)]) * k + int64_t(j % size_t(k)); };
    double share = 1.0 / double(std::max<int64_t>(1, c_.eval_samples_per_prompt));
    if (!mine.empty()) {
      auto rollout = sample(eval_, mine, c_.eval_samples_per_prompt,
                            stream_seed(c_.seed, Stream::eval, uint64_t(comm_.rank())));
      torch::NoGradGuard no_grad;
      kl = (kl_k1(logprobs(actor_, rollout), logprobs(reference_, rollout)) *
            rollout.response_mask.to(torch::kFloat32))
               .sum()
               .item<double>();
      auto lengths = rollout.response_mask.sum(1).to(torch::kCPU).to(torch::kFloat64);
      auto row_length = lengths.accessor<double, 1>();
      for (int64_t j = 0; j < lengths.size(0); ++j) l2 += row_length[j] * row_length[j];
      // Rows are prompt-major: row j belongs to mine[j / eval_samples_per_prompt].
      auto proxy_scores = proxy_->score(rollout.texts);
      for (size_t j = 0; j < proxy_scores.size(); ++j) {
        proxy += proxy_scores[j];
        proxy2 += proxy_scores[j] * proxy_scores[j], proxy_l += proxy_scores[j] * row_length[int64_t(j)];
        per_sample_scores[0][sample_row(j)] = proxy_scores[j];
        per_prompt_sums[0][int64_t(mine[j / size_t(c_.eval_samples_per_prompt)])] += share * proxy_scores[j];
      }
      if (gold_) {
        auto gold_scores = gold_->score(rollout.texts);
        for (size_t j = 0; j < gold_scores.size(); ++j) {
          gold += gold_scores[j];
          gold2 += gold_scores[j] * gold_scores[j], gold_l += gold_scores[j] * row_length[int64_t(j)];
          per_sample_scores[1][sample_row(j)] = gold_scores[j];
          per_prompt_sums[1][int64_t(mine[j / size_t(c_.eval_samples_per_prompt)])] += share * gold_scores[j];
        }
      }
      n = double(rollout.n_rows());
      length = double(rollout.n_response_tokens);
    }
    auto sums =
        torch::tensor({n, proxy, gold, kl, length, l2, proxy2, gold2, proxy_l, gold_l}, torch::kFloat64);
    comm_.all_reduce_sum(sums);
    comm_.all_reduce_sum(per_prompt);
    if (gold_) comm_.all_reduce_sum(per_sample);
    auto s = sums.accessor<double, 1>();
    EvalPoint point{step, s[3] / s[0], s[1] / s[0], s[4] / s[0], std::nullopt, int64_t(s[0]), {}, {}};
    point.proxy_length_corr = pearson_from_sums(s[0], s[4], s[1], s[5], s[6], s[8]);
    if (gold_) {
      point.gold_length_corr = pearson_from_sums(s[0], s[4], s[2], s[5], s[7], s[9]);
      auto all = per_sample.narrow(1, 0, n_prompts * k).contiguous();
      auto row = [&](int64_t i) {
        auto r = all[i];
        return std::vector<double>(r.data_ptr<double>(), r.data_ptr<double>() + r.numel());
      };
      point.proxy_gold_spearman = spearman(row(0), row(1));
    }
    auto summed = per_prompt.accessor<double, 2>();
    for (int64_t i = 0; i < n_prompts; ++i) point.proxy_per_prompt.push_back(summed[0][i]);
    if (gold_) {
      point.gold = s[2] / s[0];
      for (int64_t i = 0; i < n_prompts; ++i) point.gold_per_prompt.push_back(summed[1][i]);
    }
    if (comm_.is_root()) {
      append_line(curve_path, json(point).dump());
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      log::info("eval at step {}: proxy {:.4f} gold {} kl {:.4f} length {:.1f} ({} samples, {:.1f} s)", step,
                point.proxy, point.gold ? fmt::format("{:.4f}", *point.gold) : "-", point.kl, point.length,
                s[0], seconds);
    }
    return point;
  }

  void save(const std::string& dir, int64_t step) {
    auto tensors = named_parameters_with_prefix(*actor_, "actor.");
    tensors.merge(named_parameters_with_prefix(*critic_, "critic."));
    tensors["__rng_state__"] = cpu_rng_state();
    tensors["ppo_state"] = torch::tensor(
        {kl_.coef(), reward_moments_.count, reward_moments_.mean, reward_moments_.m2}, torch::kFloat64);
    save_checkpoint(dir, step, tensors, optimizers(), comm_);
  }

  int64_t resume(const std::string& dir) {
    auto checkpoint = load_checkpoint(dir, optimizers());
    if (!checkpoint) return 0;
    restore_parameters(*actor_, *checkpoint, "actor.");
    restore_parameters(*critic_, *checkpoint, "critic.");
    set_cpu_rng_state(checkpoint->at("__rng_state__"));
    auto state = checkpoint->at("ppo_state").to(torch::kFloat64);
    auto a = state.accessor<double, 1>();
    kl_ = KlController(a[0], c_.kl.target, c_.kl.horizon);
    reward_moments_ = RunningMoments{a[1], a[2], a[3]};
    return checkpoint->step;
  }

  NamedOptimizers optimizers() {
    return {{"actor_optimizer", actor_optimizer_.get()}, {"critic_optimizer", critic_optimizer_.get()}};
  }

  void save_outputs(const std::string& out_dir, const std::string& curve_path, const PpoResult& result) {
    auto policy_dir = fs::path(out_dir) / "policy";
    actor_->to(torch::kCPU);
    if (actor_->has_lora()) actor_->merge_lora();
    save_causal_lm(actor_, policy_dir.string());
    copy_tokenizer_files(policy_dir_, policy_dir.string());
    std::vector<json> curve;
    for (const auto& line : read_lines(curve_path)) {
      json record = json::parse(line, nullptr, false);
      if (!record.is_discarded()) curve.push_back(record);
    }
    json summary = {{"steps", result.steps},
                    {"initial", curve.empty() ? json(nullptr) : curve.front()},
                    {"final", curve.empty() ? json(nullptr) : curve.back()},
                    {"samples_per_s", result.samples_per_second},
                    {"tokens_per_s", result.tokens_per_second}};
    write_file_atomic((fs::path(out_dir) / "summary.json").string(), summary.dump(2) + "\n");
    log::info("saved the policy to {}", policy_dir.string());
  }

  const PpoConfig& c_;
  std::string policy_dir_;
  const Tokenizer& tokenizer_;
  ChatFormat format_;
  std::vector<Prompt> train_, eval_;
  Comm& comm_;
  torch::Device device_;
  CausalLM actor_{nullptr}, reference_{nullptr};
  RewardModel critic_{nullptr};
  std::unique_ptr<Scorer> proxy_, gold_;
  std::vector<torch::Tensor> actor_params_, critic_params_;
  std::unique_ptr<torch::optim::AdamW> actor_optimizer_, critic_optimizer_;
  std::unique_ptr<GradientAllReducer> reducer_;
  KlController kl_;
  RunningMoments reward_moments_;
  int64_t n_rows_ = 1, n_minibatches_ = 1;
};

}  // namespace

PpoResult train_ppo(const PpoConfig& config, const std::string& out_dir, const std::string& config_dir,
                    int64_t stop_after_steps) {
  config.validate();
  auto& comm = Comm::world();
  int64_t threads = config.threads > 0 ? config.threads : default_thread_count(comm.size());
  set_compute_threads(int(threads));
  std::string policy_dir = resolve_model_path(config.policy, config_dir);
  auto tokenizer = load_tokenizer(policy_dir);
  ChatFormat format =
      ChatFormat::resolve({config.chat_template, "auto"}, policy_dir, *tokenizer, "chat_template");
  if (format.templated()) log::info("policy chat format: {}", format.description());
  auto train = load_prompts(config.prompt_file, config.prompt_list, config_dir, *tokenizer, format,
                            config.max_prompt_tokens);
  auto eval = load_prompts(config.eval_prompt_file, config.eval_prompt_list, config_dir, *tokenizer, format,
                           config.max_prompt_tokens);
  fs::create_directories(out_dir);
  PpoTrainer trainer(config, policy_dir, config_dir, *tokenizer, std::move(format), std::move(train),
                     std::move(eval));
  return trainer.run(out_dir, stop_after_steps);
}

void to_json(json& out, const EvalPoint& point) {
  out = {{"step", point.step},     {"kl", point.kl},
         {"proxy", point.proxy},   {"gold", point.gold ? json(*point.gold) : json(nullptr)},
         {"length", point.length}, {"samples", point.samples}};
  out["proxy_length_corr"] =
      std::isnan(point.proxy_length_corr) ? json(nullptr) : json(point.proxy_length_corr);
  out["gold_length_corr"] = std::isnan(point.gold_length_corr) ? json(nullptr) : json(point.gold_length_corr);
  out["proxy_gold_spearman"] =
      std::isnan(point.proxy_gold_spearman) ? json(nullptr) : json(point.proxy_gold_spearman);
  out["proxy_per_prompt"] = point.proxy_per_prompt;
  out["gold_per_prompt"] = point.gold_per_prompt;
}

void from_json(const json& in, EvalPoint& point) {
  point.step = in.at("step").get<int64_t>();
  point.kl = number_or_nan(in, "kl");
  point.proxy = number_or_nan(in, "proxy");
  point.length = number_or_nan(in, "length");
  double gold = number_or_nan(in, "gold");
  point.gold = std::isnan(gold) ? std::nullopt : std::optional<double>(gold);
  point.samples = in.value("samples", int64_t(0));
  point.proxy_length_corr = number_or_nan(in, "proxy_length_corr");
  point.gold_length_corr = number_or_nan(in, "gold_length_corr");
  point.proxy_gold_spearman = number_or_nan(in, "proxy_gold_spearman");
  point.proxy_per_prompt = in.value("proxy_per_prompt", std::vector<double>{});
  point.gold_per_prompt = in.value("gold_per_prompt", std::vector<double>{});
}

}  // namespace grm
