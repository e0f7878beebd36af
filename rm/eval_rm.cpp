#include "rm/eval_rm.hpp"

#include "core/error.hpp"
#include "core/log.hpp"

namespace grm {

nlohmann::json evaluate_pairs(Scorer& scorer, const std::vector<PreferencePair>& pairs,
                              const EvalSetConfig& set) {
  std::vector<ScoreItem> items;
  for (const auto& p : pairs) items.push_back({p.prompt, p.chosen});
  for (const auto& p : pairs) items.push_back({p.prompt, p.rejected});
  auto rewards = scorer.score(items);
  if (rewards.size() != items.size())
    fail("scorer returned {} rewards for {} texts", rewards.size(), items.size());
  struct Count {
    int64_t right = 0, n = 0;
  };
  Count all;
  int64_t ties = 0;
  std::map<std::string, std::map<std::string, Count>> groups;
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].tie) continue;  // a labelled tie has no right answer
    double chosen = rewards[i], rejected = rewards[i + pairs.size()];
    bool right = chosen > rejected;
    ties += chosen == rejected ? 1 : 0;
    all.right += right, ++all.n;
    for (const auto& [field, value] : pairs[i].groups) {
      auto& c = groups[field][value];
      c.right += right, ++c.n;
    }
  }
  auto accuracy = [](const Count& c) { return c.n > 0 ? double(c.right) / double(c.n) : 0.0; };
  nlohmann::json out = {{"accuracy", accuracy(all)}, {"n", all.n}, {"ties", ties}};
  nlohmann::json group_json = nlohmann::json::object();
  for (const auto& [field, values] : groups)
    for (const auto& [value, c] : values) group_json[field][value] = {{"accuracy", accuracy(c)}, {"n", c.n}};
  out["groups"] = group_json;
  if (!set.sections.empty()) {
    nlohmann::json sections = nlohmann::json::object();
    double sum = 0;
    for (const auto& [section, subsets] : set.sections) {
      Count c;
      for (const auto& subset : subsets) {
        auto field = groups.find(set.section_field);
        if (field == groups.end() || !field->second.count(subset))
          fail("section '{}' names subset '{}', which the data does not have in field '{}'", section, subset,
               set.section_field);
        c.right += field->second.at(subset).right, c.n += field->second.at(subset).n;
      }
      sections[section] = {{"accuracy", accuracy(c)}, {"n", c.n}};
      sum += accuracy(c);
    }
    out["sections"] = sections;
    out["section_score"] = sum / double(set.sections.size());
  }
  return out;
}

nlohmann::json evaluate_reward_model(const EvalRmConfig& config, const std::string& config_dir) {
  if (config.sets.empty())
    fail("eval-rm: no evaluation sets given (sets: {{name: {{data: {{path: ...}}}}}})");
  auto scorer = make_scorer(config.scorer, config_dir);
  nlohmann::json sets = nlohmann::json::object();
  for (const auto& [name, set] : config.sets) {
    auto pairs = read_preferences(set.data);
    sets[name] = evaluate_pairs(*scorer, pairs, set);
    log::info("{}: accuracy {:.4f} on {} pairs ({} ties)", name, sets[name]["accuracy"].get<double>(),
              sets[name]["n"].get<int64_t>(), sets[name]["ties"].get<int64_t>());
  }
  return {{"sets", sets}};
}

}  // namespace grm
