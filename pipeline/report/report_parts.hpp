// Private to pipeline/report/: what the report reads from a run (load.cpp), the aggregation over seeds
// and settings (aggregate.cpp), the verdicts (verdicts.cpp), the figures (figures.cpp) and the documents
// (documents.cpp, which holds build_report). report.hpp is the contract; this header is the plumbing.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "pipeline/dag.hpp"
#include "pipeline/report/gao_fit.hpp"
#include "pipeline/report/plot.hpp"
#include "pipeline/report/report.hpp"
#include "pipeline/report/stats.hpp"

namespace grm::report {

// ---- what the stages left (load.cpp) -------------------------------------------------------------------

struct Setting {
  // Label values, "" when a stage has no such label; head is "" too when the whole run has one head.
  std::string method, alpha, size, head;
  bool operator<(const Setting& other) const {
    return std::tie(method, alpha, size, head) < std::tie(other.method, other.alpha, other.size, other.head);
  }
  bool operator==(const Setting& other) const {
    return method == other.method && alpha == other.alpha && size == other.size && head == other.head;
  }
};

struct Labelled {
  Setting setting;
  std::string seed;
};

struct EvalRun : Labelled {
  std::map<std::string, double> accuracy;              // eval set -> fraction correct
  std::map<std::string, std::vector<double>> correct;  // eval set -> per pair 1 / 0 (paired items)
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
  double proxy_sd = NAN, gold_sd = NAN;         // BoN: single samples' standard deviations
  std::vector<double> proxy_items, gold_items;  // per prompt (paired items); empty in older runs
  // Over-optimization signals (NaN where a run has none). Pearson's r of proxy and gold reward with
  // response length (BoN: over all samples, the same at every n; PPO: over this evaluation's samples);
  // Spearman's rho of proxy and gold (BoN: over prompts' best-of-n expectations at this n; PPO: over this
  // evaluation's samples).
  double proxy_length_corr = NAN, gold_length_corr = NAN, proxy_gold_rank = NAN;
};
struct CurveRun : Labelled {
  std::vector<CurveRow> rows;
  double sample_proxy_gold_rank = NAN;  // BoN: Spearman's rho of proxy and gold over every sample
};

// A dag.json stage as the report reads it: `dir` is joined to the run directory, and `labels` keeps
// method, alpha, size, head and seed, keyed by their last dotted part ("rm.alpha" -> "alpha").
struct StageRecord : DagStage {
  bool done = false;  // its DONE marker is there
};

struct RunData {
  std::vector<StageRecord> stages;
  std::vector<EvalRun> evals;
  std::vector<TrainRun> trains;
  std::vector<CurveRun> bon, ppo;
  int bon_n_max = 0, bon_n_prompts = 0;
  // The gold RM's agreement with the oracle per evaluation set (the label stage's gold_quality.json).
  std::map<std::string, std::pair<double, int64_t>> gold_quality;
  std::vector<std::string> methods;  // in order of first appearance in the DAG
  std::vector<std::string> notes;    // what is missing or could not be read
};

// The DAG's stages and every result of the stages that are DONE; what is missing goes to notes.
RunData load_run(const std::string& run_dir);

std::string html_escape(const std::string& text);  // for text inside HTML elements and attributes
double to_number(const std::string& text);         // NaN unless the whole text is a number
// Numeric when both parse as numbers ("0.005" < "0.01"), text order otherwise.
bool label_less(const std::string& a, const std::string& b);
bool starts_with(const std::string& text, const std::string& prefix);

// ---- aggregation (aggregate.cpp) -------------------------------------------------------------------------

template <class Run>
std::vector<const Run*> runs_at(const std::vector<Run>& runs, const Setting& setting) {
  std::vector<const Run*> result;
  for (const auto& run : runs) {
    if (run.setting == setting) result.push_back(&run);
  }
  return result;
}

struct CurveSummary {
  std::vector<PlotPoint> proxy, gold;  // x = mean KL
  Estimate final_gold, peak_gold;
};

CurveSummary summarize(const std::vector<const CurveRun*>& runs);

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
      if (a.alpha != b.alpha) return label_less(a.alpha, b.alpha);
      return a.head < b.head;
    });
    return result;
  }

  // The smallest training-set size any result of the run has ("" when none is labelled).
  std::string smallest_size() const {
    std::string smallest;
    for (const auto& method : data_.methods)
      for (const auto& setting : settings(method))
        if (!setting.size.empty() && (smallest.empty() || label_less(setting.size, smallest)))
          smallest = setting.size;
    return smallest;
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
  // The largest training set, the method's most common head and its most common α: a side sweep (of
  // heads, of α around the configured value) is a study, not a pick of the best on the evaluation pairs.
  // Only among equally common α (a plain α grid) does the best ID accuracy choose.
  Setting choose_main(const std::string& method) const {
    std::vector<Setting> all = settings(method);
    if (all.empty()) return {method, "", "", ""};
    const std::string& largest = all.back().size;  // settings() sorts by size first
    // Counted over every size, chosen among what the largest size has (so there always is a choice).
    std::vector<Setting> at_largest;
    std::map<std::string, int> head_count, alpha_count;
    for (const auto& setting : all) {
      ++head_count[setting.head];
      if (setting.size == largest) at_largest.push_back(setting);
    }
    std::string head = at_largest.front().head;
    for (const auto& setting : at_largest)
      if (head_count[setting.head] > head_count[head]) head = setting.head;
    for (const auto& setting : all)
      if (setting.head == head) ++alpha_count[setting.alpha];
    int top = 0;
    for (const auto& setting : at_largest)
      if (setting.head == head) top = std::max(top, alpha_count[setting.alpha]);
    std::optional<Setting> best;
    double best_accuracy = -1;
    for (const auto& setting : at_largest) {
      if (setting.head != head || alpha_count[setting.alpha] != top) continue;
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
std::string describe(const Setting& setting);

// ---- over-optimization signals (signals.cpp) -------------------------------------------------------------

// Per method at its main setting, each signal's mean and 95% interval over seeds; n = 0 where the run
// has none. "first"/"last": BoN at n = 1 and n_max, PPO at its first and last evaluation.
struct SignalRow {
  Setting setting;
  Estimate bon_proxy_length, bon_gold_length, bon_sample_rank, bon_rank_first, bon_rank_last;
  Estimate ppo_proxy_length_first, ppo_proxy_length_last, ppo_gold_length_last, ppo_rank_first, ppo_rank_last;
};
std::vector<SignalRow> overoptimization_signals(const RunData& data, const Analysis& analysis);
std::string signals_markdown(const std::vector<SignalRow>& rows);
std::string signals_html(const std::vector<SignalRow>& rows);
nlohmann::json signals_json(const std::vector<SignalRow>& rows);
// The proxy-gold rank correlation against KL at each method's main setting (mean over seeds at each
// point), for BoN or PPO runs.
std::vector<PlotPoint> rank_correlation_curve(const std::vector<const CurveRun*>& runs);

// ---- verdicts (verdicts.cpp) -----------------------------------------------------------------------------

struct Comparison {
  std::string measure, label;
  bool percent = false;  // accuracy: shown in percent and points
  Setting grm, baseline;
  Estimate grm_value, baseline_value;
  bool beat = false, disjoint = false;
  std::string statement;
  bool clear_win = false;  // the interval of the difference lies above zero
  Estimate difference;     // GRM - baseline with its 95% interval (n = 0: no interval)
  std::string basis;       // how the interval was made: over seeds, or a paired bootstrap over items
  bool has_interval = false, worse = false;
};

std::string format_estimate(const Estimate& value, bool percent);
// GRM's main setting of every GRM method against the baseline's, on each measure with results for both;
// with other_methods, every method that is neither GRM nor the baseline instead (its `grm` fields then
// hold that method's setting and values).
std::vector<Comparison> compare_methods(const RunData& data, const Analysis& analysis,
                                        const ReportOptions& options, std::vector<std::string>& notes,
                                        bool other_methods = false);

// ---- what the run shows, and Gao et al.'s fits (checks.cpp) ----------------------------------------------

struct Check {
  std::string name;       // "gold_agreement_id", "bon_gold_gain", ...
  std::string statement;  // the measured value, the criterion, and whether it is met
  bool met = false;
};
// The checks of ReportOptions that the run's results allow (a missing part is a note, not a check).
std::vector<Check> phenomenon_checks(const RunData& data, const Analysis& analysis,
                                     const ReportOptions& options, std::vector<std::string>& notes);

struct GaoRow {
  std::string method, algorithm;  // algorithm: "bon" | "ppo"
  GaoFit fit;
};
// Each method's main-setting mean gold curve, as gain over its first point, fitted with Gao's form.
std::vector<GaoRow> gao_fits(const RunData& data, const Analysis& analysis);

// ---- figures (figures.cpp) -------------------------------------------------------------------------------

// Figure 2 (proxy and gold against KL) for BoN and PPO, Figures 6 and 1b (accuracy against α and
// size) and the training curves, for whatever results the run has.
std::vector<Figure> build_figures(const RunData& data, const Analysis& analysis);

}  // namespace grm::report
