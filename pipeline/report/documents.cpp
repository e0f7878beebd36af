// Documents: the report's summary.md, summary.json and self-contained index.html, and build_report.
#include <filesystem>
#include <functional>

#include <fmt/format.h>

#include "core/atomic_file.hpp"
#include "pipeline/report/report_parts.hpp"

namespace grm {
namespace report {

namespace fs = std::filesystem;
using json = nlohmann::json;

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

namespace {

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
  std::string name, title, caption;  // summary.json key, heading, text under the heading
  std::vector<std::string> columns;  // eval sets, then "OOD mean" when there are OOD sets
  struct Row {
    Setting setting;
    int seeds = 0;
    std::vector<std::optional<Estimate>> cells;
  };
  std::vector<Row> rows;
  std::vector<double> best;  // per column, the highest mean
  bool heads = false;        // a head column: the run has more than one head
};

// Every setting that `keep` accepts, per method in order of appearance, with results.
AccuracyTable accuracy_table(const RunData& data, const Analysis& analysis,
                             const std::function<bool(const Setting&)>& keep) {
  AccuracyTable table;
  table.columns = analysis.set_names();
  if (analysis.n_ood() > 0) table.columns.push_back("OOD mean");
  table.best.assign(table.columns.size(), -INFINITY);
  for (const auto& method : data.methods) {
    for (const auto& setting : analysis.settings(method)) {
      if (!keep(setting)) continue;
      auto runs = runs_at(data.evals, setting);
      if (runs.empty()) continue;
      AccuracyTable::Row row{setting, static_cast<int>(runs.size()), {}};
      for (const auto& set : analysis.set_names()) row.cells.push_back(analysis.accuracy(setting, set));
      if (analysis.n_ood() > 0) row.cells.push_back(analysis.ood_accuracy(setting));
      for (std::size_t c = 0; c < row.cells.size(); ++c) {
        if (row.cells[c]) table.best[c] = std::max(table.best[c], row.cells[c]->mean);
      }
      table.heads = table.heads || !setting.head.empty();
      table.rows.push_back(std::move(row));
    }
  }
  return table;
}

// The paper's Table 1 (every α at each method's main size and head), Figure 7 (each head at the main
// size and α, for methods run with several heads) and Table 7 (every method at the smallest size, where
// the run has several sizes).
std::vector<AccuracyTable> accuracy_tables(const RunData& data, const Analysis& analysis) {
  std::vector<AccuracyTable> tables;
  auto main_of = [&](const Setting& s) { return analysis.main(s.method); };
  AccuracyTable table1 = accuracy_table(data, analysis, [&](const Setting& s) {
    return s.size == main_of(s).size && s.head == main_of(s).head;
  });
  table1.name = "accuracy";
  table1.title = "Accuracy (Table 1)";
  table1.caption = "At each method's main size and head; mean ± 95% interval over seeds; best in bold.";
  tables.push_back(std::move(table1));
  std::map<std::string, std::set<std::string>> heads;  // method -> heads at its main size and α
  for (const auto& method : data.methods)
    for (const auto& s : analysis.settings(method))
      if (s.size == main_of(s).size && s.alpha == main_of(s).alpha) heads[method].insert(s.head);
  AccuracyTable by_head = accuracy_table(data, analysis, [&](const Setting& s) {
    return heads[s.method].size() > 1 && s.size == main_of(s).size && s.alpha == main_of(s).alpha;
  });
  by_head.name = "accuracy_by_head";
  by_head.title = "Reward head (Figure 7)";
  by_head.caption =
      "Each head (linear: one layer; mlp: two; mlp2: three) at the method's main size and α; mean ± 95% "
      "interval over seeds.";
  if (!by_head.rows.empty()) tables.push_back(std::move(by_head));
  std::string smallest = analysis.smallest_size();
  bool several_sizes = false;
  for (const auto& method : data.methods)
    several_sizes = several_sizes || (!smallest.empty() && analysis.main(method).size != smallest);
  if (several_sizes) {
    AccuracyTable small = accuracy_table(
        data, analysis, [&](const Setting& s) { return s.size == smallest && s.head == main_of(s).head; });
    small.name = "accuracy_smallest_size";
    small.title = fmt::format("Smallest training set, {} pairs (Table 7)", smallest);
    small.caption =
        "Every method run at the smallest size (with its main head); mean ± 95% interval over seeds.";
    if (!small.rows.empty()) tables.push_back(std::move(small));
  }
  return tables;
}

std::string table_markdown(const AccuracyTable& table) {
  if (table.rows.empty()) return "";
  std::string text = table.heads ? "| method | α | size | head | seeds |" : "| method | α | size | seeds |";
  for (const auto& column : table.columns) text += " " + column + " |";
  text += table.heads ? "\n|---|---|---|---|---|" : "\n|---|---|---|---|";
  for (std::size_t c = 0; c < table.columns.size(); ++c) text += "---|";
  text += "\n";
  for (const auto& row : table.rows) {
    text += fmt::format("| {} | {} | {} |", row.setting.method, row.setting.alpha, row.setting.size);
    if (table.heads) text += " " + row.setting.head + " |";
    text += fmt::format(" {} |", row.seeds);
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
  std::string text = "<table>\n<tr><th>method</th><th>α</th><th>size</th>";
  if (table.heads) text += "<th>head</th>";
  text += "<th>seeds</th>";
  for (const auto& column : table.columns) text += "<th>" + html_escape(column) + "</th>";
  text += "</tr>\n";
  for (const auto& row : table.rows) {
    text += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td>", html_escape(row.setting.method),
                        html_escape(row.setting.alpha), html_escape(row.setting.size));
    if (table.heads) text += "<td>" + html_escape(row.setting.head) + "</td>";
    text += fmt::format("<td>{}</td>", row.seeds);
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
  json out = {{"method", setting.method}, {"alpha", setting.alpha}, {"size", setting.size}};
  if (!setting.head.empty()) out["head"] = setting.head;
  return out;
}

json table_json(const AccuracyTable& table, const Analysis& analysis) {
  json rows = json::array();
  for (const auto& row : table.rows) {
    json sets = json::object();
    for (std::size_t c = 0; c < row.cells.size(); ++c) {
      if (row.cells[c])
        sets[c < analysis.set_names().size() ? table.columns[c] : "ood_mean"] = estimate_json(*row.cells[c]);
    }
    rows.push_back({{"setting", setting_json(row.setting)}, {"seeds", row.seeds}, {"sets", sets}});
  }
  return rows;
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
}  // namespace report

std::string build_report(const std::string& run_dir, const ReportOptions& options) {
  using namespace report;
  RunData data = load_run(run_dir);
  Analysis analysis(data, options);
  std::vector<std::string> notes = data.notes;
  std::vector<Comparison> comparisons = compare_methods(data, analysis, options, notes);
  std::vector<std::string> other_notes;
  std::vector<Comparison> others = compare_methods(data, analysis, options, other_notes, true);
  for (const auto& note : other_notes)  // a missing baseline result is noted by both: once is enough
    if (std::find(notes.begin(), notes.end(), note) == notes.end()) notes.push_back(note);
  std::vector<Check> checks = phenomenon_checks(data, analysis, options, notes);
  std::vector<GaoRow> fits = gao_fits(data, analysis);
  std::string checks_text;
  for (const auto& check : checks) checks_text += "- " + check.statement + "\n";
  auto fit_cell = [](const Estimate& e) {
    return e.has_interval() ? fmt::format("{:.3f} [{:.3f}, {:.3f}]", e.mean, e.lo, e.hi)
                            : fmt::format("{:.3f}", e.mean);
  };
  auto peak_cell = [](double kl) {
    return std::isfinite(kl) ? fmt::format("{:.2f}", kl) : std::string("none (β ≤ 0)");
  };
  std::string fits_markdown;
  if (!fits.empty()) {
    fits_markdown =
        "| method | optimizer | α | β | KL at the fitted gold peak (nats) | points | residual RMS |\n"
        "|---|---|---|---|---|---|---|\n";
    for (const auto& row : fits)
      fits_markdown += fmt::format("| {} | {} | {} | {} | {} | {} | {:.3f} |\n", row.method,
                                   row.algorithm == "bon" ? "Best-of-N" : "PPO", fit_cell(row.fit.alpha),
                                   fit_cell(row.fit.beta), peak_cell(row.fit.peak_kl), row.fit.n_points,
                                   row.fit.residual_rms);
  }
  std::vector<AccuracyTable> tables = accuracy_tables(data, analysis);
  std::vector<SignalRow> signals = overoptimization_signals(data, analysis);
  const std::string signals_caption =
      "Per method at its main setting, mean ± 95% interval over seeds. r: Pearson's correlation of reward "
      "with response length in tokens (a proxy more length-correlated than the gold rewards length, not "
      "quality); ρ: Spearman's rank correlation of proxy and gold (BoN: over all samples, and over prompts' "
      "best-of-n expectations at n = 1 and the largest n; PPO: over each evaluation's samples). A ρ that "
      "falls as the optimizer moves away from the initial policy is the proxy losing the gold's ranking. –: "
      "no value, or undefined (every sample of the evaluation the same length, as when PPO's responses all "
      "run to max_new_tokens).";

  std::string report_dir = run_dir + "/report";
  std::string plot_dir = report_dir + "/plots";
  fs::create_directories(plot_dir);
  std::vector<std::pair<Figure, RenderedFigure>> figures;
  for (const auto& figure : build_figures(data, analysis)) {
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
      "\n\"Beat\" and \"worse\" only where the 95% interval of the difference excludes zero (over seeds, or "
      "a "
      "paired bootstrap over the same evaluation pairs or prompts).\n";
  if (!others.empty()) {
    markdown += "\n## Every other method against the baseline\n\n";
    for (const auto& c : others) markdown += "- " + c.statement + "\n";
  }
  if (!checks.empty()) markdown += "\n## Does the run show over-optimization?\n\n" + checks_text;
  if (!fits.empty())
    markdown +=
        "\n## Gao et al. fits\n\nGold gain R against d = √KL: Best-of-N R = d(α − βd), PPO R = d(α − β ln "
        "d); "
        "95% intervals of the least-squares coefficients.\n\n" +
        fits_markdown;
  if (!signals.empty())
    markdown += "\n## Over-optimization signals\n\n" + signals_caption + "\n\n" + signals_markdown(signals);
  markdown +=
      "\nEach method is compared at its main setting (largest training set, most common head and α; among "
      "equally common α, the best ID accuracy):\n\n" +
      main_settings;
  for (const auto& table : tables)
    if (!table.rows.empty())
      markdown += "\n## " + table.title + "\n\n" + table.caption + "\n\n" + table_markdown(table);
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
  for (const auto& table : tables) summary[table.name] = table_json(table, analysis);
  summary["overoptimization_signals"] = signals_json(signals);
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
                                      {"difference", estimate_json(c.difference)},
                                      {"interval_basis", c.basis},
                                      {"grm_beat_baseline", c.beat},
                                      {"grm_worse_than_baseline", c.worse},
                                      {"intervals_disjoint", c.disjoint},
                                      {"statement", c.statement}});
  }
  summary["method_comparisons"] = json::array();
  for (const auto& c : others)
    summary["method_comparisons"].push_back({{"measure", c.measure},
                                             {"method_setting", setting_json(c.grm)},
                                             {"baseline_setting", setting_json(c.baseline)},
                                             {"method", estimate_json(c.grm_value)},
                                             {"baseline", estimate_json(c.baseline_value)},
                                             {"difference", estimate_json(c.difference)},
                                             {"interval_basis", c.basis},
                                             {"beat_baseline", c.beat},
                                             {"worse_than_baseline", c.worse},
                                             {"statement", c.statement}});
  summary["checks"] = json::array();
  for (const auto& check : checks)
    summary["checks"].push_back({{"name", check.name}, {"met", check.met}, {"statement", check.statement}});
  summary["gao_fits"] = json::array();
  for (const auto& row : fits)
    summary["gao_fits"].push_back(
        {{"method", row.method},
         {"optimizer", row.algorithm},
         {"alpha", estimate_json(row.fit.alpha)},
         {"beta", estimate_json(row.fit.beta)},
         {"peak_kl", std::isfinite(row.fit.peak_kl) ? json(row.fit.peak_kl) : json(nullptr)},
         {"points", row.fit.n_points},
         {"residual_rms", row.fit.residual_rms}});
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
                        c.beat    ? "beat"
                        : c.worse ? "lost"
                                  : "even",
                        html_escape(c.statement));
  }
  if (comparisons.empty()) html += "<li>No verdict: see the notes.</li>\n";
  html +=
      "</ul>\n<p>Each method is compared at its main setting (largest training set, most common head and α; "
      "among equally common α, the best ID "
      "accuracy):</p><ul>\n";
  for (const auto& method : data.methods)
    html += "<li>" + html_escape(describe(analysis.main(method))) + "</li>\n";
  html += "</ul>\n";
  if (!others.empty()) {
    html += "<h2>Every other method against the baseline</h2>\n<ul>\n";
    for (const auto& c : others)
      html += fmt::format("<li class=\"{}\">{}</li>\n",
                          c.beat    ? "beat"
                          : c.worse ? "lost"
                                    : "even",
                          html_escape(c.statement));
    html += "</ul>\n";
  }
  for (const auto& table : tables)
    html += "<h2>" + html_escape(table.title) + "</h2>\n<p>" + html_escape(table.caption) + "</p>\n" +
            table_html(table);
  if (!checks.empty()) {
    html += "<h2>Does the run show over-optimization?</h2>\n<ul>\n";
    for (const auto& check : checks)
      html += fmt::format("<li class=\"{}\">{}</li>\n", check.met ? "beat" : "lost",
                          html_escape(check.statement));
    html += "</ul>\n";
  }
  if (!signals.empty())
    html += "<h2>Over-optimization signals</h2>\n<p>" + html_escape(signals_caption) + "</p>\n" +
            signals_html(signals);
  if (!fits.empty()) {
    html +=
        "<h2>Gao et al. fits</h2>\n<p>Gold gain R against d = √KL: Best-of-N R = d(α − βd), PPO R = d(α − β "
        "ln d); 95% intervals of the least-squares coefficients.</p>\n<table>\n<tr><th>method</th>"
        "<th>optimizer</th><th>α</th><th>β</th><th>KL at the fitted gold peak (nats)</th><th>points</th>"
        "<th>residual RMS</th></tr>\n";
    for (const auto& row : fits)
      html += fmt::format(
          "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3f}</td>"
          "</tr>\n",
          html_escape(row.method), row.algorithm == "bon" ? "Best-of-N" : "PPO",
          html_escape(fit_cell(row.fit.alpha)), html_escape(fit_cell(row.fit.beta)),
          html_escape(peak_cell(row.fit.peak_kl)), row.fit.n_points, row.fit.residual_rms);
    html += "</table>\n";
  }
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
                        stage.done ? "done" : to_string(stage.state), html_escape(labels));
  }
  html += "</table>\n</details>\n</body></html>\n";

  write_file_atomic(report_dir + "/summary.md", markdown);
  write_file_atomic(report_dir + "/summary.json", summary.dump(2) + "\n");
  write_file_atomic(report_dir + "/index.html", html);
  return verdict + checks_text;
}

}  // namespace grm
