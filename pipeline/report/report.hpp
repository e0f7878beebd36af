// The over-optimization report of a run directory, built only from RUN_DIR/dag.json and the files the
// stages left in their directories (stages that are not DONE are listed, not read):
//
//   metrics.jsonl    (train-rm)  a TrainMetricsRow per line (rm/train_rm.hpp): {"step","loss","accuracy",...}
//   eval.json        (eval-rm)   an EvalRmResult (rm/eval_rm.hpp): {"sets": {"id": {"accuracy",...}, ...}}
//   bon_curves.json  (bon)       a BonCurves (bon/best_of_n.hpp): {"n_max","n_prompts","curves":
//                                 {"<proxy stage id>": [{"n","kl","proxy","gold","gold_lo",...}]}}
//   ppo_curve.jsonl  (ppo)       an EvalPoint per line (ppo/ppo.hpp): {"step","kl","proxy","gold",...}
//
// read through those structs' from_json, so the keys are written in one place; a number a file lacks
// reads as NaN (not recorded), so the files of older runs still load.
//
// Results are grouped by the stages' labels: `method`, `alpha`, `size`, `seed` (a dotted label such as
// `rm.method` counts by its last part). Accuracies are fractions; the eval set named `id` is in
// distribution, sets named `ood*` are out of distribution. BoN curves take their labels from the proxy
// stage named by the curve's key. Means and 95% intervals are over seeds; with one seed, the bootstrap
// interval over prompts a stage wrote (gold_lo/gold_hi) is used where there is one.
//
// Each method is compared at its main setting: the largest `size`, and among that size's `alpha`
// values the one with the best mean ID accuracy (the first if there is no evaluation).
//
// Writes RUN_DIR/report/: index.html (self-contained: SVGs inline, PNGs as data URIs), summary.md,
// summary.json, plots/NAME.{png,svg,gp}.
#pragma once

#include <string>

namespace grm {

struct ReportOptions {
  std::string baseline = "bt";     // method label of the baseline GRM is measured against
  std::string grm_prefix = "grm";  // method labels "grm", "grm-dpo", "grm_sft", ... are GRM variants
  // What "the run shows over-optimization" means (the report's checks section), all against the
  // baseline's main setting: a gold RM that agrees with its oracle, a proxy that learned something, a
  // Best-of-N gold gain that is real but outpaced by the proxy's (gains in standard deviations of single
  // samples, so that proxy and gold units compare), and a PPO run that moved.
  double min_gold_agreement = 0.70;  // per evaluation set, against the oracle (gold_quality.json)
  double min_baseline_id_accuracy = 0.60;
  double min_bon_gold_gain_sd = 0.3;     // at the best n, with its 95% interval above zero
  double min_bon_proxy_over_gold = 2.0;  // proxy gain / gold gain at the largest n
  double min_ppo_proxy_rise_se = 2.0;    // final minus initial proxy score, in standard errors
  double min_ppo_kl = 2.0;               // nats reached
};

// Builds the report; returns its verdict lines (whether GRM beat the baseline on each measure) followed by
// the checks of whether the run shows over-optimization at all.
std::string build_report(const std::string& run_dir, const ReportOptions& options = {});

}  // namespace grm
