#include "rm/rewardbench2.hpp"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/text_io.hpp"

namespace grm {

namespace {

std::vector<std::string> strings_of(const nlohmann::json& record, const char* field,
                                    const std::string& origin) {
  auto it = record.find(field);
  if (it == record.end()) fail("{}: a RewardBench 2 record needs the field '{}'", origin, field);
  if (it->is_string()) return {it->get<std::string>()};
  std::vector<std::string> out;
  if (it->is_array())
    for (const auto& item : *it) {
      if (!item.is_string()) fail("{}: field '{}' must hold strings, got {}", origin, field, item.dump());
      out.push_back(item.get<std::string>());
    }
  else
    fail("{}: field '{}' must be a string or a list of strings, got {}", origin, field, it->dump());
  return out;
}

// "ref:12" -> {"ref", "12"}; anything else is an error naming the record.
std::pair<std::string, std::string> ties_id(const Rb2Record& record) {
  auto colon = record.id.find(':');
  std::string kind = record.id.substr(0, colon);
  if (colon == std::string::npos || (kind != "ref" && kind != "tied"))
    fail("{}: a Ties record's id must be ref:N or tied:N, got '{}'", record.origin, record.id);
  return {kind, record.id.substr(colon + 1)};
}

}  // namespace

std::vector<Rb2Record> read_rewardbench2(const std::string& path, int64_t limit) {
  std::vector<Rb2Record> records;
  auto lines = read_lines(path);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
    std::string origin = path + ":" + std::to_string(i + 1);
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(lines[i]);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not a JSON object ({})", origin, e.what());
    }
    if (!record.is_object()) fail("{}: not a JSON object", origin);
    Rb2Record r;
    r.origin = origin;
    for (auto [field, into] : {std::pair{"prompt", &r.prompt}, {"subset", &r.subset}}) {
      auto it = record.find(field);
      if (it == record.end() || !it->is_string()) fail("{}: needs a string field '{}'", origin, field);
      *into = it->get<std::string>();
    }
    if (record.contains("id"))
      r.id = record["id"].is_string() ? record["id"].get<std::string>() : record["id"].dump();
    auto chosen = strings_of(record, "chosen", origin), rejected = strings_of(record, "rejected", origin);
    if (chosen.empty() || rejected.empty())
      fail("{}: needs at least one chosen and one rejected response", origin);
    r.num_correct = int64_t(chosen.size());
    if (record.contains("num_correct")) {
      if (!record["num_correct"].is_number_integer() || record["num_correct"].get<int64_t>() != r.num_correct)
        fail("{}: num_correct is {}, but 'chosen' holds {} responses", origin, record["num_correct"].dump(),
             chosen.size());
    }
    r.responses = std::move(chosen);
    r.responses.insert(r.responses.end(), rejected.begin(), rejected.end());
    records.push_back(std::move(r));
    if (limit > 0 && int64_t(records.size()) >= limit) break;
  }
  if (records.empty()) fail("{}: no RewardBench 2 records", path);
  return records;
}

double best_of_k_credit(const std::vector<double>& scores, int64_t num_correct) {
  if (num_correct < 1 || num_correct >= int64_t(scores.size()))
    fail("best-of-K: {} correct of {} responses; need at least one of each", num_correct, scores.size());
  double top = *std::max_element(scores.begin(), scores.end());
  int64_t at_top = std::count(scores.begin(), scores.end(), top);
  bool correct_at_top =
      std::find(scores.begin(), scores.begin() + num_correct, top) != scores.begin() + num_correct;
  // The official scorer splits the credit over every response tied at the top.
  return correct_at_top ? 1.0 / double(at_top) : 0.0;
}

TiesPromptStats ties_prompt_stats(const std::vector<double>& scores, int64_t num_correct) {
  if (num_correct < 1 || num_correct >= int64_t(scores.size()))
    fail("Ties: {} correct of {} responses; need at least one of each", num_correct, scores.size());
  auto correct_end = scores.begin() + num_correct;
  double best_correct = *std::max_element(scores.begin(), correct_end);
  double worst_correct = *std::min_element(scores.begin(), correct_end);
  double best_incorrect = *std::max_element(correct_end, scores.end());
  TiesPromptStats stats;
  stats.correct_spread = num_correct > 1 ? best_correct - worst_correct : std::nan("");
  stats.correct_incorrect_margin = worst_correct - best_incorrect;
  stats.accurate = stats.correct_incorrect_margin > 0;
  return stats;
}

double ties_score(const std::map<std::string, TiesPromptStats>& ref,
                  const std::map<std::string, TiesPromptStats>& tied) {
  auto accuracy = [](const std::map<std::string, TiesPromptStats>& prompts) {
    if (prompts.empty()) return 0.0;
    double sum = 0;
    for (const auto& [id, stats] : prompts) sum += stats.accurate;
    return sum / double(prompts.size());
  };
  double preferred = 0, preferred_hard = 0, margin = 0, both = 0;
  for (const auto& [id, t] : tied) {
    auto r = ref.find(id);
    if (r == ref.end()) continue;
    both += 1;
    double hardest = std::min(r->second.correct_incorrect_margin, t.correct_incorrect_margin);
    // Comparisons with an undefined spread (one correct answer) are false, and its tanh term is 0.
    preferred += t.correct_incorrect_margin > t.correct_spread;
    preferred_hard += hardest > t.correct_spread;
    double term = std::tanh(hardest / t.correct_spread - 1);
    margin += std::isfinite(term) ? term : 0.0;
  }
  double share = both > 0 ? 1 / both : 0;
  return 0.30 * accuracy(tied) + 0.30 * accuracy(ref) + 0.20 * preferred * share +
         0.20 * preferred_hard * share + 0.01 * margin * share;
}

Rb2Result score_rewardbench2(const std::vector<Rb2Record>& records,
                             const std::vector<std::vector<double>>& scores) {
  if (scores.size() != records.size())
    fail("RewardBench 2: {} score lists for {} records", scores.size(), records.size());
  Rb2Result result;
  std::map<std::string, double> credit;
  std::map<std::string, TiesPromptStats> ref, tied;
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& record = records[i];
    if (scores[i].size() != record.responses.size())
      fail("{}: {} scores for {} responses", record.origin, scores[i].size(), record.responses.size());
    ++result.subset_prompts[record.subset];
    if (record.subset == "Ties") {
      auto [kind, n] = ties_id(record);
      if (!(kind == "ref" ? ref : tied).emplace(n, ties_prompt_stats(scores[i], record.num_correct)).second)
        fail("{}: the Ties id '{}' appears twice; each ref:N and tied:N is one prompt", record.origin,
             record.id);
    } else {
      credit[record.subset] += best_of_k_credit(scores[i], record.num_correct);
    }
  }
  for (const auto& [subset, sum] : credit)
    result.subsets[subset] = sum / double(result.subset_prompts[subset]);
  if (result.subset_prompts.count("Ties")) result.subsets["Ties"] = ties_score(ref, tied);
  double total = 0;
  for (const auto& [subset, value] : result.subsets) total += value;
  result.score = result.subsets.empty() ? 0 : total / double(result.subsets.size());
  return result;
}

}  // namespace grm
