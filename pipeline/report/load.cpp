// What the stages left: dag.json's stages (pipeline/dag.hpp reads them), and the eval.json,
// metrics.jsonl, bon_curves.json and ppo_curve.jsonl of the stages that are DONE, read through the result
// structs of the stages that write them (report.hpp lists the formats).
#include <filesystem>
#include <sstream>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include "bon/best_of_n.hpp"
#include "core/atomic_file.hpp"
#include "core/correlation.hpp"
#include "core/error.hpp"
#include "core/text_io.hpp"
#include "pipeline/report/report_parts.hpp"
#include "ppo/ppo.hpp"
#include "rm/eval_rm.hpp"
#include "rm/train_rm.hpp"

namespace grm::report {

namespace fs = std::filesystem;
using json = nlohmann::json;

double to_number(const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  return !text.empty() && end && *end == '\0' ? value : NAN;
}

bool label_less(const std::string& a, const std::string& b) {
  double x = to_number(a), y = to_number(b);
  if (std::isfinite(x) && std::isfinite(y) && x != y) return x < y;
  return a < b;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

namespace {

// Every row of a JSON Lines file as T (through its from_json); a torn last line (a stage killed
// mid-write) or any other unreadable line is skipped, and more than one is noted.
template <class T>
std::vector<T> read_rows(const std::string& path, std::vector<std::string>& notes) {
  std::vector<T> rows;
  std::istringstream lines(read_file(path));
  int bad = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    json row = json::parse(line, nullptr, false);
    try {
      rows.push_back(row.get<T>());
    } catch (const json::exception&) {  // not JSON (discarded), not an object, or a required key missing
      ++bad;
    }
  }
  if (bad > 1) notes.push_back(fmt::format("{}: skipped {} unreadable lines", path, bad));
  return rows;
}

// A whole JSON file as T, or nothing (and a note) when it cannot be read as one.
template <class T>
std::optional<T> read_result(const std::string& path, std::vector<std::string>& notes) {
  json value = json::parse(read_file(path), nullptr, false);
  if (value.is_discarded()) {
    notes.push_back(path + ": not valid JSON; skipped");
    return std::nullopt;
  }
  try {
    return value.get<T>();
  } catch (const json::exception& error) {
    notes.push_back(fmt::format("{}: not in the expected format ({}); skipped", path, error.what()));
    return std::nullopt;
  }
}

Labelled labels_of(const StageRecord& stage) {
  auto get = [&](const char* key) {
    auto it = stage.labels.find(key);
    return it == stage.labels.end() ? std::string() : it->second;
  };
  std::string method = get("method");
  return {{method.empty() ? stage.name : method, get("alpha"), get("size"), get("head")}, get("seed")};
}

CurveRow curve_row(const BonPoint& point) {
  return {double(point.n),
          point.kl,
          point.proxy,
          point.gold,
          point.proxy_lo,
          point.proxy_hi,
          point.gold_lo,
          point.gold_hi,
          point.proxy_sd,
          point.gold_sd,
          point.proxy_per_prompt,
          point.gold_per_prompt};
}

// PPO evaluations carry no intervals: over seeds, or none.
CurveRow curve_row(const EvalPoint& point) {
  return {double(point.step),
          point.kl,
          point.proxy,
          point.gold.value_or(NAN),
          NAN,
          NAN,
          NAN,
          NAN,
          NAN,
          NAN,
          point.proxy_per_prompt,
          point.gold_per_prompt,
          point.proxy_length_corr,
          point.gold_length_corr,
          point.proxy_gold_spearman};
}

void note_method(RunData& data, const std::string& method) {
  if (!method.empty() && std::find(data.methods.begin(), data.methods.end(), method) == data.methods.end()) {
    data.methods.push_back(method);
  }
}

void read_stage_outputs(RunData& data, const StageRecord& stage,
                        const std::map<std::string, std::size_t>& by_id) {
  Labelled labels = labels_of(stage);
  if (fs::exists(stage.dir + "/eval.json")) {
    if (auto eval = read_result<EvalRmResult>(stage.dir + "/eval.json", data.notes);
        eval && !eval->sets.empty()) {
      EvalRun run{labels, {}, {}};
      for (const auto& [set, result] : eval->sets) {
        run.accuracy[set] = result.accuracy;
        run.correct[set].assign(result.correct.begin(), result.correct.end());
      }
      data.evals.push_back(std::move(run));
      note_method(data, labels.setting.method);
    }
  }
  // Reward-model training curves only: PPO stages keep their own metrics.jsonl beside ppo_curve.jsonl.
  if (fs::exists(stage.dir + "/metrics.jsonl") && !fs::exists(stage.dir + "/ppo_curve.jsonl")) {
    TrainRun run{labels, stage.labels.count("method") ? labels.setting.method : stage.name, {}};
    for (const auto& row : read_rows<TrainMetricsRow>(stage.dir + "/metrics.jsonl", data.notes))
      run.rows.push_back({double(row.step), row.loss, row.accuracy});
    data.trains.push_back(std::move(run));
  }
  if (fs::exists(stage.dir + "/bon_curves.json")) {
    if (auto bon = read_result<BonCurves>(stage.dir + "/bon_curves.json", data.notes)) {
      data.bon_n_max = std::max(data.bon_n_max, static_cast<int>(bon->n_max));
      data.bon_n_prompts = std::max(data.bon_n_prompts, static_cast<int>(bon->n_prompts));
      for (const auto& [proxy, points] : bon->curves) {
        auto found = by_id.find(proxy);
        // A curve whose key is not a stage (a reference scorer, say) is labelled by its key.
        CurveRun run{
            found != by_id.end() ? labels_of(data.stages[found->second]) : Labelled{{proxy, "", "", ""}, ""},
            {}};
        auto signal = [](const std::map<std::string, double>& values, const std::string& key) {
          auto it = values.find(key);
          return it == values.end() ? NAN : it->second;
        };
        for (const auto& point : points) {
          CurveRow row = curve_row(point);
          row.proxy_length_corr = signal(bon->length_correlation, proxy);
          row.gold_length_corr = bon->gold_length_correlation;
          if (point.proxy_per_prompt.size() == point.gold_per_prompt.size())
            row.proxy_gold_rank = spearman(point.proxy_per_prompt, point.gold_per_prompt);
          run.rows.push_back(std::move(row));
        }
        run.sample_proxy_gold_rank = signal(bon->proxy_gold_spearman, proxy);
        note_method(data, run.setting.method);
        data.bon.push_back(std::move(run));
      }
    }
  }
  if (fs::exists(stage.dir + "/gold_quality.json")) {
    if (auto quality = read_result<nlohmann::json>(stage.dir + "/gold_quality.json", data.notes);
        quality && quality->contains("sets") && (*quality)["sets"].is_object())
      for (const auto& [set, value] : (*quality)["sets"].items())
        data.gold_quality[set] = {number_or_nan(value, "agreement"), value.value("n", int64_t(0))};
  }
  if (fs::exists(stage.dir + "/ppo_curve.jsonl")) {
    CurveRun run{labels, {}};
    for (const auto& point : read_rows<EvalPoint>(stage.dir + "/ppo_curve.jsonl", data.notes))
      run.rows.push_back(curve_row(point));
    note_method(data, labels.setting.method);
    data.ppo.push_back(std::move(run));
  }
}

}  // namespace

RunData load_run(const std::string& run_dir) {
  RunData data;
  std::map<std::string, std::size_t> by_id;
  std::set<std::string> heads;
  for (auto& entry : read_dag(run_dir)) {
    StageRecord stage{std::move(entry), false};
    stage.dir = run_dir + "/" + stage.dir;
    stage.done = fs::exists(stage.dir + "/DONE");
    std::map<std::string, std::string> labels;
    for (const auto& [key, value] : stage.labels) {
      std::string short_key = key.substr(key.rfind('.') + 1);
      if (short_key == "method" || short_key == "alpha" || short_key == "size" || short_key == "head" ||
          short_key == "seed") {
        labels[short_key] = value;
      }
    }
    stage.labels = std::move(labels);
    if (stage.labels.count("head")) heads.insert(stage.labels["head"]);
    if (stage.labels.count("method")) note_method(data, stage.labels["method"]);
    by_id[stage.id] = data.stages.size();
    data.stages.push_back(std::move(stage));
  }
  // One head in the whole run tells the reader nothing: settings then carry no head.
  if (heads.size() <= 1)
    for (auto& stage : data.stages) stage.labels.erase("head");
  std::vector<std::string> not_done;
  for (const auto& stage : data.stages) {
    if (stage.done) {
      read_stage_outputs(data, stage, by_id);
    } else {
      not_done.push_back(stage.id + " (" + to_string(stage.state) + ")");
    }
  }
  if (!not_done.empty()) {
    if (not_done.size() > 6) not_done.resize(6), not_done.push_back("...");
    data.notes.push_back(fmt::format(
        "{} of {} stages are not done, so their results are missing: {}",
        std::count_if(data.stages.begin(), data.stages.end(), [](const StageRecord& s) { return !s.done; }),
        data.stages.size(), fmt::join(not_done, ", ")));
  }
  if (data.evals.empty())
    data.notes.push_back("No reward-model evaluation (eval.json) in this run: no accuracy table.");
  if (data.bon.empty()) data.notes.push_back("No Best-of-N results (bon_curves.json) in this run.");
  if (data.ppo.empty()) data.notes.push_back("No PPO results (ppo_curve.jsonl) in this run.");
  return data;
}

}  // namespace grm::report
