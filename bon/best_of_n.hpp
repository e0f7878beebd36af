// Best-of-N over-optimization curves. For each evaluation prompt, N_max responses are sampled once from
// the policy (seeded per prompt, so a resumed or repeated run draws the same ones) and persisted to
// samples.jsonl; every proxy RM and the gold scorer score all of them (scores cached per scorer, so a new
// RM re-scores without regenerating); then for n on a grid 1..N_max the expected proxy and gold reward of
// the proxy-best of n samples (bon/estimator.hpp) is averaged over prompts, with bootstrap intervals,
// against KL_bon(n) = log n - (n-1)/n.
#pragma once

#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/config.hpp"
#include "policy/sampling_options.hpp"
#include "rm/scorer.hpp"

namespace grm {

struct BonConfig {
  std::string policy = "tinystories-656k";
  // How the policy reads its prompts (policy/chat_format.hpp): auto | none | a family | F.jinja. A
  // templated policy gets each prompt with its generation header and stops at its end of turn.
  std::string chat_template = "auto";
  std::string prompt_file;               // JSONL of {"id", "prompt"}; PPO spells its prompts the same way
  std::vector<std::string> prompt_list;  // inline prompts, before those of the file
  int64_t n_prompts = 64;                // first n of the file (0: all)
  int64_t n_max = 256;
  int64_t max_new_tokens = 48;
  SamplingOptions sampling;  // keys temperature, top_k, top_p
  uint64_t seed = 0;
  std::string samples_from;                     // reuse this samples.jsonl instead of sampling
  std::map<std::string, ScorerConfig> proxies;  // name -> scorer
  std::vector<std::string> proxy_models;        // reward model dirs, named after their stage folder
  ScorerConfig gold;
  int64_t bootstrap = 1000;
  int64_t threads = 0;
  template <class V>
  void visit(V& v) {
    v("policy", policy);
    v("chat_template", chat_template);
    v("prompt_file", prompt_file);
    v("prompt_list", prompt_list);
    v.renamed("prompts", "prompt_file");
    v("n_prompts", n_prompts, Range::at_least(0));
    v("n_max", n_max, Range::at_least(1));
    v("max_new_tokens", max_new_tokens, Range::at_least(1));
    sampling.visit_keys(v);
    v("seed", seed);
    v("samples_from", samples_from);
    v("proxies", proxies);
    v("proxy_models", proxy_models);
    v("gold", gold);
    v("bootstrap", bootstrap, Range::at_least(0));
    v("threads", threads, Range::at_least(0));
  }
};

struct BonSample {
  int64_t prompt_id = 0;
  int64_t sample_id = 0;
  std::string prompt;
  std::string text;
  int64_t tokens = 0;
  bool finished = true;  // ended at a stop token, not cut at max_new_tokens
};

// The inline prompts, then those of a {"id", "prompt"} JSONL file, at most `limit` (0: all).
std::vector<std::string> read_prompts(const std::string& path, const std::vector<std::string>& inline_list,
                                      int64_t limit);

// Samples (from samples_from, or generated into out_dir/samples.jsonl, resuming a partial file), then
// scores and curves into out_dir: scores/<name>.json, bon_curves.json (BonCurves), bon_curves.csv.
void run_best_of_n(const BonConfig& config, const std::string& out_dir, const std::string& config_dir = "");

// The curve of one proxy: proxy[p][i], gold[p][i] for prompt p, sample i.
struct BonPoint {
  int64_t n = 0;
  double kl = 0, proxy = 0, gold = 0, proxy_lo = 0, proxy_hi = 0, gold_lo = 0, gold_hi = 0, proxy_norm = 0,
         gold_norm = 0;
  // The standard deviations of single samples' scores (over every sample of every prompt), the unit in
  // which proxy and gold gains compare across scorers of different scales. The same at every n.
  double proxy_sd = 0, gold_sd = 0;
  // The best-of-n expectation of each prompt (P values, prompts in file order): the paired items of
  // intervals on gains (against n = 1) and on differences between proxies (same samples, same prompts).
  std::vector<double> proxy_per_prompt, gold_per_prompt;
};
// The keys are the field names. "n" is required; a missing number reads as NaN (core/text_io.hpp).
void to_json(nlohmann::json& json, const BonPoint& point);
void from_json(const nlohmann::json& json, BonPoint& point);

// bon_curves.json: {"n_max", "n_prompts", "curves": {proxy name: [BonPoint, ...]}, "length_correlation",
// "proxy_gold_spearman", "gold_length_correlation"}. A proxy given by
// proxy_models is named after its stage folder, the proxy stage's id in a pipeline run.
struct BonCurves {
  int64_t n_max = 0;      // samples per prompt
  int64_t n_prompts = 0;  // prompts the curves average over
  std::map<std::string, std::vector<BonPoint>> curves;
  // Over every sample: Pearson's r of each proxy's reward with response length in tokens, and Spearman's
  // rho of each proxy with the gold (core/correlation.hpp; an undefined one is left out); the gold's own
  // length correlation (NaN when undefined, null in the file).
  std::map<std::string, double> length_correlation, proxy_gold_spearman;
  double gold_length_correlation = NAN;
};
void to_json(nlohmann::json& json, const BonCurves& curves);
// A missing count reads as 0, missing curves as none.
void from_json(const nlohmann::json& json, BonCurves& curves);
std::vector<BonPoint> best_of_n_curve(const std::vector<std::vector<double>>& proxy,
                                      const std::vector<std::vector<double>>& gold, int64_t bootstrap,
                                      uint64_t seed = 0);

}  // namespace grm
