#include "pipeline/report.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include <nlohmann/json.hpp>

#include "cluster/atomic_file.hpp"
#include "cluster/error.hpp"
#include "pipeline/plot.hpp"
#include "pipeline/stats.hpp"

namespace grm {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// ---- what the stages left -------------------------------------------------------------------------

struct Setting {
  std::string method, alpha, size;  // label values, "" when a stage has no such label
  bool operator<(const Setting& other) const {
    return std::tie(method, alpha, size) < std::tie(other.method, other.alpha, other.size);
  }
  bool operator==(const Setting& other) const {
    return method == other.method && alpha == other.alpha && size == other.size;
  }
};

struct Labelled {
  Setting setting;
  std::string seed;
};

struct EvalRun : Labelled {
  std::map<std::string, double> accuracy;  // eval set -> fraction correct
};

struct TrainRow {
  double step, loss, accuracy;
};
struct TrainRun : Labelled {
  std::string series;  // legend entry: the method, or the stage name for unlabelled stages (gold RM)
  std::vector<TrainRow> rows;
};

struct CurveRow {
  double key;  // BoN: n; PPO: step
  double kl, proxy, gold, proxy_lo, proxy_hi, gold_lo, gold_hi;
};
struct CurveRun : Labelled {
  std::vector<CurveRow> rows;
};

struct StageRecord {
  std::string id, name, subcommand, dir, state;
  bool done = false;
  std::map<std::string, std::string> labels;
};

struct RunData {
  std::vector<StageRecord> stages;
  std::vector<EvalRun> evals;
  std::vector<TrainRun> trains;
  std::vector<CurveRun> bon, ppo;
  int bon_n_max = 0, bon_n_prompts = 0;
  std::vector<std::string> methods;  // in order of first appearance in the DAG
  std::vector<std::string> notes;    // what is missing or could not be read
};

double to_number(const std::string& text) {
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  return !text.empty() && end && *end == '\0' ? value : NAN;
}

// Numeric when both parse as numbers ("0.005" < "0.01"), text order otherwise.
bool label_less(const std::string& a, const std::string& b) {
  double x = to_number(a), y = to_number(b);
  if (std::isfinite(x) && std::isfinite(y) && x != y) return x < y;
  return a < b;
}

double field(const json& object, const char* key) {
  auto it = object.find(key);
  return it != object.end() && it->is_number() ? it->get<double>() : NAN;
}

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
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

// ---- aggregation ---------------------------------------------------------------------------------

template <class Run>
std::vector<const Run*> runs_at(const std::vector<Run>& runs, const Setting& setting) {
  std::vector<const Run*> result;
  for (const auto& run : runs) {
    if (run.setting == setting) result.push_back(&run);
  }
  return result;
}

// Over seeds when there are several; a single run keeps the interval it carries (bootstrap over prompts).
Estimate over_runs(const std::vector<double>& values, double lo, double hi) {
  if (values.size() != 1) return estimate(values);
  Estimate single{values[0], values[0], values[0], 1};
  if (std::isfinite(lo) && std::isfinite(hi) && lo <= values[0] && values[0] <= hi)
    single.lo = lo, single.hi = hi;
  return single;
}

struct CurveSummary {
  std::vector<PlotPoint> proxy, gold;  // x = mean KL
  Estimate final_gold, peak_gold;
};

CurveSummary summarize(const std::vector<const CurveRun*>& runs) {
  CurveSummary summary;
  std::map<double, std::vector<const CurveRow*>> by_key;
  std::vector<double> finals, peaks;
  const CurveRow* last_single = nullptr;
  const CurveRow* peak_single = nullptr;
  for (const CurveRun* run : runs) {
    if (run->rows.empty()) continue;
    for (const auto& row : run->rows) by_key[row.key].push_back(&row);
    auto last = std::max_element(run->rows.begin(), run->rows.end(),
                                 [](const CurveRow& a, const CurveRow& b) { return a.key < b.key; });
    auto peak = std::max_element(run->rows.begin(), run->rows.end(),
                                 [](const CurveRow& a, const CurveRow& b) { return a.gold < b.gold; });
    finals.push_back(last->gold);
    peaks.push_back(peak->gold);
    last_single = &*last;
    peak_single = &*peak;
  }
  for (const auto& [key, rows] : by_key) {
    std::vector<double> kls, proxies, golds;
    for (const CurveRow* row : rows)
      kls.push_back(row->kl), proxies.push_back(row->proxy), golds.push_back(row->gold);
    double kl = estimate(kls).mean;
    Estimate proxy = over_runs(proxies, rows[0]->proxy_lo, rows[0]->proxy_hi);
    Estimate gold = over_runs(golds, rows[0]->gold_lo, rows[0]->gold_hi);
    summary.proxy.push_back({kl, proxy.mean, proxy.lo, proxy.hi});
    summary.gold.push_back({kl, gold.mean, gold.lo, gold.hi});
  }
  if (!finals.empty()) {
    summary.final_gold = over_runs(finals, last_single->gold_lo, last_single->gold_hi);
    summary.peak_gold = over_runs(peaks, peak_single->gold_lo, peak_single->gold_hi);
  } else {
    summary.final_gold = summary.peak_gold = estimate({});
  }
  return summary;
}

class Analysis {
 public:
  Analysis(const RunData& data, const ReportOptions& options) : data_(data), options_(options) {
    std::set<std::string> sets;
    for (const auto& run : data.evals) {
      for (const auto& [set, accuracy] : run.accuracy) sets.insert(set);
    }
    if (sets.count("id")) set_names_.push_back("id");
    for (const auto& set : sets) {
      if (starts_with(set, "ood")) set_names_.push_back(set), ++n_ood_;
    }
    for (const auto& set : sets) {
      if (set != "id" && !starts_with(set, "ood")) set_names_.push_back(set);
    }
    id_set_ = sets.count("id") ? "id" : "";
    for (const auto& method : data.methods) main_[method] = choose_main(method);
  }

  const std::vector<std::string>& set_names() const { return set_names_; }
  int n_ood() const { return n_ood_; }
  const Setting& main(const std::string& method) const { return main_.at(method); }
  bool is_grm(const std::string& method) const {
    return method != options_.baseline && starts_with(method, options_.grm_prefix);
  }

  // Every setting of `method` seen in any output, in label order.
  std::vector<Setting> settings(const std::string& method) const {
    std::set<Setting> found;
    auto collect = [&](const auto& runs) {
      for (const auto& run : runs) {
        if (run.setting.method == method) found.insert(run.setting);
      }
    };
    collect(data_.evals);
    collect(data_.bon);
    collect(data_.ppo);
    collect(data_.trains);
    std::vector<Setting> result(found.begin(), found.end());
    std::sort(result.begin(), result.end(), [](const Setting& a, const Setting& b) {
      if (a.size != b.size) return label_less(a.size, b.size);
      return label_less(a.alpha, b.alpha);
    });
    return result;
  }

  std::optional<Estimate> accuracy(const Setting& setting, const std::string& set) const {
    std::vector<double> values;
    for (const EvalRun* run : runs_at(data_.evals, setting)) {
      auto it = run->accuracy.find(set);
      if (it != run->accuracy.end() && std::isfinite(it->second)) values.push_back(it->second);
    }
    if (values.empty()) return std::nullopt;
    return estimate(values);
  }

  // Per seed, the mean over the OOD sets; then mean and interval over seeds.
  std::optional<Estimate> ood_accuracy(const Setting& setting) const {
    std::vector<double> values;
    for (const EvalRun* run : runs_at(data_.evals, setting)) {
      std::vector<double> sets;
      for (const auto& [set, accuracy] : run->accuracy) {
        if (starts_with(set, "ood") && std::isfinite(accuracy)) sets.push_back(accuracy);
      }
      if (!sets.empty()) values.push_back(estimate(sets).mean);
    }
    if (values.empty()) return std::nullopt;
    return estimate(values);
  }

  std::optional<CurveSummary> curve(const std::vector<CurveRun>& runs, const Setting& setting) const {
    auto at = runs_at(runs, setting);
    if (at.empty()) return std::nullopt;
    return summarize(at);
  }

 private:
  Setting choose_main(const std::string& method) const {
    std::vector<Setting> all = settings(method);
    if (all.empty()) return {method, "", ""};
    std::string largest = all.back().size;
    std::optional<Setting> best;
    double best_accuracy = -1;
    for (const auto& setting : all) {
      if (setting.size != largest) continue;
      if (!best) best = setting;
      auto id = id_set_.empty() ? std::nullopt : accuracy(setting, id_set_);
      if (id && id->mean > best_accuracy) best_accuracy = id->mean, best = setting;
    }
    return *best;
  }

  const RunData& data_;
  const ReportOptions& options_;
  std::vector<std::string> set_names_;
  int n_ood_ = 0;
  std::string id_set_;
  std::map<std::string, Setting> main_;
};

// "grm (α=0.01, size=2000)"
std::string describe(const Setting& setting) {
  std::string details;
  if (!setting.alpha.empty()) details += "α=" + setting.alpha;
  if (!setting.size.empty()) details += (details.empty() ? "" : ", ") + std::string("size=") + setting.size;
  return details.empty() ? setting.method : setting.method + " (" + details + ")";
}

// ---- verdicts ------------------------------------------------------------------------------------

struct Comparison {
  std::string measure, label;
  bool percent = false;  // accuracy: shown in percent and points
  Setting grm, baseline;
  Estimate grm_value, baseline_value;
  bool beat = false, disjoint = false;
  std::string statement;
  bool clear_win = false;  // ahead by a shown amount, and outside the baseline's interval where there is one
};

std::string format_value(double value, bool percent) {
  return percent ? fmt::format("{:.1f}%", 100 * value) : fmt::format("{:.3f}", value);
}

std::string format_estimate(const Estimate& value, bool percent) {
  if (!value.has_interval()) return format_value(value.mean, percent);
  double half = (value.hi - value.lo) / 2;
  return percent ? fmt::format("{:.1f} ± {:.1f}%", 100 * value.mean, 100 * half)
                 : fmt::format("{:.3f} ± {:.3f}", value.mean, half);
}

Comparison compare(const std::string& measure, const std::string& label, bool percent, const Setting& grm,
                   const Estimate& grm_value, const Setting& baseline, const Estimate& baseline_value) {
  Comparison c{measure, label, percent, grm, baseline, grm_value, baseline_value, false, false, ""};
  double difference = grm_value.mean - baseline_value.mean;
  c.beat = difference > 0;
  c.disjoint = intervals_disjoint(grm_value, baseline_value);
  std::string amount = percent ? fmt::format("{:+.1f} points", 100 * difference)
                               : fmt::format("{:+.3f} gold-RM units", difference);
  if (!percent && baseline_value.mean != 0)
    amount += fmt::format(", {:+.0f}%", 100 * difference / std::fabs(baseline_value.mean));
  std::string certainty;
  if (grm_value.has_interval() && baseline_value.has_interval()) {
    certainty = c.disjoint ? "the 95% intervals do not overlap"
                           : "the 95% intervals overlap, so the difference is within noise";
  } else {
    certainty = "no confidence interval (one seed)";
  }
  // The words follow what the numbers can carry: a difference that shows as zero (0.0 points, 0.000
  // units) is a match, and a lead inside overlapping intervals is no clear win.
  bool rounds_to_zero = std::fabs(difference) < 0.0005;
  bool overlapping = grm_value.has_interval() && baseline_value.has_interval() && !c.disjoint;
  std::string verdict = rounds_to_zero ? "matched"
                        : !c.beat      ? "did not beat"
                        : overlapping  ? "was not clearly better than"
                                       : "beat";
  c.clear_win = verdict == "beat";
  c.statement = fmt::format("{}: GRM {} the baseline — {}: {} vs {}: {} ({}); {}.", label, verdict,
                            describe(grm), format_estimate(grm_value, percent), describe(baseline),
                            format_estimate(baseline_value, percent), amount, certainty);
  return c;
}

std::vector<Comparison> compare_methods(const RunData& data, const Analysis& analysis,
                                        const ReportOptions& options, std::vector<std::string>& notes) {
  std::vector<Comparison> comparisons;
  bool has_baseline = std::count(data.methods.begin(), data.methods.end(), options.baseline) > 0;
  bool has_grm = std::any_of(data.methods.begin(), data.methods.end(),
                             [&](const std::string& m) { return analysis.is_grm(m); });
  if (!has_baseline || !has_grm) {
    notes.push_back(
        fmt::format("No comparison: the run needs results for the baseline (method '{}') and for GRM "
                    "(a method starting with '{}'); it has: {}.",
                    options.baseline, options.grm_prefix,
                    data.methods.empty() ? "none" : fmt::format("{}", fmt::join(data.methods, ", "))));
    return comparisons;
  }
  const Setting& base = analysis.main(options.baseline);
  using Measure = std::function<std::optional<Estimate>(const Setting&)>;
  auto curve_measure = [&](const std::vector<CurveRun>& runs, bool peak) -> Measure {
    return [&runs, peak, &analysis](const Setting& s) -> std::optional<Estimate> {
      auto curve = analysis.curve(runs, s);
      if (!curve) return std::nullopt;
      return peak ? curve->peak_gold : curve->final_gold;
    };
  };
  std::string bon_end = data.bon_n_max > 0 ? fmt::format(" (n = {})", data.bon_n_max) : "";
  const std::vector<std::tuple<std::string, std::string, bool, Measure>> measures = {
      {"id_accuracy", "ID accuracy", true, [&](const Setting& s) { return analysis.accuracy(s, "id"); }},
      {"ood_accuracy", fmt::format("OOD accuracy (mean of {} sets)", analysis.n_ood()), true,
       [&](const Setting& s) { return analysis.ood_accuracy(s); }},
      {"bon_gold_at_max_kl", "BoN gold reward at the largest KL" + bon_end, false,
       curve_measure(data.bon, false)},
      {"bon_peak_gold", "BoN peak gold reward", false, curve_measure(data.bon, true)},
      {"ppo_gold_final", "PPO gold reward at the end (largest KL)", false, curve_measure(data.ppo, false)},
      {"ppo_peak_gold", "PPO peak gold reward", false, curve_measure(data.ppo, true)}};
  for (const auto& method : data.methods) {
    if (!analysis.is_grm(method)) continue;
    const Setting& grm = analysis.main(method);
    for (const auto& [measure, label, percent, get] : measures) {
      auto grm_value = get(grm);
      auto base_value = get(base);
      if (!grm_value && !base_value) continue;
      if (!grm_value || !base_value) {
        notes.push_back(
            fmt::format("{}: not compared, no result for {}.", label, describe(grm_value ? base : grm)));
        continue;
      }
      comparisons.push_back(compare(measure, label, percent, grm, *grm_value, base, *base_value));
    }
  }
  return comparisons;
}

// ---- figures -------------------------------------------------------------------------------------

Panel make_panel(std::string title, std::string x_label, std::string y_label, bool log_x = false) {
  Panel panel;
  panel.title = std::move(title);
  panel.x_label = std::move(x_label);
  panel.y_label = std::move(y_label);
  panel.log_x = log_x;
  return panel;
}

Series make_series(std::string title, std::vector<PlotPoint> points, int color, bool dashed,
                   Series::Interval interval = Series::Interval::none) {
  bool any_interval =
      std::any_of(points.begin(), points.end(), [](const PlotPoint& p) { return p.hi > p.lo; });
  return {std::move(title), std::move(points), color, dashed,
          any_interval ? interval : Series::Interval::none};
}

class FigureBuilder {
 public:
  FigureBuilder(const RunData& data, const Analysis& analysis) : data_(data), analysis_(analysis) {}

  std::vector<Figure> all() const {
    std::vector<Figure> figures;
    for (const auto& [runs, algorithm, name] :
         {std::tuple{&data_.bon, "Best-of-N", "bon"}, std::tuple{&data_.ppo, "PPO", "ppo"}}) {
      if (runs->empty()) continue;
      figures.push_back(proxy_and_gold(*runs, algorithm, name));
      figures.push_back(gold_only(*runs, algorithm, name));
    }
    if (auto figure = accuracy_vs("alpha")) figures.push_back(*figure);
    if (auto figure = accuracy_vs("size")) figures.push_back(*figure);
    if (!data_.trains.empty()) figures.push_back(training());
    return figures;
  }

 private:
  int color(const std::string& method) const {
    auto it = std::find(data_.methods.begin(), data_.methods.end(), method);
    return static_cast<int>(it - data_.methods.begin());
  }

  static std::string kl_label(const std::string& name) {
    return name == "bon" ? "KL(π_BoN ‖ π_init) (nats)" : "KL(π_PPO ‖ π_init) (nats)";
  }

  // The paper's Figure 2: one panel per method, proxy dashed, gold solid.
  Figure proxy_and_gold(const std::vector<CurveRun>& runs, const std::string& algorithm,
                        const std::string& name) const {
    Figure figure{name + "_proxy_gold",
                  algorithm +
                      ": proxy reward (dashed) and gold reward (solid) against KL from the initial policy, "
                      "per method at its main setting; shading: 95% interval of the gold reward.",
                  {},
                  3};
    for (const auto& method : data_.methods) {
      auto curve = analysis_.curve(runs, analysis_.main(method));
      if (!curve) continue;
      Panel panel = make_panel(describe(analysis_.main(method)), kl_label(name), "reward (RM units)");
      panel.series.push_back(
          make_series("gold RM", curve->gold, color(method), false, Series::Interval::band));
      panel.series.push_back(make_series("proxy RM", curve->proxy, color(method), true));
      figure.panels.push_back(std::move(panel));
    }
    return figure;
  }

  Figure gold_only(const std::vector<CurveRun>& runs, const std::string& algorithm,
                   const std::string& name) const {
    Panel panel =
        make_panel(algorithm + ": gold reward against KL", kl_label(name), "gold reward (RM units)");
    for (const auto& method : data_.methods) {
      auto curve = analysis_.curve(runs, analysis_.main(method));
      if (curve)
        panel.series.push_back(
            make_series(method, curve->gold, color(method), false, Series::Interval::band));
    }
    return {name + "_gold",
            algorithm + ": gold reward of every method against KL (higher and later-peaking is better).",
            {panel},
            1};
  }

  // Figure 6 (over α, at each method's main size) or Figure 1b (over size, at each method's main α).
  std::optional<Figure> accuracy_vs(const std::string& axis) const {
    bool by_alpha = axis == "alpha";
    Panel id_panel = make_panel(
        "in distribution", by_alpha ? "α (regularization weight)" : "preference pairs in the training set",
        "accuracy (%)", !by_alpha);
    Panel ood_panel = id_panel;
    ood_panel.title = fmt::format("out of distribution (mean of {} sets)", analysis_.n_ood());
    for (const auto& method : data_.methods) {
      const Setting& main = analysis_.main(method);
      std::map<std::string, Setting> along;  // axis value -> setting
      for (const auto& setting : analysis_.settings(method)) {
        bool fixed_matches = by_alpha ? setting.size == main.size : setting.alpha == main.alpha;
        const std::string& value = by_alpha ? setting.alpha : setting.size;
        if (fixed_matches && std::isfinite(to_number(value))) along[value] = setting;
      }
      if (along.size() < 2) continue;
      std::vector<std::pair<std::string, Setting>> ordered(along.begin(), along.end());
      std::sort(ordered.begin(), ordered.end(),
                [](const auto& a, const auto& b) { return label_less(a.first, b.first); });
      std::vector<PlotPoint> id_points, ood_points;
      for (const auto& [value, setting] : ordered) {
        double x = to_number(value);
        if (auto id = analysis_.accuracy(setting, "id"))
          id_points.push_back({x, 100 * id->mean, 100 * id->lo, 100 * id->hi});
        if (auto ood = analysis_.ood_accuracy(setting))
          ood_points.push_back({x, 100 * ood->mean, 100 * ood->lo, 100 * ood->hi});
      }
      if (!by_alpha) {
        for (const auto& point : id_points) id_panel.x_tics.push_back(point.x);
      }
      id_panel.series.push_back(make_series(method, id_points, color(method), false, Series::Interval::bars));
      ood_panel.series.push_back(
          make_series(method, ood_points, color(method), false, Series::Interval::bars));
    }
    if (id_panel.series.empty()) return std::nullopt;
    if (by_alpha) add_flat_lines(id_panel, ood_panel);
    // Sizes are few and spread over decades: mark each one (gnuplot's log tics would show 1000 only).
    std::sort(id_panel.x_tics.begin(), id_panel.x_tics.end());
    id_panel.x_tics.erase(std::unique(id_panel.x_tics.begin(), id_panel.x_tics.end()), id_panel.x_tics.end());
    ood_panel.x_tics = id_panel.x_tics;
    std::string caption = by_alpha
                              ? "Accuracy against the regularization weight α, at each method's largest "
                                "training set (the paper's Figure 6); dashed: methods without an α sweep."
                              : "Accuracy against training-set size, at each method's main α (the paper's "
                                "Figure 1b).";
    Figure figure{by_alpha ? "accuracy_vs_alpha" : "accuracy_vs_size",
                  caption + " Bars: 95% interval over seeds.",
                  {id_panel},
                  2};
    if (analysis_.n_ood() > 0) figure.panels.push_back(ood_panel);
    return figure;
  }

  // Methods without an α sweep (the baselines) as flat dashed lines across the α range, for reference.
  void add_flat_lines(Panel& id_panel, Panel& ood_panel) const {
    double lo = INFINITY, hi = -INFINITY;
    for (const auto& series : id_panel.series) {
      for (const auto& point : series.points) lo = std::min(lo, point.x), hi = std::max(hi, point.x);
    }
    std::set<std::string> swept;
    for (const auto& series : id_panel.series) swept.insert(series.title);
    for (const auto& method : data_.methods) {
      if (swept.count(method)) continue;
      const Setting& main = analysis_.main(method);
      if (auto id = analysis_.accuracy(main, "id")) {
        id_panel.series.push_back(
            make_series(method, {{lo, 100 * id->mean}, {hi, 100 * id->mean}}, color(method), true));
      }
      if (auto ood = analysis_.ood_accuracy(main)) {
        ood_panel.series.push_back(
            make_series(method, {{lo, 100 * ood->mean}, {hi, 100 * ood->mean}}, color(method), true));
      }
    }
  }

  Figure training() const {
    Panel loss = make_panel("training loss", "step", "loss (nats per pair)");
    Panel accuracy = make_panel("training accuracy", "step", "accuracy (%)");
    std::map<std::string, std::vector<const TrainRun*>> groups;  // series -> runs (seeds)
    std::vector<std::string> order;
    for (const auto& run : data_.trains) {
      bool labelled = std::count(data_.methods.begin(), data_.methods.end(), run.series) > 0;
      // Proxies at their method's main setting only; unlabelled stages (the gold RM) always.
      if (labelled && !(run.setting == analysis_.main(run.series))) continue;
      if (!groups.count(run.series)) order.push_back(run.series);
      groups[run.series].push_back(&run);
    }
    int extra_color = static_cast<int>(data_.methods.size());
    for (const auto& series : order) {
      std::map<double, std::vector<const TrainRow*>> by_step;
      for (const TrainRun* run : groups[series]) {
        for (const auto& row : run->rows) by_step[row.step].push_back(&row);
      }
      std::vector<PlotPoint> loss_points, accuracy_points;
      for (const auto& [step, rows] : by_step) {
        std::vector<double> losses, accuracies;
        for (const TrainRow* row : rows) {
          if (std::isfinite(row->loss)) losses.push_back(row->loss);
          if (std::isfinite(row->accuracy)) accuracies.push_back(row->accuracy);
        }
        if (!losses.empty()) loss_points.push_back({step, estimate(losses).mean});
        if (!accuracies.empty()) accuracy_points.push_back({step, 100 * estimate(accuracies).mean});
      }
      bool labelled = std::count(data_.methods.begin(), data_.methods.end(), series) > 0;
      int c = labelled ? color(series) : extra_color++;
      loss.series.push_back(make_series(series, loss_points, c, !labelled));
      accuracy.series.push_back(make_series(series, accuracy_points, c, !labelled));
    }
    return {"training",
            "Reward-model training curves (mean over seeds) at each method's main setting; dashed: stages "
            "without a "
            "method label, such as the gold RM.",
            {loss, accuracy},
            2};
  }

  const RunData& data_;
  const Analysis& analysis_;
};

// ---- documents -----------------------------------------------------------------------------------

std::string html_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string base64(const std::string& bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t chunk = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) chunk |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) chunk |= static_cast<unsigned char>(bytes[i + 2]);
    out += alphabet[(chunk >> 18) & 63];
    out += alphabet[(chunk >> 12) & 63];
    out += i + 1 < bytes.size() ? alphabet[(chunk >> 6) & 63] : '=';
    out += i + 2 < bytes.size() ? alphabet[chunk & 63] : '=';
  }
  return out;
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size())) {
    text.replace(at, from.size(), to);
  }
}

// An SVG file as an element to inline in HTML: without its XML prolog, its ids prefixed so that the
// figures' gnuplot-generated ids (gpPt0, ...) do not collide within one page.
std::string inline_svg(std::string svg, const std::string& prefix) {
  std::size_t start = svg.find("<svg");
  if (start != std::string::npos) svg.erase(0, start);
  for (const char* quote : {"'", "\""}) {
    replace_all(svg, std::string("id=") + quote, std::string("id=") + quote + prefix);
    replace_all(svg, std::string("href=") + quote + "#", std::string("href=") + quote + "#" + prefix);
  }
  replace_all(svg, "url(#", "url(#" + prefix);
  return svg;
}

struct AccuracyTable {
  std::vector<std::string> columns;  // eval sets, then "OOD mean" when there are OOD sets
  struct Row {
    Setting setting;
    int seeds = 0;
    std::vector<std::optional<Estimate>> cells;
  };
  std::vector<Row> rows;
  std::vector<double> best;  // per column, the highest mean
};

// The paper's Table 1: every setting at its method's largest training set (so α variants show).
AccuracyTable accuracy_table(const RunData& data, const Analysis& analysis) {
  AccuracyTable table;
  table.columns = analysis.set_names();
  if (analysis.n_ood() > 0) table.columns.push_back("OOD mean");
  table.best.assign(table.columns.size(), -INFINITY);
  for (const auto& method : data.methods) {
    for (const auto& setting : analysis.settings(method)) {
      if (setting.size != analysis.main(method).size) continue;
      auto runs = runs_at(data.evals, setting);
      if (runs.empty()) continue;
      AccuracyTable::Row row{setting, static_cast<int>(runs.size()), {}};
      for (const auto& set : analysis.set_names()) row.cells.push_back(analysis.accuracy(setting, set));
      if (analysis.n_ood() > 0) row.cells.push_back(analysis.ood_accuracy(setting));
      for (std::size_t c = 0; c < row.cells.size(); ++c) {
        if (row.cells[c]) table.best[c] = std::max(table.best[c], row.cells[c]->mean);
      }
      table.rows.push_back(std::move(row));
    }
  }
  return table;
}

std::string table_markdown(const AccuracyTable& table) {
  if (table.rows.empty()) return "";
  std::string text = "| method | α | size | seeds |";
  for (const auto& column : table.columns) text += " " + column + " |";
  text += "\n|---|---|---|---|";
  for (std::size_t c = 0; c < table.columns.size(); ++c) text += "---|";
  text += "\n";
  for (const auto& row : table.rows) {
    text += fmt::format("| {} | {} | {} | {} |", row.setting.method, row.setting.alpha, row.setting.size,
                        row.seeds);
    for (std::size_t c = 0; c < row.cells.size(); ++c) {
      if (!row.cells[c]) {
        text += " – |";
        continue;
      }
      std::string cell = format_estimate(*row.cells[c], true);
      text += row.cells[c]->mean == table.best[c] ? " **" + cell + "** |" : " " + cell + " |";
    }
    text += "\n";
  }
  return text;
}

std::string table_html(const AccuracyTable& table) {
  if (table.rows.empty()) return "<p>No evaluation results.</p>\n";
  std::string text = "<table>\n<tr><th>method</th><th>α</th><th>size</th><th>seeds</th>";
  for (const auto& column : table.columns) text += "<th>" + html_escape(column) + "</th>";
  text += "</tr>\n";
  for (const auto& row : table.rows) {
    text += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>", html_escape(row.setting.method),
                        html_escape(row.setting.alpha), html_escape(row.setting.size), row.seeds);
    for (std::size_t c = 0; c < row.cells.size(); ++c) {
      if (!row.cells[c]) {
        text += "<td>–</td>";
        continue;
      }
      std::string cell = html_escape(format_estimate(*row.cells[c], true));
      text += row.cells[c]->mean == table.best[c] ? "<td><b>" + cell + "</b></td>" : "<td>" + cell + "</td>";
    }
    text += "</tr>\n";
  }
  return text + "</table>\n";
}

json estimate_json(const Estimate& value) {
  auto number = [](double x) { return std::isfinite(x) ? json(x) : json(nullptr); };
  return {{"mean", number(value.mean)}, {"lo", number(value.lo)}, {"hi", number(value.hi)}, {"n", value.n}};
}

json setting_json(const Setting& setting) {
  return {{"method", setting.method}, {"alpha", setting.alpha}, {"size", setting.size}};
}

json curves_json(const std::vector<CurveRun>& runs, const RunData& data, const Analysis& analysis) {
  json curves = json::object();
  for (const auto& method : data.methods) {
    auto curve = analysis.curve(runs, analysis.main(method));
    if (!curve) continue;
    json points = json::array();
    for (std::size_t i = 0; i < curve->gold.size(); ++i) {
      points.push_back({{"kl", curve->gold[i].x},
                        {"proxy", curve->proxy[i].y},
                        {"gold", curve->gold[i].y},
                        {"gold_lo", curve->gold[i].lo},
                        {"gold_hi", curve->gold[i].hi}});
    }
    curves[method] = {{"setting", setting_json(analysis.main(method))},
                      {"final_gold", estimate_json(curve->final_gold)},
                      {"peak_gold", estimate_json(curve->peak_gold)},
                      {"points", points}};
  }
  return curves;
}

const char* kStyle =
    R"(body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 9px;text-align:right}
td:first-child,th:first-child,.stages td{text-align:left}.meta{color:#666}
li.beat{color:#05603a}li.even{color:#6b5d00}li.lost{color:#8a1c1c}figure{margin:1.5em 0}
figure svg{max-width:100%;height:auto;border:1px solid #eee}figcaption{color:#444;margin-top:.4em})";

}  // namespace

std::string build_report(const std::string& run_dir, const ReportOptions& options) {
  RunData data = load_run(run_dir);
  Analysis analysis(data, options);
  std::vector<std::string> notes = data.notes;
  std::vector<Comparison> comparisons = compare_methods(data, analysis, options, notes);
  AccuracyTable table = accuracy_table(data, analysis);

  std::string report_dir = run_dir + "/report";
  std::string plot_dir = report_dir + "/plots";
  fs::create_directories(plot_dir);
  std::vector<std::pair<Figure, RenderedFigure>> figures;
  for (const auto& figure : FigureBuilder(data, analysis).all()) {
    figures.emplace_back(figure, render_figure(figure, plot_dir));
  }

  std::string verdict;
  for (const auto& comparison : comparisons) verdict += "- " + comparison.statement + "\n";
  if (verdict.empty()) verdict = "- No verdict: see the notes.\n";
  std::string main_settings;
  for (const auto& method : data.methods) main_settings += "- " + describe(analysis.main(method)) + "\n";

  std::size_t n_done =
      std::count_if(data.stages.begin(), data.stages.end(), [](const StageRecord& s) { return s.done; });
  std::string markdown =
      fmt::format("# Reward over-optimization report\n\nRun: `{}` — {} of {} stages done.\n\n", run_dir,
                  n_done, data.stages.size());
  markdown += "## Did GRM beat the baseline?\n\n" + verdict;
  markdown +=
      "\nEach method is compared at its main setting (largest training set; best-ID α):\n\n" + main_settings;
  if (!table.rows.empty())
    markdown += "\n## Accuracy (Table 1)\n\nMean ± 95% interval over seeds; best in bold.\n\n" +
                table_markdown(table);
  if (!figures.empty()) markdown += "\n## Figures\n\n";
  for (const auto& [figure, files] : figures) {
    markdown += fmt::format("- [{}](plots/{}.png) ([SVG](plots/{}.svg)): {}\n", figure.name, figure.name,
                            figure.name, figure.caption);
  }
  if (!notes.empty()) markdown += "\n## Notes\n\n";
  for (const auto& note : notes) markdown += "- " + note + "\n";

  json summary;
  summary["run_dir"] = run_dir;
  summary["stages"] = {{"total", data.stages.size()}, {"done", n_done}};
  summary["baseline"] = options.baseline;
  summary["methods"] = data.methods;
  summary["main_settings"] = json::object();
  for (const auto& method : data.methods)
    summary["main_settings"][method] = setting_json(analysis.main(method));
  summary["accuracy"] = json::array();
  for (const auto& row : table.rows) {
    json sets = json::object();
    for (std::size_t c = 0; c < row.cells.size(); ++c) {
      if (row.cells[c])
        sets[c < analysis.set_names().size() ? table.columns[c] : "ood_mean"] = estimate_json(*row.cells[c]);
    }
    summary["accuracy"].push_back(
        {{"setting", setting_json(row.setting)}, {"seeds", row.seeds}, {"sets", sets}});
  }
  summary["bon"] = curves_json(data.bon, data, analysis);
  summary["ppo"] = curves_json(data.ppo, data, analysis);
  summary["comparisons"] = json::array();
  for (const auto& c : comparisons) {
    summary["comparisons"].push_back({{"measure", c.measure},
                                      {"label", c.label},
                                      {"grm_setting", setting_json(c.grm)},
                                      {"baseline_setting", setting_json(c.baseline)},
                                      {"grm", estimate_json(c.grm_value)},
                                      {"baseline", estimate_json(c.baseline_value)},
                                      {"difference", c.grm_value.mean - c.baseline_value.mean},
                                      {"grm_beat_baseline", c.beat},
                                      {"intervals_disjoint", c.disjoint},
                                      {"statement", c.statement}});
  }
  summary["notes"] = notes;
  summary["figures"] = json::array();
  for (const auto& [figure, files] : figures) summary["figures"].push_back("plots/" + figure.name + ".png");

  std::string html = fmt::format(
      "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>grm report: {}</title>"
      "<style>{}</style></head><body>\n<h1>Reward over-optimization report</h1>\n<p class=\"meta\">Run "
      "<code>{}</code> — {} of {} stages done.</p>\n<h2>Did GRM beat the baseline?</h2>\n<ul>\n",
      html_escape(run_dir), kStyle, html_escape(run_dir), n_done, data.stages.size());
  for (const auto& c : comparisons) {
    html += fmt::format("<li class=\"{}\">{}</li>\n",
                        c.clear_win ? "beat"
                        : c.beat    ? "even"
                                    : "lost",
                        html_escape(c.statement));
  }
  if (comparisons.empty()) html += "<li>No verdict: see the notes.</li>\n";
  html +=
      "</ul>\n<p>Each method is compared at its main setting (largest training set; the α with the best ID "
      "accuracy):</p><ul>\n";
  for (const auto& method : data.methods)
    html += "<li>" + html_escape(describe(analysis.main(method))) + "</li>\n";
  html +=
      "</ul>\n<h2>Accuracy (Table 1)</h2>\n<p>Mean ± 95% interval over seeds; the best in each column in "
      "bold.</p>\n" +
      table_html(table);
  html += "<h2>Figures</h2>\n";
  for (std::size_t i = 0; i < figures.size(); ++i) {
    const auto& [figure, files] = figures[i];
    html += fmt::format(
        "<figure id=\"{}\">\n{}\n<figcaption>{} <a download=\"{}.png\" "
        "href=\"data:image/png;base64,{}\">PNG</a></figcaption>\n</figure>\n",
        figure.name, inline_svg(read_file(files.svg_path), fmt::format("f{}_", i)),
        html_escape(figure.caption), figure.name, base64(read_file(files.png_path)));
  }
  if (figures.empty()) html += "<p>No curves to plot.</p>\n";
  if (!notes.empty()) html += "<h2>Notes</h2>\n<ul>\n";
  for (const auto& note : notes) html += "<li>" + html_escape(note) + "</li>\n";
  if (!notes.empty()) html += "</ul>\n";
  html += fmt::format(
      "<h2>Stages</h2>\n<details><summary>{} of {} stages done</summary>\n<table class=\"stages\">\n"
      "<tr><th>stage</th><th>state</th><th>labels</th></tr>\n",
      n_done, data.stages.size());
  for (const auto& stage : data.stages) {
    std::string labels;
    for (const auto& [key, value] : stage.labels) labels += key + "=" + value + " ";
    html += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n", html_escape(stage.id),
                        stage.done ? "done" : html_escape(stage.state), html_escape(labels));
  }
  html += "</table>\n</details>\n</body></html>\n";

  write_file_atomic(report_dir + "/summary.md", markdown);
  write_file_atomic(report_dir + "/summary.json", summary.dump(2) + "\n");
  write_file_atomic(report_dir + "/index.html", html);
  return verdict;
}

}  // namespace grm
