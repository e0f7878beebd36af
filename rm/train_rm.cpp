#include "rm/train_rm.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/autograd/autograd.h>

#include "cluster/comm.hpp"
#include "cluster/sharded_adamw.hpp"
#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text_io.hpp"
#include "core/torch_compat.hpp"
#include "policy/logprobs.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/losses.hpp"
#include "rm/reward_data.hpp"
#include "rm/reward_model.hpp"
#include "rm/scorer.hpp"
#include "rm/train_state.hpp"

namespace grm {
namespace {

namespace fs = std::filesystem;
namespace F = torch::nn::functional;

struct EncodedPair {
  EncodedSequence chosen, rejected;
  double margin = 0;
  bool tie = false;
};

// Each response rendered as the model reads it (its chat template, end of turn), so the reward is read
// where the turn ends and GRM's regularizer and DPO's reference take the same tokens as targets.
std::vector<EncodedPair> encode_pairs(const Tokenizer& tokenizer, const ChatFormat& format,
                                      const std::vector<PreferencePair>& pairs, int64_t max_length) {
  std::vector<EncodedPair> out(pairs.size());
  for (size_t i = 0; i < pairs.size(); ++i) {
    out[i].chosen = encode_chat_text(tokenizer, format.render(pairs[i].prompt, pairs[i].chosen), max_length);
    out[i].rejected =
        encode_chat_text(tokenizer, format.render(pairs[i].prompt, pairs[i].rejected), max_length);
    out[i].margin = pairs[i].margin;
    out[i].tie = pairs[i].tie;
  }
  return out;
}

// The pairs the chat format can render: a pair its template refuses (a system message Gemma's does not
// take, roles that do not alternate) is an error naming its record, or with on_bad_record: skip dropped
// and counted, like any other bad record.
std::vector<PreferencePair> renderable_pairs(std::vector<PreferencePair> pairs, const ChatFormat& format,
                                             const DataConfig& data) {
  if (!format.templated()) return pairs;
  std::vector<PreferencePair> kept;
  int64_t dropped = 0;
  std::string first_reason;
  for (auto& pair : pairs) {
    try {
      format.render(pair.prompt, pair.chosen);
      format.render(pair.prompt, pair.rejected);
      kept.push_back(std::move(pair));
    } catch (const std::exception& e) {
      std::string reason =
          fmt::format("{}: {} (data.chat_template: {})", pair.origin, e.what(), format.description());
      if (data.on_bad_record != "skip") fail("{}; or set data.on_bad_record: skip", reason);
      if (dropped++ == 0) first_reason = reason;
    }
  }
  if (dropped > 0)
    log::warn("{}: skipped {} pairs the chat template refuses; the first: {}", data.path, dropped,
              first_reason);
  return kept;
}

struct StepStats {
  double loss = 0, reward_loss = 0, reg_loss = 0, correct = 0, pairs = 0, reward_sum = 0, reward_sq = 0,
         tokens = 0;
  void add(const StepStats& o) {
    loss += o.loss, reward_loss += o.reward_loss, reg_loss += o.reg_loss, correct += o.correct,
        pairs += o.pairs;
    reward_sum += o.reward_sum, reward_sq += o.reward_sq, tokens += o.tokens;
  }
  void all_reduce(Comm& comm) {
    auto t = torch::tensor({loss, reward_loss, reg_loss, correct, pairs, reward_sum, reward_sq, tokens},
                           torch::kFloat64);
    comm.all_reduce_sum(t);
    auto a = t.accessor<double, 1>();
    loss = a[0], reward_loss = a[1], reg_loss = a[2], correct = a[3], pairs = a[4], reward_sum = a[5];
    reward_sq = a[6], tokens = a[7];
  }
};

class MemberTrainer {
 public:
  // init_seed: the head's initialization; seed: data order, dropout and noise (WARM's members share the
  // first and differ in the second; everywhere else they are one).
  MemberTrainer(const TrainRmConfig& config, const std::string& model_dir,
                const std::vector<EncodedPair>& train, const std::vector<EncodedPair>& heldout,
                int64_t pad_id, uint64_t init_seed, uint64_t seed, std::string member)
      : c_(config),
        train_(train),
        heldout_(heldout),
        pad_id_(pad_id),
        seed_(seed),
        member_(std::move(member)),
        comm_(Comm::world()),
        device_(training_device(config.device)) {
    RewardHeadOptions head{c_.rm.head, c_.rm.head_hidden, c_.rm.head_dropout};
    if (c_.rm.method == "inform") head.bottleneck = c_.rm.inform.latent;
    if (c_.rm.method == "odin") head.length_head = true;
    model_ = make_reward_model(model_dir, head, init_seed);
    if (seed != init_seed) torch::manual_seed(seed);
    if (c_.rm.method == "frozen") model_->freeze_backbone();
    if (c_.rm.finetune == "lora") model_->backbone()->enable_lora(c_.rm.lora);
    model_->backbone()->set_gradient_checkpointing(c_.gradient_checkpointing);
    model_->to(device_);
    model_->train();
    if (c_.rm.method == "grm" && c_.rm.reg == "dpo") {
      reference_ = load_causal_lm(
          model_dir,
          frozen_dtype(device_, c_.frozen_dtype == "auto" && !c_.bf16 ? "float32" : c_.frozen_dtype));
      reference_->to(device_);
      for (auto& p : reference_->parameters()) p.set_requires_grad(false);
    }
    for (auto& p : model_->parameters())
      if (p.requires_grad()) trainable_.push_back(p);
    if (c_.optim.shard == "none") {
      optimizer_ = std::make_unique<torch::optim::AdamW>(
          trainable_, torch::optim::AdamWOptions(c_.optim.lr).weight_decay(c_.optim.weight_decay));
    } else {
      sharded_ = std::make_unique<ShardedAdamW>(trainable_, c_.optim.lr, c_.optim.weight_decay,
                                                ShardedAdamW::shard_from_name(c_.optim.shard), comm_);
      log::info("{}optimizer state sharded over {} ranks ({}): {:.1f} MiB on this rank", tag(), comm_.size(),
                c_.optim.shard, double(sharded_->state_bytes()) / (1 << 20));
    }
    // ZeRO-2 reduce-scatters the gradients itself, instead of all-reducing them.
    if (c_.optim.shard != "gradients") reducer_ = std::make_unique<GradientAllReducer>(trainable_, comm_);
    int64_t global_batch = c_.optim.batch_size * comm_.size() * c_.optim.grad_accum;
    steps_per_epoch_ = std::max<int64_t>(1, int64_t(train_.size()) / global_batch);
    total_steps_ = steps_per_epoch_ * c_.optim.epochs;
    if (c_.optim.max_steps > 0) total_steps_ = std::min(total_steps_, c_.optim.max_steps);
  }

  // Runs to the end (or stop_after steps); returns the final metrics. export_to then writes the model.
  TrainRmResult run(const std::string& checkpoint_dir, const std::string& metrics_path, int64_t stop_after) {
    int64_t step = resume(checkpoint_dir);
    // Rows this member logged after the checkpoint would be logged again: drop them (other members' stay).
    if (comm_.is_root())
      keep_jsonl_records(metrics_path, [&](const nlohmann::json& row) {
        return row.value("member", std::string()) != member_ || row.value("step", int64_t(0)) <= step;
      });
    comm_.barrier();
    if (step > 0)
      log::info("{}resuming at step {} of {} from {}", tag(), step, total_steps_, checkpoint_dir);
    else
      log::info("{}training {} steps ({} pairs, {} per step, {} ranks)", tag(), total_steps_, train_.size(),
                c_.optim.batch_size * comm_.size() * c_.optim.grad_accum, comm_.size());
    StepStats window;
    auto window_start = std::chrono::steady_clock::now();
    double tokens_per_second = 0;
    int64_t executed = 0;
    while (step < total_steps_) {
      double lr = scheduled_learning_rate(c_.optim.lr, c_.optim.warmup_ratio, step, total_steps_,
                                          c_.optim.schedule == "cosine");
      if (sharded_) {
        sharded_->set_lr(lr);
        sharded_->zero_grad();
      } else {
        set_learning_rate(*optimizer_, lr);
        optimizer_->zero_grad();
      }
      StepStats stats;
      for (int64_t micro = 0; micro < c_.optim.grad_accum; ++micro) {
        if (micro + 1 == c_.optim.grad_accum && reducer_) reducer_->arm();
        auto [loss, micro_stats] = forward_loss(batch_indices(step, micro), /*train=*/true, step, micro);
        (loss / double(c_.optim.grad_accum)).backward();
        stats.add(micro_stats);
      }
      // Checked before the update, so a NaN never reaches the weights, the checkpoint or the export.
      check_finite(stats, step + 1);
      if (reducer_) reducer_->synchronize();
      if (sharded_) {
        sharded_->step(c_.optim.max_grad_norm);
      } else {
        if (c_.optim.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(trainable_, c_.optim.max_grad_norm);
        optimizer_->step();
      }
      ++step, ++executed;
      window.add(stats);
      bool last = step == total_steps_;
      if (step % c_.log_every == 0 || last) {
        window.all_reduce(comm_);
        double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
        tokens_per_second = window.tokens / std::max(seconds, 1e-9);
        log_metrics(metrics_path, step, lr, window, tokens_per_second);
        window = StepStats();
        window_start = std::chrono::steady_clock::now();
      }
      if ((c_.checkpoint_every > 0 && step % c_.checkpoint_every == 0) || last)
        save_checkpoint(checkpoint_dir, step);
      if (stop_after > 0 && executed >= stop_after && !last) return {step, 0, 0, tokens_per_second, false};
    }
    TrainRmResult result{step, 0, int64_t(heldout_.size()), tokens_per_second};
    result.heldout_accuracy = heldout_accuracy();
    return result;
  }

  // The mean and std of the trained model's rewards (dropout off) over the responses of the first `limit`
  // training pairs (0: all), each rank scoring its share: what record_reward_statistics finds with the
  // exported model, without rank 0 scoring them all while the others wait at the collective watchdog.
  RewardStatistics reward_statistics(int64_t limit) {
    torch::NoGradGuard no_grad;
    model_->eval();
    int64_t n = limit > 0 ? std::min<int64_t>(limit, int64_t(train_.size())) : int64_t(train_.size());
    int64_t B = std::max<int64_t>(1, c_.optim.batch_size);
    double count = 0, sum = 0, squares = 0;
    for (int64_t begin = comm_.rank() * B; begin < n; begin += B * comm_.size()) {
      std::vector<const EncodedSequence*> sequences;
      for (int64_t i = begin; i < std::min(begin + B, n); ++i) {
        sequences.push_back(&train_[size_t(i)].chosen);
        sequences.push_back(&train_[size_t(i)].rejected);
      }
      auto batch = collate(sequences, pad_id_);
      auto rewards = model_->forward(batch.ids.to(device_), batch.mask.to(device_)).rewards;
      rewards = rewards.to(torch::kCPU).to(torch::kFloat64);
      count += double(rewards.numel()), sum += rewards.sum().item<double>();
      squares += rewards.pow(2).sum().item<double>();
    }
    auto sums = torch::tensor({count, sum, squares}, torch::kFloat64);
    comm_.all_reduce_sum(sums);
    model_->train();
    return reward_statistics_from_sums(sums[0].item<double>(), sums[1].item<double>(),
                                       sums[2].item<double>());
  }

  // The trained model as a Hugging Face directory (root only; `dir` is a fresh partial directory).
  // `format`: the chat format's record (ChatFormat::to_metadata), so scorers read text as training did.
  void export_to(const std::string& dir, const nlohmann::json& format) {
    model_->to(torch::kCPU);
    model_->metadata = {{"method", c_.rm.method},      {"reg", c_.rm.reg},
                        {"alpha", c_.rm.alpha},        {"beta", c_.rm.beta},
                        {"max_length", c_.max_length}, {"seed", seed_}};
    model_->metadata.update(format);
    save_reward_model(model_, dir);
  }

 private:
  std::string tag() const { return member_.empty() ? "" : member_ + ": "; }

  void check_finite(const StepStats& stats, int64_t step) const {
    for (const auto& [value, term] :
         {std::pair{stats.reward_loss, "reward loss"}, {stats.reg_loss, "regularizer loss"}})
      if (!std::isfinite(value))
        fail(
            "{}step {}: the {} is {} on rank {}; training stopped and no model was exported (lower optim.lr, "
            "check the data's margins and rm.* weights)",
            tag(), step, term, value, comm_.rank());
  }

  // This rank's pairs of micro-batch `micro` of optimizer step `step`: the global batch of the step is a
  // window of the epoch's permutation, cut into (micro-batch, rank) slices.
  std::vector<size_t> batch_indices(int64_t step, int64_t micro) const {
    int64_t epoch = step / steps_per_epoch_, in_epoch = step % steps_per_epoch_;
    auto order = permutation(train_.size(), seed_ * 1000003ULL + uint64_t(epoch));
    int64_t B = c_.optim.batch_size, global = B * comm_.size() * c_.optim.grad_accum;
    int64_t begin = in_epoch * global + (micro * comm_.size() + comm_.rank()) * B;
    std::vector<size_t> out;
    for (int64_t i = 0; i < B; ++i) out.push_back(order[size_t(begin + i) % order.size()]);
    return out;
  }

  // InfoRM's eps for this rank's pairs of micro-batch `micro` of step `step`: the whole global batch's
  // draw, (chosen, rejected) x (pairs of the step) x d, from a generator seeded by (seed, step), of which
  // this rank takes its rows; so K ranks add the noise one rank would, and a resumed run the same again.
  torch::Tensor bottleneck_noise(int64_t step, int64_t micro, int64_t B) const {
    int64_t global = c_.optim.batch_size * comm_.size() * c_.optim.grad_accum, d = c_.rm.inform.latent;
    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed_ * 1000003ULL + uint64_t(step) + 1);
    auto eps = torch::randn({2, global, d}, generator, torch::kFloat32);
    int64_t begin = (micro * comm_.size() + comm_.rank()) * B;
    return eps.narrow(1, begin, B).reshape({2 * B, d}).to(device_);
  }

  // A penalty f on statistics of the global batch: f is evaluated on every rank's rows (columns
  // gathered, detached), differentiated there, and this rank's rows x enter as
  // size * <df/dx_mine, x_mine>, because the reducer averages gradients over ranks. So the value is f of
  // the global batch on every rank and the averaged gradient is f's; on one rank this is f itself.
  // Columns: (N) on every rank alike; those not requiring grad (lengths) are data.
  torch::Tensor global_batch_term(const std::vector<torch::Tensor>& columns,
                                  const std::function<torch::Tensor(const std::vector<torch::Tensor>&)>& f) {
    if (comm_.size() == 1) return f(columns);
    std::vector<torch::Tensor> gathered, leaves;
    for (const auto& column : columns) {
      int64_t n = column.size(0);
      auto all = torch::zeros({n * comm_.size()}, column.options().requires_grad(false));
      all.narrow(0, comm_.rank() * n, n).copy_(column.detach());
      comm_.all_reduce_sum(all);
      if (column.requires_grad()) all.set_requires_grad(true), leaves.push_back(all);
      gathered.push_back(all);
    }
    auto value = f(gathered);
    auto grads = torch::autograd::grad({value}, leaves);
    auto surrogate = torch::zeros({}, value.options());
    size_t leaf = 0;
    for (const auto& column : columns) {
      if (!column.requires_grad()) continue;
      int64_t n = column.size(0);
      surrogate =
          surrogate + double(comm_.size()) * (grads[leaf++].narrow(0, comm_.rank() * n, n) * column).sum();
    }
    return surrogate - surrogate.detach() + value.detach();
  }

  std::pair<torch::Tensor, StepStats> forward_loss(const std::vector<size_t>& indices, bool train,
                                                   int64_t step = 0, int64_t micro = 0) {
    const auto& pairs = train ? train_ : heldout_;
    std::vector<const EncodedSequence*> sequences;
    for (size_t i : indices) sequences.push_back(&pairs[i].chosen);
    for (size_t i : indices) sequences.push_back(&pairs[i].rejected);
    auto batch = collate(sequences, pad_id_);
    auto ids = batch.ids.to(device_), mask = batch.mask.to(device_),
         response = batch.response_mask.to(device_);
    int64_t B = int64_t(indices.size());
    bool grm = c_.rm.method == "grm";
    compat::CudaBf16Autocast autocast(c_.bf16 && device_.is_cuda());
    const auto& method = c_.rm.method;
    torch::Tensor noise;
    if (method == "inform" && train) noise = bottleneck_noise(step, micro, B);
    bool chunked = grm && model_->backbone()->config().n_vocab > c_.logprob_chunk;
    auto out = model_->forward(ids, mask, /*want_logits=*/grm && !chunked, noise);
    auto logprobs_of = [&](const torch::Tensor& logits, const torch::Tensor& hidden, CausalLM& lm) {
      return chunked ? response_logprobs_chunked(hidden, lm->output_weight(), ids, response, c_.logprob_chunk)
                     : response_logprobs(logits, ids, response);
    };
    // What the loss ranks: the reward, or ODIN's quality plus length rewards. The statistics (accuracy,
    // reward moments) are of the reward the exported model scores with.
    auto ranked = method == "odin" ? out.rewards + out.length_rewards : out.rewards;
    auto r_chosen = ranked.narrow(0, 0, B), r_rejected = ranked.narrow(0, B, B);
    std::vector<float> margins, ties;
    for (size_t i : indices)
      margins.push_back(float(pairs[i].margin)), ties.push_back(pairs[i].tie ? 1.f : 0.f);
    auto margin = torch::tensor(margins).to(device_), tie = torch::tensor(ties).to(device_);

    torch::Tensor reward_loss;
    if (c_.rm.method == "margin") {
      reward_loss = margin_loss(r_chosen, r_rejected, c_.rm.margin_scale * margin);
    } else if (c_.rm.method == "label_smooth") {
      reward_loss = label_smooth_loss(r_chosen, r_rejected, c_.rm.label_smoothing);
    } else {
      // Kept ties pull both rewards together: label smoothing at 0.5 for those pairs.
      auto d = r_chosen - r_rejected;
      auto per_pair = -F::logsigmoid(d) * (1 - tie) - 0.5 * (F::logsigmoid(d) + F::logsigmoid(-d)) * tie;
      reward_loss = per_pair.mean();
    }
    torch::Tensor loss = reward_loss, reg = torch::zeros({}, reward_loss.options());
    if (grm) {
      auto logp = logprobs_of(out.logits, out.hidden, model_->backbone());  // (2B)
      auto logp_c = logp.narrow(0, 0, B), logp_r = logp.narrow(0, B, B);
      if (c_.rm.reg == "sft") {
        reg = sft_reg(logp_c, c_.rm.beta);
      } else if (c_.rm.reg == "sft_nll") {
        reg = sft_nll_reg(logp_c);
      } else if (c_.rm.reg == "sft_nll_per_token") {
        reg = sft_nll_per_token_reg(logp_c, batch.response_tokens.narrow(0, 0, B).to(device_));
      } else if (c_.rm.reg == "dpo_noref") {
        reg = dpo_noref_reg(logp_c, logp_r, c_.rm.beta);
      } else {
        torch::Tensor ref;
        {
          torch::NoGradGuard no_grad;
          auto reference = reference_->forward(ids, mask, nullptr, /*want_logits=*/!chunked);
          // bf16 weights: log-softmax in fp32 (the chunked path computes in fp32 itself).
          ref = logprobs_of(
                    reference.logits.defined() ? reference.logits.to(torch::kFloat32) : reference.logits,
                    reference.hidden, reference_)
                    .to(torch::kFloat32);
        }
        reg = dpo_reg(logp_c, logp_r, ref.narrow(0, 0, B), ref.narrow(0, B, B), c_.rm.beta);
      }
      loss = grm_loss(reward_loss, reg, c_.rm.alpha);
    } else if (method == "bsr") {
      // Batch statistics only while training: ranks score unequal numbers of held-out batches.
      auto penalty = [&](const std::vector<torch::Tensor>& r) {
        return batch_sum_penalty(r[0], c_.rm.bsr_lambda);
      };
      reg = train ? global_batch_term({out.rewards}, penalty) : penalty({out.rewards});
    } else if (method == "eurus") {
      reg = eurus_penalty(r_chosen, r_rejected);
    } else if (method == "center") {
      reg = centering_penalty(r_chosen, r_rejected, c_.rm.center_coef);
    } else if (method == "inform") {
      reg = c_.rm.inform.beta * gaussian_kl(out.mu, out.logvar);
    } else if (method == "odin") {
      auto length = batch.response_tokens.to(device_).to(torch::kFloat32);
      auto penalty = [&](const std::vector<torch::Tensor>& x) {
        return odin_length_penalty(x[0], x[1], x[2]);
      };
      std::vector<torch::Tensor> columns = {out.rewards, out.length_rewards, length};
      reg = c_.rm.odin.length_coef * (train ? global_batch_term(columns, penalty) : penalty(columns)) +
            c_.rm.odin.ortho_coef *
                orthogonality_penalty(model_->head_input_weight(), model_->length_head_weight());
    }
    if (!grm) loss = reward_loss + reg;
    StepStats s;
    auto detached = out.rewards.detach().to(torch::kCPU).to(torch::kFloat64);
    s.loss = loss.item<double>() * double(B);
    s.reward_loss = reward_loss.item<double>() * double(B);
    s.reg_loss = reg.item<double>() * double(B);
    auto scored_chosen = out.rewards.narrow(0, 0, B), scored_rejected = out.rewards.narrow(0, B, B);
    s.correct = ((scored_chosen > scored_rejected).to(torch::kFloat32) * (1 - tie)).sum().item<double>();
    s.pairs = double(B) - tie.sum().item<double>();
    s.reward_sum = detached.sum().item<double>();
    s.reward_sq = detached.pow(2).sum().item<double>();
    s.tokens = double(batch.n_tokens);
    return {loss, s};
  }

  double heldout_accuracy() {
    if (heldout_.empty()) return 0;
    torch::NoGradGuard no_grad;
    model_->eval();
    StepStats total;
    int64_t B = std::max<int64_t>(1, c_.optim.batch_size);
    // Ranks split the held-out pairs; counts are summed.
    for (int64_t begin = comm_.rank() * B; begin < int64_t(heldout_.size()); begin += B * comm_.size()) {
      std::vector<size_t> indices;
      for (int64_t i = begin; i < std::min<int64_t>(begin + B, int64_t(heldout_.size())); ++i)
        indices.push_back(size_t(i));
      total.add(forward_loss(indices, /*train=*/false).second);
    }
    total.all_reduce(comm_);
    model_->train();
    return total.pairs > 0 ? total.correct / total.pairs : 0;
  }

  void log_metrics(const std::string& path, int64_t step, double lr, const StepStats& s,
                   double tokens_per_second) {
    if (!comm_.is_root()) return;
    double n = std::max(1.0, s.pairs), n_rewards = std::max(1.0, 2 * n);
    double mean = s.reward_sum / n_rewards, var = std::max(0.0, s.reward_sq / n_rewards - mean * mean);
    TrainMetricsRow row{step,
                        double(step) / double(steps_per_epoch_),
                        s.loss / n,
                        s.reward_loss / n,
                        s.reg_loss / n,
                        s.correct / n,
                        mean,
                        std::sqrt(var),
                        tokens_per_second,
                        lr,
                        member_};
    append_line(path, nlohmann::json(row).dump());
    log::info(
        "{}step {}/{} loss {:.4f} (reward {:.4f}, reg {:.4f}) acc {:.3f} reward {:.3f}±{:.3f} {:.0f} tok/s",
        tag(), step, total_steps_, s.loss / n, s.reward_loss / n, s.reg_loss / n, s.correct / n, mean,
        std::sqrt(var), tokens_per_second);
  }

  void save_checkpoint(const std::string& dir, int64_t step) {
    auto tensors = named_parameters_with_prefix(*model_, "");
    tensors["__rng_state__"] = cpu_rng_state();
    if (sharded_)
      grm::save_checkpoint(dir, step, tensors, {}, comm_, sharded_->state_slice());
    else
      grm::save_checkpoint(dir, step, tensors, {{"optimizer", optimizer_.get()}}, comm_);
  }

  int64_t resume(const std::string& dir) {
    NamedOptimizers optimizers;
    if (optimizer_) optimizers.push_back({"optimizer", optimizer_.get()});
    auto checkpoint = load_checkpoint(dir, optimizers);
    if (!checkpoint) return 0;
    if (sharded_ != nullptr && checkpoint->rank_tensors.empty())
      fail("{}: written with optim.shard: none; resume with it, or delete {} to restart",
           checkpoint->directory, dir);
    if (sharded_) sharded_->load_slices(checkpoint->rank_tensors, checkpoint->directory);
    restore_parameters(*model_, *checkpoint, "");
    set_cpu_rng_state(checkpoint->at("__rng_state__"));
    return checkpoint->step;
  }

  const TrainRmConfig& c_;
  const std::vector<EncodedPair>& train_;
  const std::vector<EncodedPair>& heldout_;
  int64_t pad_id_;
  uint64_t seed_;
  std::string member_;
  Comm& comm_;
  torch::Device device_;
  RewardModel model_{nullptr};
  CausalLM reference_{nullptr};
  std::vector<torch::Tensor> trainable_;
  std::unique_ptr<torch::optim::AdamW> optimizer_;  // shard: none
  std::unique_ptr<ShardedAdamW> sharded_;           // shard: optimizer | gradients
  std::unique_ptr<GradientAllReducer> reducer_;     // all but shard: gradients
  int64_t steps_per_epoch_ = 1, total_steps_ = 1;
};

// The held-out accuracy of a finished model directory (WARM's merge), on this process alone.
double merged_heldout_accuracy(const std::string& dir, const std::vector<EncodedPair>& heldout,
                               int64_t pad_id, const TrainRmConfig& config) {
  if (heldout.empty()) return 0;
  torch::NoGradGuard no_grad;
  auto model = load_reward_model(dir);
  double correct = 0, counted = 0;
  int64_t B = std::max<int64_t>(1, config.optim.batch_size);
  for (size_t begin = 0; begin < heldout.size(); begin += size_t(B)) {
    size_t end = std::min(heldout.size(), begin + size_t(B));
    std::vector<const EncodedSequence*> sequences;
    for (size_t i = begin; i < end; ++i) sequences.push_back(&heldout[i].chosen);
    for (size_t i = begin; i < end; ++i) sequences.push_back(&heldout[i].rejected);
    auto batch = collate(sequences, pad_id);
    auto rewards = model->forward(batch.ids, batch.mask).rewards;
    int64_t n = int64_t(end - begin);
    for (int64_t i = 0; i < n; ++i) {
      if (heldout[begin + size_t(i)].tie) continue;
      correct += rewards[i].item<double>() > rewards[n + i].item<double>();
      counted += 1;
    }
  }
  return counted > 0 ? correct / counted : 0;
}

}  // namespace

void to_json(nlohmann::json& out, const TrainMetricsRow& row) {
  out = {{"step", row.step},
         {"epoch", row.epoch},
         {"loss", row.loss},
         {"reward_loss", row.reward_loss},
         {"reg_loss", row.reg_loss},
         {"accuracy", row.accuracy},
         {"reward_mean", row.reward_mean},
         {"reward_std", row.reward_std},
         {"tokens_per_s", row.tokens_per_s},
         {"lr", row.lr}};
  if (!row.member.empty()) out["member"] = row.member;
}

void from_json(const nlohmann::json& in, TrainMetricsRow& row) {
  row.step = in.at("step").get<int64_t>();
  row.epoch = number_or_nan(in, "epoch");
  row.loss = number_or_nan(in, "loss");
  row.reward_loss = number_or_nan(in, "reward_loss");
  row.reg_loss = number_or_nan(in, "reg_loss");
  row.accuracy = number_or_nan(in, "accuracy");
  row.reward_mean = number_or_nan(in, "reward_mean");
  row.reward_std = number_or_nan(in, "reward_std");
  row.tokens_per_s = number_or_nan(in, "tokens_per_s");
  row.lr = number_or_nan(in, "lr");
  row.member = in.value("member", std::string());
}

uint64_t ensemble_member_seed(uint64_t seed, int64_t member) {
  if (seed >= (uint64_t(1) << 46) || member < 0 || member >= (int64_t(1) << 16))
    fail("ensemble member {} of seed {}: ensembles take seeds below 2^46 and at most 65536 members", member,
         seed);
  return (uint64_t(1) << 62) | (seed << 16) | uint64_t(member);
}

TrainRmResult train_reward_model(const TrainRmConfig& config, const std::string& out_dir,
                                 const std::string& config_dir, int64_t stop_after_steps) {
  auto& comm = Comm::world();
  int64_t threads = config.threads > 0 ? config.threads : default_thread_count(comm.size());
  set_compute_threads(int(threads));
  std::string model_dir = resolve_model_path(config.model, config_dir);
  auto tokenizer = load_tokenizer(model_dir);
  DataReport report;
  ChatFormat format = ChatFormat::resolve(config.data.chat, model_dir, *tokenizer, "data.chat_template");
  log::info("chat format: {}", format.description());
  auto pairs = renderable_pairs(read_preferences(config.data, &report), format, config.data);
  if (pairs.size() < 2)
    fail("{}: only {} usable preference pairs; need at least 2", config.data.path, pairs.size());
  auto order = permutation(pairs.size(), config.seed);
  size_t n_heldout = size_t(std::floor(config.eval_fraction * double(pairs.size())));
  std::vector<PreferencePair> train_pairs, heldout_pairs;
  for (size_t i = 0; i < order.size(); ++i)
    (i < n_heldout ? heldout_pairs : train_pairs).push_back(pairs[order[i]]);
  if (train_pairs.empty())
    fail("{}: eval_fraction {} holds out all {} pairs and leaves none to train on; lower eval_fraction",
         config.data.path, config.eval_fraction, pairs.size());
  auto train = encode_pairs(*tokenizer, format, train_pairs, config.max_length);
  auto heldout = encode_pairs(*tokenizer, format, heldout_pairs, config.max_length);
  int64_t pad_id = tokenizer->pad_id.value_or(0);

  fs::create_directories(out_dir);
  std::string metrics = (fs::path(out_dir) / "metrics.jsonl").string();
  // The model directory is complete or absent: written in a partial directory, renamed when done. An
  // ensemble's members are finished one by one in model.partial/, each complete or absent itself.
  // An ensemble keeps its members; WARM's are averaged into one model at the end (theirs are finished
  // in warm_members.partial/, as model.partial/ is the merge's own partial directory).
  bool warm = config.rm.method == "warm";
  auto model_out = fs::path(out_dir) / "model";
  auto staging = fs::path(out_dir) / (warm ? "warm_members.partial" : "model.partial");
  auto warm_members = fs::path(out_dir) / "warm_members";
  // Killed after WARM's members moved beside the merge but before the end: they are the merge's inputs
  // again (a finished merge is rewritten from them, the same).
  if (warm && comm.is_root() && !fs::exists(staging) && fs::exists(warm_members))
    fs::rename(warm_members, staging);
  comm.barrier();
  bool per_member = config.rm.method == "ensemble" || warm;  // trained as several members, one by one
  int64_t members = warm ? config.rm.warm.members : per_member ? config.rm.ensemble.members : 1;
  TrainRmResult result;
  double accuracy_sum = 0;
  for (int64_t k = 0; k < members; ++k) {
    auto member_dir = per_member ? staging / fmt::format("member_{}", k) : model_out;
    if (per_member && fs::exists(member_dir / "config.json")) {
      log::info("member {} already trained", k);
      continue;
    }
    auto checkpoint = fs::path(out_dir) / "checkpoint" / (per_member ? fmt::format("member_{}", k) : "main");
    uint64_t seed = per_member ? ensemble_member_seed(config.seed, k) : config.seed;
    MemberTrainer trainer(config, model_dir, train, heldout, pad_id, warm ? config.seed : seed, seed,
                          per_member ? fmt::format("member {}", k) : "");
    result = trainer.run(checkpoint.string(), metrics, stop_after_steps);
    if (!result.finished) return result;  // stopped early, as if killed
    // WARM's members need none: the merge gets its own.
    std::optional<RewardStatistics> statistics;
    if (!warm) statistics = trainer.reward_statistics(config.reward_stats_pairs);
    if (comm.is_root())
      write_directory_atomic(member_dir.string(), [&](const std::string& partial) {
        trainer.export_to(partial, format.to_metadata());
        copy_tokenizer_files(model_dir, partial);
        if (statistics) write_reward_statistics(partial, *statistics);
      });
    comm.barrier();
    accuracy_sum += result.heldout_accuracy;
  }
  if (comm.is_root()) {
    if (warm) {
      write_directory_atomic(model_out.string(), [&](const std::string& partial) {
        std::vector<std::string> dirs;
        for (int64_t k = 0; k < members; ++k)
          dirs.push_back((staging / fmt::format("member_{}", k)).string());
        average_reward_models(dirs, partial);
        copy_tokenizer_files(model_dir, partial);
        // The merge's reward statistics (members take theirs in training), over the same responses.
        std::vector<std::pair<std::string, std::string>> texts;
        for (size_t i = 0; i < train_pairs.size(); ++i) {
          if (config.reward_stats_pairs > 0 && int64_t(i) >= config.reward_stats_pairs) break;
          texts.emplace_back(train_pairs[i].prompt, train_pairs[i].chosen);
          texts.emplace_back(train_pairs[i].prompt, train_pairs[i].rejected);
        }
        record_reward_statistics(partial, texts);
      });
      // The members stay beside the merge, for a look at each (they were its inputs, not its parts).
      replace_directory(staging.string(), warm_members.string());
      result.heldout_accuracy = merged_heldout_accuracy(model_out.string(), heldout, pad_id, config);
    } else if (per_member) {
      copy_tokenizer_files(model_dir, staging.string());
      nlohmann::json e = {{"members", members},
                          {"combine", config.rm.ensemble.combine},
                          {"lambda", config.rm.ensemble.lambda},
                          {"beta", config.rm.ensemble.beta}};
      write_file_atomic((staging / "ensemble.json").string(), e.dump(2));
      replace_directory(staging.string(), model_out.string());
      result.heldout_accuracy = accuracy_sum / double(members);
    }
    nlohmann::json summary = {{"steps", result.steps},
                              {"heldout_accuracy", result.heldout_accuracy},
                              {"heldout_pairs", result.heldout_pairs},
                              {"train_pairs", train.size()},
                              {"tokens_per_s", result.tokens_per_second},
                              {"data",
                               {{"records", report.records},
                                {"pairs", report.pairs},
                                {"skipped", report.skipped},
                                {"ties_dropped", report.ties_dropped},
                                {"ties_kept", report.ties_kept}}}};
    write_file_atomic((fs::path(out_dir) / "summary.json").string(), summary.dump(2));
    log::info("held-out accuracy {:.4f} on {} pairs", result.heldout_accuracy, result.heldout_pairs);
  }
  return result;
}

}  // namespace grm
