// Whether the run shows the phenomenon it measures (ReportOptions says what that takes), and Gao et al.'s
// functional forms fitted to each method's gold curve.
#include <tuple>

#include <fmt/format.h>

#include "pipeline/report/report_parts.hpp"

namespace grm::report {

namespace {

std::string met_word(bool met) {
  return met ? "met" : "NOT met";
}

// The per-item values of the runs' rows at `index`, averaged over the runs (seeds) item by item; empty
// when a run lacks them or the runs disagree on the items.
std::vector<double> items_over_runs(const std::vector<const CurveRun*>& runs, size_t index, bool gold) {
  std::vector<double> mean;
  for (const CurveRun* run : runs) {
    if (index >= run->rows.size()) return {};
    const auto& items = gold ? run->rows[index].gold_items : run->rows[index].proxy_items;
    if (items.empty() || (!mean.empty() && items.size() != mean.size())) return {};
    if (mean.empty()) mean.assign(items.size(), 0.0);
    for (size_t i = 0; i < items.size(); ++i) mean[i] += items[i] / double(runs.size());
  }
  return mean;
}

double mean_over_runs(const std::vector<const CurveRun*>& runs, size_t index, double CurveRow::*field) {
  double sum = 0;
  for (const CurveRun* run : runs) sum += run->rows[index].*field;
  return sum / double(runs.size());
}

void bon_checks(const RunData& data, const Setting& base, const ReportOptions& o, std::vector<Check>& checks,
                std::vector<std::string>& notes) {
  auto runs = runs_at(data.bon, base);
  if (runs.empty()) return;
  size_t n_rows = runs[0]->rows.size();
  for (const CurveRun* run : runs) n_rows = std::min(n_rows, run->rows.size());
  auto first_gold = items_over_runs(runs, 0, true), first_proxy = items_over_runs(runs, 0, false);
  double gold_sd = mean_over_runs(runs, 0, &CurveRow::gold_sd);
  double proxy_sd = mean_over_runs(runs, 0, &CurveRow::proxy_sd);
  if (n_rows < 2 || first_gold.empty() || !(gold_sd > 0) || !(proxy_sd > 0)) {
    notes.push_back(
        "Best-of-N checks skipped: the curves have no per-prompt values or sample deviations "
        "(a run from before they were written).");
    return;
  }
  // The gold gain over n = 1 at each n, per prompt, in gold standard deviations; the best n is its peak.
  size_t best = 1;
  Estimate best_gain{-INFINITY, 0, 0, 0};
  for (size_t r = 1; r < n_rows; ++r) {
    Estimate gain = paired_difference(items_over_runs(runs, r, true), first_gold);
    if (gain.mean > best_gain.mean) best_gain = gain, best = r;
  }
  double n_best = runs[0]->rows[best].key, kl_best = runs[0]->rows[best].kl;
  Estimate in_sd{best_gain.mean / gold_sd, best_gain.lo / gold_sd, best_gain.hi / gold_sd, best_gain.n};
  bool signal = in_sd.mean >= o.min_bon_gold_gain_sd && in_sd.lo > 0;
  checks.push_back(
      {"bon_gold_gain",
       fmt::format(
           "Best-of-N against {}: the proxy carries signal — the gold gain at the best n ({}, KL {:.2f} "
           "nats) is {:.2f} standard deviations of single samples' gold score, 95% interval [{:.2f}, "
           "{:.2f}] over {} prompts (criterion: ≥ {} with the interval above 0): {}.",
           describe(base), n_best, kl_best, in_sd.mean, in_sd.lo, in_sd.hi, in_sd.n, o.min_bon_gold_gain_sd,
           met_word(signal)),
       signal});
  size_t last = n_rows - 1;
  double proxy_gain =
      (estimate(items_over_runs(runs, last, false)).mean - estimate(first_proxy).mean) / proxy_sd;
  double gold_gain = (estimate(items_over_runs(runs, last, true)).mean - estimate(first_gold).mean) / gold_sd;
  bool over = gold_gain <= 0 ? proxy_gain > 0 : proxy_gain >= o.min_bon_proxy_over_gold * gold_gain;
  checks.push_back(
      {"bon_over_optimization",
       fmt::format(
           "Best-of-N against {}: it over-optimizes — at the largest n ({}, KL {:.2f} nats) the proxy "
           "gained {:.2f} and the gold {:.2f} standard deviations, {} (criterion: proxy gain ≥ {}× the "
           "gold's): {}.",
           describe(base), runs[0]->rows[last].key, runs[0]->rows[last].kl, proxy_gain, gold_gain,
           gold_gain > 0 ? fmt::format("{:.2f}×", proxy_gain / gold_gain) : std::string("the gold fell"),
           o.min_bon_proxy_over_gold, met_word(over)),
       over});
}

void ppo_checks(const RunData& data, const Setting& base, const ReportOptions& o, std::vector<Check>& checks,
                std::vector<std::string>& notes) {
  auto runs = runs_at(data.ppo, base);
  if (runs.empty()) return;
  size_t n_rows = runs[0]->rows.size();
  for (const CurveRun* run : runs) n_rows = std::min(n_rows, run->rows.size());
  auto first = items_over_runs(runs, 0, false);
  auto final_proxy = items_over_runs(runs, n_rows - 1, false);
  if (n_rows < 2 || first.empty() || final_proxy.size() != first.size()) {
    notes.push_back("PPO checks skipped: the curve has fewer than two evaluations or no per-prompt values.");
    return;
  }
  // The rise and its standard error from the per-prompt differences (the same held-out prompts each time).
  std::vector<double> rise(first.size());
  for (size_t i = 0; i < first.size(); ++i) rise[i] = final_proxy[i] - first[i];
  Estimate spread = estimate(rise);
  double se = spread.n > 1 ? (spread.hi - spread.mean) / t_quantile_95(spread.n - 1) : NAN;
  double in_se = se > 0 ? spread.mean / se : NAN;
  bool rose = in_se >= o.min_ppo_proxy_rise_se;
  checks.push_back(
      {"ppo_proxy_rise",
       fmt::format("PPO against {}: the proxy score rose by {:+.3f} from step 0 to step {} = {:.1f} "
                   "standard errors over {} held-out prompts (criterion: ≥ {}): {}.",
                   describe(base), spread.mean, runs[0]->rows[n_rows - 1].key, in_se, rise.size(),
                   o.min_ppo_proxy_rise_se, met_word(rose)),
       rose});
  double max_kl = 0;
  bool gold = true;
  for (const CurveRun* run : runs)
    for (size_t r = 0; r < n_rows; ++r) {
      max_kl = std::max(max_kl, run->rows[r].kl);
      gold = gold && std::isfinite(run->rows[r].gold);
    }
  bool far = max_kl >= o.min_ppo_kl && gold;
  checks.push_back(
      {"ppo_kl",
       fmt::format("PPO against {}: it reached {:.2f} nats of KL from the initial policy{} "
                   "(criterion: ≥ {} nats, gold measured at every evaluation): {}.",
                   describe(base), max_kl, gold ? ", gold measured along the way" : ", without gold",
                   o.min_ppo_kl, met_word(far)),
       far});
}

}  // namespace

std::vector<Check> phenomenon_checks(const RunData& data, const Analysis& analysis, const ReportOptions& o,
                                     std::vector<std::string>& notes) {
  std::vector<Check> checks;
  for (const auto& [set, quality] : data.gold_quality) {
    bool met = quality.first >= o.min_gold_agreement;
    checks.push_back(
        {"gold_agreement_" + set,
         fmt::format("The gold RM agrees with the oracle's preference on {:.1f}% of {} held-out "
                     "pairs of '{}' (criterion: ≥ {:.0f}%): {}.",
                     100 * quality.first, quality.second, set, 100 * o.min_gold_agreement, met_word(met)),
         met});
  }
  if (std::count(data.methods.begin(), data.methods.end(), o.baseline) == 0) return checks;
  const Setting& base = analysis.main(o.baseline);
  if (auto id = analysis.accuracy(base, "id")) {
    bool met = id->mean >= o.min_baseline_id_accuracy;
    checks.push_back(
        {"baseline_id_accuracy",
         fmt::format("The baseline proxy {} ranks {:.1f}% of the ID evaluation pairs as the gold RM "
                     "does (criterion: ≥ {:.0f}%): {}.",
                     describe(base), 100 * id->mean, 100 * o.min_baseline_id_accuracy, met_word(met)),
         met});
  }
  bon_checks(data, base, o, checks, notes);
  ppo_checks(data, base, o, checks, notes);
  return checks;
}

std::vector<GaoRow> gao_fits(const RunData& data, const Analysis& analysis) {
  std::vector<GaoRow> rows;
  for (const auto& [runs, algorithm, form] :
       {std::tuple{&data.bon, "bon", GaoForm::best_of_n}, std::tuple{&data.ppo, "ppo", GaoForm::rl}}) {
    for (const auto& method : data.methods) {
      auto curve = analysis.curve(*runs, analysis.main(method));
      if (!curve || curve->gold.size() < 3) continue;
      std::vector<double> kl, gain;
      for (const auto& point : curve->gold) kl.push_back(point.x), gain.push_back(point.y - curve->gold[0].y);
      GaoFit fit = fit_gao(form, kl, gain);
      if (fit.ok) rows.push_back({method, algorithm, fit});
    }
  }
  return rows;
}

}  // namespace grm::report
