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
};

// Builds the report; returns its verdict lines (whether GRM beat the baseline on each measure).
std::string build_report(const std::string& run_dir, const ReportOptions& options = {});

}  // namespace grm
