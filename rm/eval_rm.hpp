// Reward-model evaluation: accuracy on preference pairs (a pair is right when r_chosen > r_rejected;
// equal rewards count as wrong and are reported as ties), overall and per group value of each group
// field (subset, source, ...), and RewardBench-style sections: a section's accuracy is the mean of its
// subsets' accuracies weighted by their pair counts (so, pooled pairs), a count in subset_weights taking
// the place of a subset's own, and the sections' score is the plain mean over sections. RewardBench v1's
// official scorer counts math-prm (447 pairs) as 984, so that math weighs as much as the six hep-* code
// subsets together: `benchmark: rewardbench` gives its four sections and that weight. `benchmark:
// rewardbench2` scores RewardBench 2's best-of-4 records instead: the set's accuracy is the benchmark's
// score, its sections the subsets' scores (n: prompts).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rm/preference_data.hpp"
#include "rm/scorer.hpp"

namespace grm {

struct EvalSetConfig {
  DataConfig data;
  // rewardbench: RewardBench v1's sections and weights (given ones win); rewardbench2: the file holds
  // RewardBench 2 records, scored best-of-K per subset (rm/rewardbench2.hpp), data.path and data.limit read
  std::string benchmark = "none";
  std::map<std::string, std::vector<std::string>> sections;  // section -> subset values
  std::string section_field = "subset";
  std::map<std::string, double> subset_weights;  // subset -> the count it weighs in its section
  template <class V>
  void visit(V& v) {
    v("data", data);
    v("benchmark", benchmark, Choices{"none", "rewardbench", "rewardbench2"});
    v("sections", sections);
    v("section_field", section_field);
    v("subset_weights", subset_weights, Range::positive());
  }
};

// RewardBench v1's sections (Chat, Chat Hard, Safety, Reasoning) and its scorer's weight for math-prm.
EvalSetConfig with_benchmark_defaults(EvalSetConfig set);

struct EvalRmConfig {
  ScorerConfig scorer;
  std::map<std::string, EvalSetConfig> sets;  // name -> data; names "id", "ood_*" by convention
  template <class V>
  void visit(V& v) {
    v("scorer", scorer);
    v("sets", sets);
  }
};

struct PairAccuracy {
  double accuracy = 0;  // fraction of the n pairs ranked right; 0 when n is 0
  int64_t n = 0;        // pairs, labelled ties left out
};

// One evaluation set of eval.json:
//   {"accuracy", "n", "ties", "groups": {field: {value: {"accuracy", "n"}}}, "sections": {...},
//    "section_score", "correct": [1, 0, ...]}   ("sections" and "section_score" only when the set has them)
struct EvalSetResult : PairAccuracy {
  int64_t ties = 0;  // pairs the model gave equal rewards (counted wrong)
  std::map<std::string, std::map<std::string, PairAccuracy>> groups;  // group field -> value -> accuracy
  std::map<std::string, PairAccuracy> sections;
  std::optional<double> section_score;  // the plain mean over sections
  // Per pair of the file, in order (labelled ties left out): 1 ranked right, 0 not. The paired items of
  // intervals on the difference between two reward models evaluated on the same file.
  std::vector<int> correct;
};

// eval.json, what `grm eval-rm` writes: {"sets": {name: EvalSetResult}}.
struct EvalRmResult {
  std::map<std::string, EvalSetResult> sets;
};

// The keys are the field names. Reading is lenient, for files of older runs: a missing accuracy reads as
// NaN (core/text_io.hpp), a missing count as 0, missing groups or sections as none.
void to_json(nlohmann::json& json, const PairAccuracy& result);
void from_json(const nlohmann::json& json, PairAccuracy& result);
void to_json(nlohmann::json& json, const EvalSetResult& result);
void from_json(const nlohmann::json& json, EvalSetResult& result);
void to_json(nlohmann::json& json, const EvalRmResult& result);
void from_json(const nlohmann::json& json, EvalRmResult& result);

EvalSetResult evaluate_pairs(Scorer& scorer, const std::vector<PreferencePair>& pairs,
                             const EvalSetConfig& set);
// A RewardBench 2 file (set.data.path) scored by `scorer`.
EvalSetResult evaluate_rewardbench2(Scorer& scorer, const EvalSetConfig& set);
EvalRmResult evaluate_reward_model(const EvalRmConfig& config, const std::string& config_dir = "");

}  // namespace grm
