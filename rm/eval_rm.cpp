#include "rm/eval_rm.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/text_io.hpp"
#include "rm/rewardbench2.hpp"

namespace grm {

EvalSetResult evaluate_pairs(Scorer& scorer, const std::vector<PreferencePair>& pairs,
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
  std::vector<int> correct;
  std::map<std::string, std::map<std::string, Count>> groups;
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].tie) continue;  // a labelled tie has no right answer
    double chosen = rewards[i], rejected = rewards[i + pairs.size()];
    bool right = chosen > rejected;
    ties += chosen == rejected ? 1 : 0;
    all.right += right, ++all.n;
    correct.push_back(right ? 1 : 0);
    for (const auto& [field, value] : pairs[i].groups) {
      auto& c = groups[field][value];
      c.right += right, ++c.n;
    }
  }
  auto accuracy = [](const Count& c) {
    return PairAccuracy{c.n > 0 ? double(c.right) / double(c.n) : 0.0, c.n};
  };
  EvalSetResult out{accuracy(all), ties, {}, {}, std::nullopt, std::move(correct)};
  for (const auto& [field, values] : groups)
    for (const auto& [value, c] : values) out.groups[field][value] = accuracy(c);
  if (!set.sections.empty()) {
    double sum = 0;
    for (const auto& [section, subsets] : set.sections) {
      Count pooled;
      double weighted = 0, weights = 0;
      for (const auto& subset : subsets) {
        auto field = groups.find(set.section_field);
        if (field == groups.end() || !field->second.count(subset))
          fail("section '{}' names subset '{}', which the data does not have in field '{}'", section, subset,
               set.section_field);
        const Count& c = field->second.at(subset);
        pooled.right += c.right, pooled.n += c.n;
        auto weight = set.subset_weights.find(subset);
        double w = weight != set.subset_weights.end() ? weight->second : double(c.n);
        if (c.n > 0) weighted += w * accuracy(c).accuracy, weights += w;
      }
      out.sections[section] = {weights > 0 ? weighted / weights : 0.0, pooled.n};
      sum += out.sections[section].accuracy;
    }
    out.section_score = sum / double(set.sections.size());
  }
  return out;
}

EvalSetResult evaluate_rewardbench2(Scorer& scorer, const EvalSetConfig& set) {
  auto records = read_rewardbench2(set.data.path, set.data.limit);
  std::vector<ScoreItem> items;
  for (const auto& record : records)
    for (const auto& response : record.responses) items.push_back({record.prompt, response});
  auto rewards = scorer.score(items);
  if (rewards.size() != items.size())
    fail("scorer returned {} rewards for {} texts", rewards.size(), items.size());
  std::vector<std::vector<double>> scores;
  size_t next = 0;
  for (const auto& record : records) {
    scores.emplace_back(rewards.begin() + long(next), rewards.begin() + long(next + record.responses.size()));
    next += record.responses.size();
  }
  auto rb2 = score_rewardbench2(records, scores);
  EvalSetResult out;
  out.accuracy = rb2.score;
  out.n = int64_t(records.size());
  for (const auto& [subset, value] : rb2.subsets) out.sections[subset] = {value, rb2.subset_prompts[subset]};
  out.section_score = rb2.score;
  return out;
}

EvalSetConfig with_benchmark_defaults(EvalSetConfig set) {
  if (set.benchmark != "rewardbench") return set;
  const std::map<std::string, std::vector<std::string>> sections = {
      {"Chat", {"alpacaeval-easy", "alpacaeval-length", "alpacaeval-hard", "mt-bench-easy", "mt-bench-med"}},
      {"Chat Hard",
       {"mt-bench-hard", "llmbar-natural", "llmbar-adver-neighbor", "llmbar-adver-GPTInst",
        "llmbar-adver-GPTOut", "llmbar-adver-manual"}},
      {"Safety",
       {"refusals-dangerous", "refusals-offensive", "xstest-should-refuse", "xstest-should-respond",
        "donotanswer"}},
      {"Reasoning", {"math-prm", "hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"}}};
  if (set.sections.empty()) set.sections = sections;
  set.subset_weights.emplace("math-prm", 984.0);  // the official scorer's count: math weighs as all code
  return set;
}

EvalRmResult evaluate_reward_model(const EvalRmConfig& config, const std::string& config_dir) {
  if (config.sets.empty())
    fail("eval-rm: no evaluation sets given (sets: {{name: {{data: {{path: ...}}}}}})");
  // Text is read as the reward model's training recorded (or scorer.chat_template says): a set's own
  // data.chat_template would silently do nothing.
  for (const auto& [name, given] : config.sets)
    if (given.data.chat.chat_template != "auto" || given.data.chat.append_eos != "auto")
      fail(
          "sets.{}.data: chat_template and append_eos choose how a model trains on its data; an evaluation "
          "reads text as the reward model recorded, so set scorer.chat_template / scorer.append_eos instead",
          name);
  auto scorer = make_scorer(config.scorer, config_dir);
  EvalRmResult result;
  for (const auto& [name, given] : config.sets) {
    if (given.benchmark == "rewardbench2") {
      const EvalSetResult& scored = result.sets[name] = evaluate_rewardbench2(*scorer, given);
      log::info("{}: RewardBench 2 score {:.4f} on {} prompts", name, scored.accuracy, scored.n);
      continue;
    }
    EvalSetConfig set = with_benchmark_defaults(given);
    auto pairs = read_preferences(set.data);
    const EvalSetResult& scored = result.sets[name] = evaluate_pairs(*scorer, pairs, set);
    log::info("{}: accuracy {:.4f} on {} pairs ({} ties)", name, scored.accuracy, scored.n, scored.ties);
  }
  return result;
}

void to_json(nlohmann::json& out, const PairAccuracy& result) {
  out = {{"accuracy", result.accuracy}, {"n", result.n}};
}

void from_json(const nlohmann::json& in, PairAccuracy& result) {
  result.accuracy = number_or_nan(in, "accuracy");
  result.n = in.value("n", int64_t(0));
}

void to_json(nlohmann::json& out, const EvalSetResult& result) {
  to_json(out, static_cast<const PairAccuracy&>(result));
  out["ties"] = result.ties;
  out["groups"] = result.groups;
  if (!result.sections.empty()) out["sections"] = result.sections;
  if (result.section_score) out["section_score"] = *result.section_score;
  out["correct"] = result.correct;
}

void from_json(const nlohmann::json& in, EvalSetResult& result) {
  from_json(in, static_cast<PairAccuracy&>(result));
  result.ties = in.value("ties", int64_t(0));
  result.groups = in.value("groups", decltype(result.groups){});
  result.sections = in.value("sections", decltype(result.sections){});
  double section_score = number_or_nan(in, "section_score");
  if (!std::isnan(section_score)) result.section_score = section_score;
  result.correct = in.value("correct", std::vector<int>{});
}

void to_json(nlohmann::json& out, const EvalRmResult& result) {
  out = {{"sets", result.sets}};
}

void from_json(const nlohmann::json& in, EvalRmResult& result) {
  result.sets = in.value("sets", decltype(result.sets){});
}

}  // namespace grm
