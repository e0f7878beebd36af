// Verdicts: GRM against the baseline on each measure, in words the numbers can carry.
#include <functional>
#include <tuple>

#include <fmt/ranges.h>  // fmt::join (in fmt/format.h before fmt 11)

#include "pipeline/report/report_parts.hpp"

namespace grm::report {

namespace {

std::string format_value(double value, bool percent) {
  return percent ? fmt::format("{:.1f}%", 100 * value) : fmt::format("{:.3f}", value);
}

}  // namespace

std::string format_estimate(const Estimate& value, bool percent) {
  if (!value.has_interval()) return format_value(value.mean, percent);
  double half = (value.hi - value.lo) / 2;
  return percent ? fmt::format("{:.1f} ± {:.1f}%", 100 * value.mean, 100 * half)
                 : fmt::format("{:.3f} ± {:.3f}", value.mean, half);
}

namespace {

// A measure's value in one run (one seed) and the per-item values (prompts, pairs) it is the mean of.
struct Measured {
  double value = NAN;
  std::vector<double> items;
};
using PerSeed = std::map<std::string, Measured>;  // seed label -> the run's value

std::vector<double> concatenated_ood(const EvalRun& run) {
  std::vector<double> items;
  for (const auto& [set, correct] : run.correct)
    if (starts_with(set, "ood")) items.insert(items.end(), correct.begin(), correct.end());
  return items;
}

// The difference GRM - baseline with its 95% interval: over seeds where both have the same two or more
// seeds (paired by seed, a t-interval); with one shared seed, a paired bootstrap over the items both
// measured (the same evaluation pairs or prompts); otherwise no interval.
std::pair<Estimate, std::string> difference(const PerSeed& grm, const PerSeed& base,
                                            const std::string& items) {
  std::vector<double> by_seed;
  std::vector<double> pooled_a, pooled_b;  // the shared seeds' items, seed after seed
  int pooled_seeds = 0;
  for (const auto& [seed, value] : grm)
    if (base.count(seed) && std::isfinite(value.value) && std::isfinite(base.at(seed).value)) {
      by_seed.push_back(value.value - base.at(seed).value);
      if (!value.items.empty() && value.items.size() == base.at(seed).items.size()) {
        pooled_a.insert(pooled_a.end(), value.items.begin(), value.items.end());
        pooled_b.insert(pooled_b.end(), base.at(seed).items.begin(), base.at(seed).items.end());
        ++pooled_seeds;
      }
    }
  if (by_seed.size() >= 2) {
    Estimate over_seeds = estimate(by_seed);
    // Equal up to rounding (k/200 accuracies subtract to differences an ulp apart) counts as equal.
    if (over_seeds.hi - over_seeds.lo > 1e-9 * std::max(1.0, std::abs(over_seeds.mean)))
      return {over_seeds, fmt::format("t-interval over {} seeds, paired by seed", by_seed.size())};
    // Every seed differs by the same amount (counts of a few pairs do): a t-interval of zero width would
    // claim certainty, so the interval comes from the items instead, pooled over the seeds.
    if (!pooled_a.empty())
      return {paired_difference(pooled_a, pooled_b),
              fmt::format("paired bootstrap over the same {} {} of {} seeds (the seeds' differences were "
                          "equal)",
                          pooled_a.size(), items, pooled_seeds)};
    return {Estimate{over_seeds.mean, over_seeds.mean, over_seeds.mean, 0},
            fmt::format("no interval: the {} seeds' differences were equal and there are no per-item results",
                        by_seed.size())};
  }
  const Measured* a = grm.size() == 1 ? &grm.begin()->second : nullptr;
  const Measured* b = base.size() == 1 ? &base.begin()->second : nullptr;
  if (by_seed.size() == 1) {
    for (const auto& [seed, value] : grm)
      if (base.count(seed)) a = &value, b = &base.at(seed);
  }
  if (a && b && !a->items.empty() && a->items.size() == b->items.size())
    return {paired_difference(a->items, b->items),
            fmt::format("paired bootstrap over the same {} {}", a->items.size(), items)};
  double mean = (a && b) ? a->value - b->value : NAN;
  return {Estimate{mean, mean, mean, 0}, "no interval: one run each and no per-item results"};
}

// subject: who the statement is about ("GRM", or another method's label).
Comparison compare(const std::string& subject, const std::string& measure, const std::string& label,
                   bool percent, const Setting& grm, const Estimate& grm_value, const Setting& baseline,
                   const Estimate& baseline_value, const std::pair<Estimate, std::string>& diff) {
  Comparison c;
  c.measure = measure, c.label = label, c.percent = percent;
  c.grm = grm, c.baseline = baseline, c.grm_value = grm_value, c.baseline_value = baseline_value;
  c.difference = diff.first;
  c.basis = diff.second;
  c.has_interval = c.difference.n > 0;
  c.beat = c.has_interval && c.difference.lo > 0;
  c.worse = c.has_interval && c.difference.hi < 0;
  c.disjoint = intervals_disjoint(grm_value, baseline_value);
  auto amount = [&](double x) {
    return percent ? fmt::format("{:+.1f} points", 100 * x) : fmt::format("{:+.3f}", x);
  };
  std::string interval = c.has_interval ? fmt::format("95% interval [{}, {}], {}", amount(c.difference.lo),
                                                      amount(c.difference.hi), c.basis)
                                        : c.basis;
  // "beat" and "worse" only when the interval of the difference excludes zero; otherwise the numbers
  // cannot tell the two apart.
  std::string verdict = c.beat           ? "beat"
                        : c.worse        ? "was worse than"
                        : c.has_interval ? "was within noise of"
                                         : "cannot be told apart from";
  c.clear_win = c.beat;
  c.statement = fmt::format("{}: {} {} the baseline — {}: {} vs {}: {}; difference {} ({}).", label, subject,
                            verdict, describe(grm), format_estimate(grm_value, percent), describe(baseline),
                            format_estimate(baseline_value, percent), amount(c.difference.mean), interval);
  return c;
}

}  // namespace

std::vector<Comparison> compare_methods(const RunData& data, const Analysis& analysis,
                                        const ReportOptions& options, std::vector<std::string>& notes,
                                        bool other_methods) {
  std::vector<Comparison> comparisons;
  bool has_baseline = std::count(data.methods.begin(), data.methods.end(), options.baseline) > 0;
  bool has_grm = std::any_of(data.methods.begin(), data.methods.end(),
                             [&](const std::string& m) { return analysis.is_grm(m); });
  // The other methods need only the baseline; the GRM comparison already says when it is missing.
  if (other_methods && !has_baseline) return comparisons;
  if (!has_baseline || (!has_grm && !other_methods)) {
    notes.push_back(
        fmt::format("No comparison: the run needs results for the baseline (method '{}') and for GRM "
                    "(a method starting with '{}'); it has: {}.",
                    options.baseline, options.grm_prefix,
                    data.methods.empty() ? "none" : fmt::format("{}", fmt::join(data.methods, ", "))));
    return comparisons;
  }
  const Setting& base = analysis.main(options.baseline);
  using Summary = std::function<std::optional<Estimate>(const Setting&)>;
  using Runs = std::function<PerSeed(const Setting&)>;
  auto accuracy_runs = [&](bool ood) -> Runs {
    return [&data, ood](const Setting& s) {
      PerSeed out;
      for (const EvalRun* run : runs_at(data.evals, s)) {
        Measured m;
        if (ood) {
          std::vector<double> sets;
          for (const auto& [set, accuracy] : run->accuracy)
            if (starts_with(set, "ood") && std::isfinite(accuracy)) sets.push_back(accuracy);
          if (sets.empty()) continue;
          m.value = estimate(sets).mean;
          m.items = concatenated_ood(*run);
        } else {
          auto it = run->accuracy.find("id");
          if (it == run->accuracy.end()) continue;
          m.value = it->second;
          if (run->correct.count("id")) m.items = run->correct.at("id");
        }
        out[run->seed] = std::move(m);
      }
      return out;
    };
  };
  // The gold reward of a run's curve at its last point (largest KL) or at its own peak.
  auto curve_runs = [](const std::vector<CurveRun>& runs, bool peak) -> Runs {
    return [&runs, peak](const Setting& s) {
      PerSeed out;
      for (const CurveRun* run : runs_at(runs, s)) {
        if (run->rows.empty()) continue;
        auto row =
            peak ? std::max_element(run->rows.begin(), run->rows.end(),
                                    [](const CurveRow& a, const CurveRow& b) { return a.gold < b.gold; })
                 : std::max_element(run->rows.begin(), run->rows.end(),
                                    [](const CurveRow& a, const CurveRow& b) { return a.key < b.key; });
        out[run->seed] = {row->gold, row->gold_items};
      }
      return out;
    };
  };
  auto curve_summary = [&](const std::vector<CurveRun>& runs, bool peak) -> Summary {
    return [&runs, peak, &analysis](const Setting& s) -> std::optional<Estimate> {
      auto curve = analysis.curve(runs, s);
      if (!curve) return std::nullopt;
      return peak ? curve->peak_gold : curve->final_gold;
    };
  };
  std::string bon_end = data.bon_n_max > 0 ? fmt::format(" (n = {})", data.bon_n_max) : "";
  struct Measure {
    std::string name, label;
    bool percent;
    Summary summary;
    Runs runs;
    std::string items;
  };
  const std::vector<Measure> measures = {
      {"id_accuracy", "ID accuracy", true, [&](const Setting& s) { return analysis.accuracy(s, "id"); },
       accuracy_runs(false), "evaluation pairs"},
      {"ood_accuracy", fmt::format("OOD accuracy (mean of {} sets)", analysis.n_ood()), true,
       [&](const Setting& s) { return analysis.ood_accuracy(s); }, accuracy_runs(true),
       "OOD evaluation pairs"},
      {"bon_gold_at_max_kl", "BoN gold reward at the largest KL" + bon_end, false,
       curve_summary(data.bon, false), curve_runs(data.bon, false), "prompts"},
      {"bon_peak_gold", "BoN peak gold reward", false, curve_summary(data.bon, true),
       curve_runs(data.bon, true), "prompts"},
      {"ppo_gold_final", "PPO gold reward at the end (largest KL)", false, curve_summary(data.ppo, false),
       curve_runs(data.ppo, false), "held-out prompts"},
      {"ppo_peak_gold", "PPO peak gold reward", false, curve_summary(data.ppo, true),
       curve_runs(data.ppo, true), "held-out prompts"}};
  for (const auto& method : data.methods) {
    if (method == options.baseline || analysis.is_grm(method) == other_methods) continue;
    const Setting& grm = analysis.main(method);
    for (const auto& m : measures) {
      auto grm_value = m.summary(grm);
      auto base_value = m.summary(base);
      if (!grm_value && !base_value) continue;
      if (!grm_value || !base_value) {
        notes.push_back(
            fmt::format("{}: not compared, no result for {}.", m.label, describe(grm_value ? base : grm)));
        continue;
      }
      comparisons.push_back(compare(other_methods ? method : "GRM", m.name, m.label, m.percent, grm,
                                    *grm_value, base, *base_value,
                                    difference(m.runs(grm), m.runs(base), m.items)));
    }
  }
  return comparisons;
}

}  // namespace grm::report
