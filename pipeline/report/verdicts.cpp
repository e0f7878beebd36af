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

}  // namespace

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

}  // namespace grm::report
