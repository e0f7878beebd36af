// Figures: the paper's Figure 2 (BoN and PPO proxy and gold against KL), Figures 6 and 1b (accuracy
// against α and size) and the training curves, drawn by plot.hpp.
#include <fmt/format.h>

#include "pipeline/report/report_parts.hpp"

namespace grm::report {

namespace {

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
    if (auto figure = rank_correlation()) figures.push_back(*figure);
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

  // The proxy-gold rank correlation against KL: BoN (over prompts' best-of-n expectations) and PPO (over
  // each evaluation's samples), one line per method at its main setting.
  std::optional<Figure> rank_correlation() const {
    Figure figure{"rank_correlation",
                  "Spearman's ρ of proxy and gold reward against KL from the initial policy, per method at "
                  "its main setting (mean over seeds; bars: 95% interval). Best-of-N: over prompts' "
                  "best-of-n expectations; PPO: over each evaluation's samples.",
                  {},
                  2};
    for (const auto& [runs, algorithm, name] :
         {std::tuple{&data_.bon, "Best-of-N", "bon"}, std::tuple{&data_.ppo, "PPO", "ppo"}}) {
      Panel panel = make_panel(std::string(algorithm) + ": proxy-gold rank correlation", kl_label(name),
                               "Spearman ρ(proxy, gold)");
      for (const auto& method : data_.methods) {
        auto points = rank_correlation_curve(runs_at(*runs, analysis_.main(method)));
        if (points.size() >= 2)
          panel.series.push_back(make_series(method, points, color(method), false, Series::Interval::bars));
      }
      if (!panel.series.empty()) figure.panels.push_back(std::move(panel));
    }
    if (figure.panels.empty()) return std::nullopt;
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
      // Over sizes, at the α swept over the most sizes (the main α on a tie): the main α is often a
      // value swept at the largest size only.
      std::string alpha = main.alpha;
      if (!by_alpha) {
        std::map<std::string, int> sizes_at;
        for (const auto& setting : analysis_.settings(method))
          if (setting.head == main.head) ++sizes_at[setting.alpha];
        for (const auto& [value, count] : sizes_at)
          if (count > sizes_at[alpha]) alpha = value;
      }
      std::map<std::string, Setting> along;  // axis value -> setting
      for (const auto& setting : analysis_.settings(method)) {
        bool fixed_matches =
            setting.head == main.head && (by_alpha ? setting.size == main.size : setting.alpha == alpha);
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
                              : "Accuracy against training-set size, at the α each method was swept over "
                                "sizes with (the paper's Figure 1b).";
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

}  // namespace

std::vector<Figure> build_figures(const RunData& data, const Analysis& analysis) {
  return FigureBuilder(data, analysis).all();
}

}  // namespace grm::report
