// Reward-model evaluation: accuracy on preference pairs (a pair is right when r_chosen > r_rejected;
// equal rewards count as wrong and are reported as ties), overall and per group value of each group
// field (subset, source, ...), and RewardBench-style sections: a section's accuracy pools the pairs of
// its subsets, and the sections' score is the plain mean over sections.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "rm/preference_data.hpp"
#include "rm/scorer.hpp"

namespace grm {

struct EvalSetConfig {
  DataConfig data;
  std::map<std::string, std::vector<std::string>> sections;  // section -> subset values
  std::string section_field = "subset";
  template <class V>
  void visit(V& v) {
    v("data", data);
    v("sections", sections);
    v("section_field", section_field);
  }
};

struct EvalRmConfig {
  ScorerConfig scorer;
  std::map<std::string, EvalSetConfig> sets;  // name -> data; names "id", "ood_*" by convention
  template <class V>
  void visit(V& v) {
    v("scorer", scorer);
    v("sets", sets);
  }
};

// {"accuracy", "n", "ties", "groups": {field: {value: {"accuracy", "n"}}}, "sections": {...}}
nlohmann::json evaluate_pairs(Scorer& scorer, const std::vector<PreferencePair>& pairs,
                              const EvalSetConfig& set);
// {"sets": {name: evaluate_pairs(...)}}
nlohmann::json evaluate_reward_model(const EvalRmConfig& config, const std::string& config_dir = "");

}  // namespace grm
