// Over-optimization signals beside the curves (Singhal et al.'s length correlation; the proxy-gold rank
// agreement Gao et al. and Coste et al. read): per method at its main setting, over seeds.
#include <functional>

#include <fmt/format.h>

#include "pipeline/report/report_parts.hpp"

namespace grm::report {

using json = nlohmann::json;

namespace {

// Mean and interval over the runs' finite values; n = 0 when none has one.
Estimate over_seeds(const std::vector<const CurveRun*>& runs,
                    const std::function<double(const CurveRun&)>& get) {
  std::vector<double> values;
  for (const CurveRun* run : runs)
    if (!run->rows.empty() && std::isfinite(get(*run))) values.push_back(get(*run));
  if (values.empty()) return Estimate{NAN, NAN, NAN, 0};
  return estimate(values);
}

const CurveRow& first_row(const CurveRun& run) {
  return *std::min_element(run.rows.begin(), run.rows.end(),
                           [](const CurveRow& a, const CurveRow& b) { return a.key < b.key; });
}
const CurveRow& last_row(const CurveRun& run) {
  return *std::max_element(run.rows.begin(), run.rows.end(),
                           [](const CurveRow& a, const CurveRow& b) { return a.key < b.key; });
}

std::string cell(const Estimate& e) {
  if (e.n == 0) return "–";
  return e.has_interval() ? fmt::format("{:+.2f} ± {:.2f}", e.mean, (e.hi - e.lo) / 2)
                          : fmt::format("{:+.2f}", e.mean);
}
std::string arrow(const Estimate& first, const Estimate& last) {
  if (first.n == 0 && last.n == 0) return "–";
  return cell(first) + " → " + cell(last);
}

const char* kHeader[] = {"method",
                         "BoN r(proxy, length)",
                         "BoN r(gold, length)",
                         "BoN ρ(proxy, gold) over samples",
                         "BoN ρ(proxy, gold) over prompts, n = 1 → max",
                         "PPO r(proxy, length), first → last",
                         "PPO r(gold, length), last",
                         "PPO ρ(proxy, gold), first → last"};

std::vector<std::string> cells(const SignalRow& row) {
  return {describe(row.setting),
          cell(row.bon_proxy_length),
          cell(row.bon_gold_length),
          cell(row.bon_sample_rank),
          arrow(row.bon_rank_first, row.bon_rank_last),
          arrow(row.ppo_proxy_length_first, row.ppo_proxy_length_last),
          cell(row.ppo_gold_length_last),
          arrow(row.ppo_rank_first, row.ppo_rank_last)};
}

json estimate_or_null(const Estimate& e) {
  if (e.n == 0) return nullptr;
  return {{"mean", e.mean}, {"lo", e.lo}, {"hi", e.hi}, {"n", e.n}};
}

}  // namespace

std::vector<SignalRow> overoptimization_signals(const RunData& data, const Analysis& analysis) {
  std::vector<SignalRow> rows;
  for (const auto& method : data.methods) {
    const Setting& main = analysis.main(method);
    auto bon = runs_at(data.bon, main), ppo = runs_at(data.ppo, main);
    if (bon.empty() && ppo.empty()) continue;
    SignalRow row;
    row.setting = main;
    row.bon_proxy_length = over_seeds(bon, [](const CurveRun& r) { return first_row(r).proxy_length_corr; });
    row.bon_gold_length = over_seeds(bon, [](const CurveRun& r) { return first_row(r).gold_length_corr; });
    row.bon_sample_rank = over_seeds(bon, [](const CurveRun& r) { return r.sample_proxy_gold_rank; });
    row.bon_rank_first = over_seeds(bon, [](const CurveRun& r) { return first_row(r).proxy_gold_rank; });
    row.bon_rank_last = over_seeds(bon, [](const CurveRun& r) { return last_row(r).proxy_gold_rank; });
    row.ppo_proxy_length_first =
        over_seeds(ppo, [](const CurveRun& r) { return first_row(r).proxy_length_corr; });
    row.ppo_proxy_length_last =
        over_seeds(ppo, [](const CurveRun& r) { return last_row(r).proxy_length_corr; });
    row.ppo_gold_length_last =
        over_seeds(ppo, [](const CurveRun& r) { return last_row(r).gold_length_corr; });
    row.ppo_rank_first = over_seeds(ppo, [](const CurveRun& r) { return first_row(r).proxy_gold_rank; });
    row.ppo_rank_last = over_seeds(ppo, [](const CurveRun& r) { return last_row(r).proxy_gold_rank; });
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string signals_markdown(const std::vector<SignalRow>& rows) {
  if (rows.empty()) return "";
  std::string text = "|", rule = "|";
  for (const char* column : kHeader) text += fmt::format(" {} |", column), rule += "---|";
  text += "\n" + rule + "\n";
  for (const auto& row : rows) {
    text += "|";
    for (const auto& value : cells(row)) text += " " + value + " |";
    text += "\n";
  }
  return text;
}

std::string signals_html(const std::vector<SignalRow>& rows) {
  if (rows.empty()) return "";
  std::string html = "<table>\n<tr>";
  for (const char* column : kHeader) html += fmt::format("<th>{}</th>", html_escape(column));
  html += "</tr>\n";
  for (const auto& row : rows) {
    html += "<tr>";
    for (const auto& value : cells(row)) html += "<td>" + html_escape(value) + "</td>";
    html += "</tr>\n";
  }
  return html + "</table>\n";
}

json signals_json(const std::vector<SignalRow>& rows) {
  json out = json::array();
  for (const auto& row : rows)
    out.push_back({{"setting",
                    {{"method", row.setting.method},
                     {"alpha", row.setting.alpha},
                     {"size", row.setting.size},
                     {"head", row.setting.head}}},
                   {"bon_proxy_length_corr", estimate_or_null(row.bon_proxy_length)},
                   {"bon_gold_length_corr", estimate_or_null(row.bon_gold_length)},
                   {"bon_proxy_gold_spearman_samples", estimate_or_null(row.bon_sample_rank)},
                   {"bon_proxy_gold_spearman_first", estimate_or_null(row.bon_rank_first)},
                   {"bon_proxy_gold_spearman_last", estimate_or_null(row.bon_rank_last)},
                   {"ppo_proxy_length_corr_first", estimate_or_null(row.ppo_proxy_length_first)},
                   {"ppo_proxy_length_corr_last", estimate_or_null(row.ppo_proxy_length_last)},
                   {"ppo_gold_length_corr_last", estimate_or_null(row.ppo_gold_length_last)},
                   {"ppo_proxy_gold_spearman_first", estimate_or_null(row.ppo_rank_first)},
                   {"ppo_proxy_gold_spearman_last", estimate_or_null(row.ppo_rank_last)}});
  return out;
}

std::vector<PlotPoint> rank_correlation_curve(const std::vector<const CurveRun*>& runs) {
  std::map<double, std::vector<const CurveRow*>> by_key;
  for (const CurveRun* run : runs)
    for (const auto& row : run->rows)
      if (std::isfinite(row.proxy_gold_rank)) by_key[row.key].push_back(&row);
  std::vector<PlotPoint> points;
  for (const auto& [key, rows] : by_key) {
    std::vector<double> kls, ranks;
    for (const CurveRow* row : rows) kls.push_back(row->kl), ranks.push_back(row->proxy_gold_rank);
    Estimate rank = estimate(ranks);
    points.push_back({estimate(kls).mean, rank.mean, rank.lo, rank.hi});
  }
  std::sort(points.begin(), points.end(), [](const PlotPoint& a, const PlotPoint& b) { return a.x < b.x; });
  return points;
}

}  // namespace grm::report
