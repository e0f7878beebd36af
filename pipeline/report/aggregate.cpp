// Aggregation: curves and accuracies over seeds, at each method's settings.
#include <fmt/format.h>

#include "pipeline/report/report_parts.hpp"

namespace grm::report {

namespace {

// Over seeds when there are several; a single run keeps the interval it carries (bootstrap over prompts).
Estimate over_runs(const std::vector<double>& values, double lo, double hi) {
  if (values.size() != 1) return estimate(values);
  Estimate single{values[0], values[0], values[0], 1};
  if (std::isfinite(lo) && std::isfinite(hi) && lo <= values[0] && values[0] <= hi)
    single.lo = lo, single.hi = hi;
  return single;
}

}  // namespace

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

// "grm (α=0.01, size=2000)"
std::string describe(const Setting& setting) {
  std::string details;
  if (!setting.alpha.empty()) details += "α=" + setting.alpha;
  if (!setting.size.empty()) details += (details.empty() ? "" : ", ") + std::string("size=") + setting.size;
  if (!setting.head.empty()) details += (details.empty() ? "" : ", ") + std::string("head=") + setting.head;
  return details.empty() ? setting.method : setting.method + " (" + details + ")";
}

}  // namespace grm::report
