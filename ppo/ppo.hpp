// PPO against a proxy reward, evaluated by a gold reward: the over-optimization experiment's RL half.
// May include cluster/, policy/ and rm/; nothing includes it but pipeline/.
//
// Each step, every rank samples `samples_per_prompt` responses for its own `rollout_batch` prompts (a
// disjoint shard of a seeded permutation of the training prompts), scores them with the proxy, and
// trains:
//   actor      the policy (all weights, or LoRA adapters), started from `policy`
//   reference  a frozen copy of the initial policy
//   critic     a reward model whose head is read at every position: a new linear head on its own copy
//              of the policy (critic.init: policy), or the proxy reward model itself (critic.init: rm)
//   reward     proxy score at the response's last token (optionally normalised by running statistics)
//              minus kl.coef * KL per token (estimator k1 or k3; fixed, or adaptive toward kl.target)
//   update     GAE(gamma, lambda), advantages whitened over the batch of all ranks (unless turned off),
//              clipped policy and value losses and an entropy bonus, `ppo_epochs` passes over
//              minibatches of `minibatch_size` rows, gradients averaged over ranks (cluster/comm.hpp),
//              separate AdamW optimizers for actor and critic.
// Every eval_every steps (and at step 0 and the end) the held-out prompts are sampled once more and the
// samples give mean proxy and gold reward, KL(pi || pi_ref) as the sum over response tokens of
// log pi - log pi_ref (both at the sampling temperature), and mean response length.
//
// Writes into the output directory:
//   ppo_curve.jsonl  an EvalPoint per evaluation: {"step","kl","proxy","gold","length","samples",
//                     "proxy_length_corr","gold_length_corr","proxy_gold_spearman",per-prompt means}
//   metrics.jsonl    {"step","policy_loss","value_loss","entropy","kl","kl_coef","score","return",
//                     "clipfrac","tokens_per_s","samples_per_s",...} per step
//   policy/          the final actor (Hugging Face layout, LoRA merged) with the tokenizer files
//   checkpoint/      actor, critic, both optimizers, KL coefficient, reward statistics, RNG, step
//   summary.json     the first and last evaluation and throughput
// A killed run restarted with the same arguments resumes from its last checkpoint to the same final
// parameters as an uninterrupted run.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/config.hpp"
#include "policy/lora.hpp"
#include "policy/sampling_options.hpp"
#include "rm/scorer.hpp"
#include "rm/train_rm.hpp"

namespace grm {

struct KlConfig {
  double coef = 0.05;            // initial beta of the per-token penalty
  std::string estimator = "k1";  // k1: log pi - log pi_ref; k3: exp(-k1) - 1 + k1 (non-negative)
  double target = 0;             // > 0: adaptive controller toward this KL per sample (nats); 0: fixed coef
  double horizon = 10000;        // the controller's horizon in samples (Ziegler et al., 2019)
  template <class V>
  void visit(V& v) {
    v("coef", coef, Range::at_least(0));
    v("estimator", estimator, Choices{"k1", "k3"});
    v("target", target, Range::at_least(0));
    v("horizon", horizon, Range::positive());
  }
};

struct CriticConfig {
  std::string init = "policy";    // policy: new head on a copy of the policy; rm: the proxy reward model
  std::string head = "linear";    // init policy: linear | mlp | mlp2
  int64_t head_hidden = 256;      // width of the mlp heads
  std::string finetune = "full";  // full | lora | frozen (only the head trains)
  double lr = 0;                  // 0: the actor's optim.lr
  template <class V>
  void visit(V& v) {
    v("init", init, Choices{"policy", "rm"});
    v("head", head, Choices{"linear", "mlp", "mlp2"});
    v("head_hidden", head_hidden, Range::at_least(1));
    v("finetune", finetune, Choices{"full", "lora", "frozen"});
    v.renamed("finetune: head", "finetune: frozen");
    v("lr", lr, Range::at_least(0));
  }
};

struct PpoConfig {
  std::string policy = "tinystories-656k";  // directory or name (policy/model_path.hpp)
  // How the policy reads its prompts (policy/chat_format.hpp), as in BoN: a templated policy gets each
  // prompt with its generation header and stops at its end of turn.
  std::string chat_template = "auto";
  // Prompts, spelled as in BoN: a JSONL file of {"id", "prompt"} records, or an inline list (tests, quick
  // runs); the eval_ ones are held out.
  std::string prompt_file;
  std::vector<std::string> prompt_list;  // instead of prompt_file
  std::string eval_prompt_file;
  std::vector<std::string> eval_prompt_list;  // instead of eval_prompt_file
  int64_t max_prompt_tokens = 128;            // longer prompts keep their last tokens (and BOS)
  ScorerConfig proxy;                         // what PPO optimises
  std::optional<ScorerConfig> gold;           // evaluation only
  std::string finetune = "full";              // full | lora
  LoraConfig lora;
  CriticConfig critic;
  KlConfig kl;
  // Proxy scores normalized: by the proxy model's training statistics (config.json mean/std) when it has
  // them, else (ensembles, served and URL proxies, models without them) by the running mean and std of the
  // scores so far; the log says which.
  bool reward_norm = false;
  // Advantages to mean 0, std 1 over each step's batch. With a sparse proxy (most scores 0) this scales
  // the KL penalty's tiny per-token terms up to the size of the score's, which can teach the policy to
  // end its responses at once; turn it off there.
  bool whiten_advantages = true;
  double gamma = 1.0;
  double lambda = 0.95;
  double clip = 0.2;        // policy ratio clip
  double value_clip = 0.2;  // how far a value may move from its rollout value before clipping
  double vf_coef = 0.5;
  double entropy_coef = 0.0;
  int64_t rollout_batch = 16;      // prompts per step per rank
  int64_t samples_per_prompt = 2;  // responses per prompt
  int64_t minibatch_size = 16;     // rollout rows per optimizer update per rank
  int64_t ppo_epochs = 2;
  // The actor's and the critic's optimizers (critic.lr may give the critic its own lr); each model's
  // gradients are clipped to max_grad_norm on their own.
  AdamWConfig optim{/*lr=*/1e-5, /*weight_decay=*/0.0, /*warmup_ratio=*/0.0, /*schedule=*/"constant",
                    /*max_grad_norm=*/1.0};
  int64_t max_new_tokens = 48;
  SamplingOptions sampling;  // keys temperature, top_k, top_p
  int64_t steps = 100;
  int64_t eval_every = 10;
  int64_t n_eval_prompts = 64;
  int64_t eval_samples_per_prompt = 1;
  uint64_t seed = 0;
  int64_t checkpoint_every = 20;
  int64_t threads = 0;          // LibTorch threads per rank; 0: cores / ranks
  std::string device = "auto";  // auto | cpu | cuda
  // The reference policy's storage (rm/train_state.hpp frozen_dtype). float32 by default: PPO computes in
  // fp32, and the reference's log-probs give the KL every report plots against; bfloat16 (or auto, bf16
  // on GPUs) halves its memory at the cost of bf16 rounding in that KL.
  std::string frozen_dtype = "float32";
  template <class V>
  void visit(V& v) {
    v("policy", policy);
    v("chat_template", chat_template);
    v("prompt_file", prompt_file);
    v("prompt_list", prompt_list);
    v("eval_prompt_file", eval_prompt_file);
    v("eval_prompt_list", eval_prompt_list);
    v.renamed("prompts_train", "prompt_file");
    v.renamed("prompts", "prompt_list");
    v.renamed("prompts_eval", "eval_prompt_file");
    v.renamed("eval_prompts", "eval_prompt_list");
    v("max_prompt_tokens", max_prompt_tokens, Range::at_least(1));
    v("proxy", proxy);
    v("gold", gold);
    v("finetune", finetune, Choices{"full", "lora"});
    v("lora", lora);
    v("critic", critic);
    v("kl", kl);
    v("reward_norm", reward_norm);
    v("whiten_advantages", whiten_advantages);
    v("gamma", gamma, Range::closed(0, 1));
    v("lambda", lambda, Range::closed(0, 1));
    v("clip", clip, Range::positive());
    v("value_clip", value_clip, Range::positive());
    v("vf_coef", vf_coef, Range::at_least(0));
    v("entropy_coef", entropy_coef, Range::at_least(0));
    v("rollout_batch", rollout_batch, Range::at_least(1));
    v("samples_per_prompt", samples_per_prompt, Range::at_least(1));
    v("minibatch_size", minibatch_size, Range::at_least(1));
    v("ppo_epochs", ppo_epochs, Range::at_least(1));
    v("optim", optim);
    v.renamed("lr", "optim.lr");
    v.renamed("weight_decay", "optim.weight_decay");
    v.renamed("warmup_ratio", "optim.warmup_ratio");
    v.renamed("lr_schedule", "optim.schedule");
    v.renamed("max_grad_norm", "optim.max_grad_norm");
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    sampling.visit_keys(v);
    v("steps", steps, Range::at_least(1));
    v("eval_every", eval_every, Range::at_least(0));  // 0: off
    v("n_eval_prompts", n_eval_prompts, Range::at_least(0));
    v("eval_samples_per_prompt", eval_samples_per_prompt, Range::at_least(1));
    v("seed", seed);
    v("checkpoint_every", checkpoint_every, Range::at_least(0));  // 0: off
    v("threads", threads, Range::at_least(0));
    v("frozen_dtype", frozen_dtype, Choices{"auto", "float32", "bfloat16"});
    v("device", device, Choices{"auto", "cpu", "cuda"});
  }
  // Checks what can be checked without files: exactly one source per prompt set, positive sizes.
  void validate() const;
};

// One line of ppo_curve.jsonl: means over the held-out samples at `step`.
struct EvalPoint {
  int64_t step = 0;
  double kl = 0, proxy = 0, length = 0;  // length: response tokens
  std::optional<double> gold;            // without a gold scorer: null in the file
  int64_t samples = 0;                   // responses averaged over, all ranks together
  // Per held-out prompt (the first n_eval_prompts, in file order), the mean over its samples: the paired
  // items of intervals on the rise since step 0 and on differences between runs on the same prompts.
  std::vector<double> proxy_per_prompt, gold_per_prompt;  // gold: empty without a gold scorer
  // Pearson correlation of each sample's reward with its response length in tokens, over every held-out
  // sample: a proxy that PPO drives toward length shows it rising. NaN when undefined (every sample the
  // same length), in older files, and for the gold without a gold scorer.
  double proxy_length_corr = NAN, gold_length_corr = NAN;
  // Spearman's rho of the proxy's and the gold's rewards over the held-out samples (NaN without a gold).
  double proxy_gold_spearman = NAN;
};
// The keys are the field names. "step" is required; a missing number reads as NaN (core/text_io.hpp),
// a missing gold as none.
void to_json(nlohmann::json& json, const EvalPoint& point);
void from_json(const nlohmann::json& json, EvalPoint& point);

struct PpoResult {
  int64_t steps = 0;
  std::vector<EvalPoint> curve;  // the evaluations this call made (a resumed run: from its restart on)
  double samples_per_second = 0;
  double tokens_per_second = 0;
  bool finished = true;  // false when stopped early by stop_after_steps
};

// Trains into out_dir (see above). config_dir: the config file's folder, for model and prompt-file
// lookup. stop_after_steps (tests): return after that many PPO steps without finishing, as a killed run
// would.
PpoResult train_ppo(const PpoConfig& config, const std::string& out_dir, const std::string& config_dir = "",
                    int64_t stop_after_steps = 0);

}  // namespace grm
