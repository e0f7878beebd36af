// Reward-model training: GRM and every baseline, one rank or data-parallel under mpirun.
//   method bt | margin | label_smooth      the reward loss alone
//   method frozen                          bt with the backbone frozen (only the head trains)
//   method ensemble                        `ensemble.members` bt models, seeds ensemble_member_seed(seed, k)
//   method grm                             (1 - alpha) * bt + alpha * reg, reg in sft | sft_nll |
//                                          sft_nll_per_token | dpo_noref | dpo (rm/losses.hpp)
//   method bsr | eurus | center            bt + the method's penalty on the rewards (rm/losses.hpp)
//   method inform                          bt through InfoRM's bottleneck head + beta * its KL
//   method odin                            bt on quality + length heads, ODIN's length and orthogonality
//                                          penalties; the exported model scores with the quality head
//   method warm                            `warm.members` bt models from one initialization (the run's
//                                          seed) with their own data orders, merged by weight averaging
// Penalties on statistics of a batch (BSR's mean reward, ODIN's correlations) are taken over the global
// batch, every rank's pairs, so K ranks with batch B train as one rank with batch K * B.
// Each rank reads a disjoint, deterministic shard of every epoch's seeded permutation; gradients are
// averaged in buckets (cluster/comm.hpp). AdamW, linear warm-up then cosine (or constant), clipping and
// accumulation. Checkpoints (weights, optimizer, step, RNG) are written atomically every
// checkpoint_every steps, and a restarted run resumes from the last one to the same final parameters.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/config.hpp"
#include "policy/lora.hpp"
#include "rm/preference_data.hpp"

namespace grm {

// How an ensemble's member rewards r_1..r_K become one (rm/scorer.hpp combine_ensemble):
//   mean; min (WCO, Coste et al.); mean_minus_std: mean - lambda * std; uwo: mean - lambda * variance
//   (UWO, Coste et al.); softmin: -beta * log mean exp(-r_k / beta), the mean as beta -> inf, the min as
//   beta -> 0.
struct EnsembleConfig {
  int64_t members = 3;
  std::string combine = "mean";
  double lambda = 1.0;
  double beta = 1.0;
  template <class V>
  void visit(V& v) {
    v("members", members, Range::at_least(1));
    v("combine", combine, Choices{"mean", "min", "mean_minus_std", "uwo", "softmin"});
    v("lambda", lambda, Range::at_least(0));
    v("beta", beta, Range::positive());
  }
};

// InfoRM's bottleneck: latent width d and the KL weight beta (the paper's 128 and 0.1).
struct InfoRmConfig {
  int64_t latent = 128;
  double beta = 0.1;
  template <class V>
  void visit(V& v) {
    v("latent", latent, Range::at_least(1));
    v("beta", beta, Range::at_least(0));
  }
};

// ODIN's weights on its length-correlation and head-orthogonality penalties (the paper's 1 and 1).
struct OdinConfig {
  double length_coef = 1.0;
  double ortho_coef = 1.0;
  template <class V>
  void visit(V& v) {
    v("length_coef", length_coef, Range::at_least(0));
    v("ortho_coef", ortho_coef, Range::at_least(0));
  }
};

struct WarmConfig {
  int64_t members = 3;  // models averaged
  template <class V>
  void visit(V& v) {
    v("members", members, Range::at_least(1));
  }
};

struct RmConfig {
  std::string method = "bt";
  std::string reg = "sft";
  double alpha = 0.01;
  double beta = 0.1;
  double label_smoothing = 0.1;
  double margin_scale = 1.0;  // margin loss uses margin_scale * data margin
  double bsr_lambda = 1e-3;   // bsr: lambda * B * mean(r)^2
  double center_coef = 0.01;  // center: coef * mean((r_c + r_r)^2), TRL's center_rewards_coefficient
  InfoRmConfig inform;
  OdinConfig odin;
  WarmConfig warm;
  std::string head = "mlp";
  int64_t head_hidden = 1024;
  double head_dropout = 0.1;      // on the hidden state the head reads, while training (the GRM reference)
  std::string finetune = "full";  // full | lora; a frozen backbone is method frozen, a baseline of its own
  LoraConfig lora;
  EnsembleConfig ensemble;
  template <class V>
  void visit(V& v) {
    v("method", method,
      Choices{"bt", "margin", "label_smooth", "ensemble", "frozen", "grm", "bsr", "eurus", "center", "inform",
              "odin", "warm"});
    v("reg", reg, Choices{"sft", "sft_nll", "sft_nll_per_token", "dpo_noref", "dpo"});
    v("alpha", alpha, Range::closed(0, 1));  // (1 - α) L_reward + α L_reg
    v("beta", beta, Range::positive());
    v("label_smoothing", label_smoothing, Range::half_open(0, 0.5));  // 0.5: no preference left
    v("margin_scale", margin_scale);
    v("bsr_lambda", bsr_lambda, Range::at_least(0));
    v("center_coef", center_coef, Range::at_least(0));
    v("inform", inform);
    v("odin", odin);
    v("warm", warm);
    v("head", head, Choices{"linear", "mlp", "mlp2"});
    v("head_hidden", head_hidden, Range::at_least(1));
    v("head_dropout", head_dropout, Range::half_open(0, 1));
    v("finetune", finetune, Choices{"full", "lora"});
    v.renamed("finetune: frozen", "method: frozen");
    v("lora", lora);
    v("ensemble", ensemble);
  }
};

// AdamW, its learning-rate schedule (linear warm-up, then held or decayed by cosine to 0 at the last
// optimizer step; rm/train_state.hpp) and gradient-norm clipping: reward-model training and PPO share it.
struct AdamWConfig {
  double lr = 1e-4;
  double weight_decay = 0.0;
  double warmup_ratio = 0.05;       // of all optimizer steps
  std::string schedule = "cosine";  // constant | cosine
  double max_grad_norm = 1.0;       // 0: no clipping
  template <class V>
  void visit(V& v) {
    v("lr", lr, Range::positive());
    v("weight_decay", weight_decay, Range::at_least(0));
    v("warmup_ratio", warmup_ratio, Range::closed(0, 1));
    v("schedule", schedule, Choices{"constant", "cosine"});
    v("max_grad_norm", max_grad_norm, Range::at_least(0));
  }
};

// Reward-model training's AdamW and batches, all keys on one level (`optim: {lr, epochs, ...}`).
struct OptimConfig : AdamWConfig {
  int64_t epochs = 1;
  int64_t batch_size = 8;  // pairs per rank per micro-batch
  int64_t grad_accum = 1;
  int64_t max_steps = 0;  // 0: as many as the epochs give
  // ZeRO over the data-parallel ranks (cluster/sharded_adamw.hpp): none; optimizer (each rank keeps AdamW's
  // moments for 1/K of the parameters); gradients (and receives only its 1/K of the gradients, by
  // reduce-scatter). The same updates as none; checkpoints resume on any number of ranks.
  std::string shard = "none";
  template <class V>
  void visit(V& v) {
    AdamWConfig::visit(v);
    v("shard", shard, Choices{"none", "optimizer", "gradients"});
    v("epochs", epochs, Range::at_least(1));  // fewer would export an untrained model
    v("batch_size", batch_size, Range::at_least(1));
    v("grad_accum", grad_accum, Range::at_least(1));
    v("max_steps", max_steps, Range::at_least(0));
  }
};

struct TrainRmConfig {
  std::string model = "tinystories-656k";  // directory or name (policy/model_path.hpp)
  int64_t max_length = 256;
  uint64_t seed = 0;
  DataConfig data;
  double eval_fraction = 0.1;  // held out from data for accuracy at the end
  RmConfig rm;
  OptimConfig optim;
  // The reward statistics recorded into the exported model (rm/scorer.hpp record_reward_statistics) are
  // taken over the responses of this many training pairs, the first of the seeded order (0: all).
  int64_t reward_stats_pairs = 0;
  // GRM's regularizer log-probs: a vocabulary larger than this is projected this many rows at a time over
  // the response tokens only (policy/logprobs.hpp), never as (B, T, V) logits; smaller ones take the full
  // logits, which are small.
  int64_t logprob_chunk = 8192;
  int64_t log_every = 10;
  int64_t checkpoint_every = 50;
  int64_t threads = 0;          // LibTorch threads per rank; 0: cores / ranks
  std::string device = "auto";  // auto | cpu | cuda
  bool bf16 = true;             // bf16 autocast of forward passes on CUDA (fp32 master weights)
  // Recompute each layer's activations in backward instead of keeping them
  // (policy/activation_checkpoint.hpp): activation memory of one layer instead of all, for about one more
  // forward pass.
  bool gradient_checkpointing = false;
  // DPO's reference model's storage (rm/train_state.hpp frozen_dtype): auto = bf16 on GPUs with bf16
  // autocast (which computes its passes in bf16 anyway), fp32 otherwise.
  std::string frozen_dtype = "auto";
  template <class V>
  void visit(V& v) {
    v("model", model);
    v("max_length", max_length, Range::at_least(2));  // a prompt token and a response token
    v("seed", seed);
    v("data", data);
    v("eval_fraction", eval_fraction, Range::half_open(0, 1));
    v("rm", rm);
    v("optim", optim);
    v("reward_stats_pairs", reward_stats_pairs, Range::at_least(0));
    v("logprob_chunk", logprob_chunk, Range::at_least(1));
    v("log_every", log_every, Range::at_least(1));
    v("checkpoint_every", checkpoint_every, Range::at_least(0));  // 0: only at the end
    v("threads", threads, Range::at_least(0));
    v("device", device, Choices{"auto", "cpu", "cuda"});
    v("bf16", bf16);
    v("gradient_checkpointing", gradient_checkpointing);
    v("frozen_dtype", frozen_dtype, Choices{"auto", "float32", "bfloat16"});
  }
};

struct TrainRmResult {
  int64_t steps = 0;
  double heldout_accuracy = 0;
  int64_t heldout_pairs = 0;
  double tokens_per_second = 0;
  bool finished = true;  // false when stopped early by stop_after_steps
};

// One line of metrics.jsonl, every log_every optimizer steps: means over the pairs since the last line.
struct TrainMetricsRow {
  int64_t step = 0;  // optimizer steps done
  double epoch = 0;  // step / steps per epoch
  double loss = 0, reward_loss = 0, reg_loss = 0;
  double accuracy = 0;                     // of the training pairs, ranked right
  double reward_mean = 0, reward_std = 0;  // over chosen and rejected rewards
  double tokens_per_s = 0, lr = 0;
  std::string member;  // "member K" of an ensemble; empty otherwise, and then not written
};
// The keys are the field names. "step" is required; a missing number reads as NaN (core/text_io.hpp).
void to_json(nlohmann::json& json, const TrainMetricsRow& row);
void from_json(const nlohmann::json& json, TrainMetricsRow& row);

// Trains into out_dir: model/ (the reward model, HF layout, tokenizer files beside it, its rewards' mean
// and std over the training responses in config.json; an ensemble has
// member_K/ folders and ensemble.json; WARM's is the merge, its members in warm_members/member_K/),
// metrics.jsonl, summary.json, checkpoint/.
// config_dir: the config file's folder, for model lookup. stop_after_steps (tests): return after that many
// optimizer steps without finishing, as a killed run would.
TrainRmResult train_reward_model(const TrainRmConfig& config, const std::string& out_dir,
                                 const std::string& config_dir = "", int64_t stop_after_steps = 0);

// The seed of ensemble member k of a run with `seed`: bit 62 set, seed and k packed below it (seed < 2^46,
// k < 2^16; anything else is an error). So no member shares a seed with a plain run of any seed below
// 2^62, such as the `bt` proxy beside the ensemble, nor with a member of another seed's ensemble.
uint64_t ensemble_member_seed(uint64_t seed, int64_t member);

}  // namespace grm
