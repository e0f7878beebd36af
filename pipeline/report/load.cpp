// What the stages left: dag.json's stages, and the eval.json, metrics.jsonl, bon_curves.json and
// ppo_curve.jsonl of the stages that are DONE (report.hpp lists the formats).
#include <filesystem>
#include <sstream>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "pipeline/report/report_parts.hpp"

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

double field(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : NAN;
}

// Reads JSON Lines; a torn last line (a stage killed mid-write) is skipped.
std::vector<json> read_jsonl(const std::string& path, std::vector<std::string>& notes) {
  std::vector<json> rows;
  std::istringstream lines(read_file(path));
  int bad = 0;
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    json row = json::parse(line, nullptr, false);
    if (row.is_discarded() || !row.is_object()) {
      ++bad;
      continue;
    }
    rows.push_back(std::move(row));
  }
  if (bad > 1) notes.push_back(fmt::format("{}: skipped {} unreadable lines", path, bad));
  return rows;
}

std::optional<json> read_json(const std::string& path, std::vector<std::string>& notes) {
  json value = json::parse(read_file(path), nullptr, false);
  if (value.is_discarded()) {
    notes.push_back(path + ": not valid JSON; skipped");
    return std::nullopt;
  }
  return value;
}

Labelled labels_of(const StageRecord& stage) {
  auto get = [&](const char* key) {
    auto it = stage.labels.find(key);
    return it == stage.labels.end() ? std::string() : it->second;
  };
  std::string method = get("method");
  return {{method.empty() ? stage.name : method, get("alpha"), get("size")}, get("seed")};
}

CurveRow curve_row(const json& row, const char* key) {
  return {field(row, key),        field(row, "kl"),       field(row, "proxy"),   field(row, "gold"),
          field(row, "proxy_lo"), field(row, "proxy_hi"), field(row, "gold_lo"), field(row, "gold_hi")};
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
    if (auto eval = read_json(stage.dir + "/eval.json", data.notes); eval && eval->contains("sets")) {
      EvalRun run{labels, {}};
      for (const auto& [set, result] : (*eval)["sets"].items()) run.accuracy[set] = field(result, "accuracy");
      data.evals.push_back(std::move(run));
      note_method(data, labels.setting.method);
    }
  }
  // Reward-model training curves only: PPO stages keep their own metrics.jsonl beside ppo_curve.jsonl.
  if (fs::exists(stage.dir + "/metrics.jsonl") && !fs::exists(stage.dir + "/ppo_curve.jsonl")) {
    TrainRun run{labels, stage.labels.count("method") ? labels.setting.method : stage.name, {}};
    for (const auto& row : read_jsonl(stage.dir + "/metrics.jsonl", data.notes)) {
      run.rows.push_back({field(row, "step"), field(row, "loss"), field(row, "accuracy")});
    }
    data.trains.push_back(std::move(run));
  }
  if (fs::exists(stage.dir + "/bon_curves.json")) {
    if (auto bon = read_json(stage.dir + "/bon_curves.json", data.notes); bon && bon->contains("curves")) {
      data.bon_n_max = std::max(data.bon_n_max, static_cast<int>(bon->value("n_max", 0)));
      data.bon_n_prompts = std::max(data.bon_n_prompts, static_cast<int>(bon->value("n_prompts", 0)));
      for (const auto& [proxy, rows] : (*bon)["curves"].items()) {
        auto found = by_id.find(proxy);
        // A curve whose key is not a stage (a reference scorer, say) is labelled by its key.
        CurveRun run{
            found != by_id.end() ? labels_of(data.stages[found->second]) : Labelled{{proxy, "", ""}, ""}, {}};
        for (const auto& row : rows) run.rows.push_back(curve_row(row, "n"));
        note_method(data, run.setting.method);
        data.bon.push_back(std::move(run));
      }
    }
  }
  if (fs::exists(stage.dir + "/ppo_curve.jsonl")) {
    CurveRun run{labels, {}};
    for (const auto& row : read_jsonl(stage.dir + "/ppo_curve.jsonl", data.notes))
      run.rows.push_back(curve_row(row, "step"));
    note_method(data, labels.setting.method);
    data.ppo.push_back(std::move(run));
  }
}

}  // namespace

RunData load_run(const std::string& run_dir) {
  std::string dag_path = run_dir + "/dag.json";
  if (!fs::exists(dag_path))
    fail("{}: not found; is {} a grm run directory? (grm run writes it)", dag_path, run_dir);
  json dag = json::parse(read_file(dag_path), nullptr, false);
  if (dag.is_discarded() || !dag.contains("stages"))
    fail("{}: not a valid dag.json; re-run grm run", dag_path);
  RunData data;
  std::map<std::string, std::size_t> by_id;
  for (const auto& entry : dag["stages"]) {
    StageRecord stage;
    stage.id = entry.value("id", "");
    stage.name = entry.value("name", "");
    stage.subcommand = entry.value("subcommand", "");
    stage.state = entry.value("state", "pending");
    stage.dir = run_dir + "/" + entry.value("dir", "stages/" + stage.id);
    stage.done = fs::exists(stage.dir + "/DONE");
    for (const auto& [key, value] : entry.value("labels", std::map<std::string, std::string>{})) {
      std::string short_key = key.substr(key.rfind('.') + 1);
      if (short_key == "method" || short_key == "alpha" || short_key == "size" || short_key == "seed") {
        stage.labels[short_key] = value;
      }
    }
    if (stage.labels.count("method")) note_method(data, stage.labels["method"]);
    by_id[stage.id] = data.stages.size();
    data.stages.push_back(std::move(stage));
  }
  std::vector<std::string> not_done;
  for (const auto& stage : data.stages) {
    if (stage.done) {
      read_stage_outputs(data, stage, by_id);
    } else {
      not_done.push_back(stage.id + " (" + stage.state + ")");
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
