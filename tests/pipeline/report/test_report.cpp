#include "pipeline/report/report.hpp"

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.hpp"
#include "core/error.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// Synthetic stage outputs with known answers: GRM (α=0.01) is the best in distribution and by far the
// best out of distribution; in BoN its gold reward falls off less at large KL; in PPO it ends higher
// but peaks lower than the baseline.
class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    run_dir_ = temp_dir(std::string("report_") + info->name()).string();
    fs::remove_all(run_dir_);
  }
  void TearDown() override { fs::remove_all(run_dir_); }

  std::string add_stage(const std::string& id, const std::string& subcommand, const json& labels,
                        bool done = true) {
    dag_["stages"].push_back({{"id", id},
                              {"name", id.substr(0, id.find('-'))},
                              {"subcommand", subcommand},
                              {"deps", json::array()},
                              {"labels", labels},
                              {"state", done ? "done" : "failed"},
                              {"dir", "stages/" + id}});
    std::string dir = run_dir_ + "/stages/" + id;
    fs::create_directories(dir);
    if (done) grm::write_file_atomic(dir + "/DONE", "{}\n");
    return dir;
  }
  void write_dag() { grm::write_file_atomic(run_dir_ + "/dag.json", dag_.dump()); }

  static json labels(const std::string& method, const std::string& alpha, const std::string& size, int seed) {
    json result = {{"rm.method", method}, {"data.size", size}, {"seed", std::to_string(seed)}};
    if (!alpha.empty()) result["rm.alpha"] = alpha;
    return result;
  }

  // ID and mean-OOD accuracy of a setting at seed 0; each further seed adds 0.01.
  static std::pair<double, double> accuracy(const std::string& method, const std::string& alpha,
                                            const std::string& size) {
    double shift = size == "500" ? -0.05 : 0;
    if (method == "bt") return {0.70 + shift, 0.60 + shift};
    if (method == "margin") return {0.695 + shift, 0.61 + shift};
    if (alpha == "0.005") return {0.705 + shift, 0.66 + shift};
    if (alpha == "0.01") return {0.72 + shift, 0.68 + shift};
    return {0.69 + shift, 0.67 + shift};
  }
  // Gao et al.'s Best-of-N form, d (alpha - beta d) with d = sqrt(KL), so the report's fit is known.
  static double bon_beta(const std::string& method) {
    return method == "bt" ? 0.3 : method == "margin" ? 0.25 : 0.1;
  }
  static double bon_gold(const std::string& method, double kl) {
    return std::sqrt(kl) * (0.8 - bon_beta(method) * std::sqrt(kl));
  }
  static double ppo_gold(const std::string& method, double kl) {
    return method == "bt" ? kl - 0.5 * kl * kl : 0.4 * kl - 0.1 * kl * kl;
  }
  static double kl_of(int n) { return std::log(n) - (n - 1.0) / n; }

  void write_full_run(bool with_bon = true, bool with_ppo = true) {
    json curves = json::object();
    struct Point {
      std::string method, alpha;
    };
    for (const Point& point : {Point{"bt", ""}, Point{"margin", ""}, Point{"grm", "0.005"},
                               Point{"grm", "0.01"}, Point{"grm", "0.05"}}) {
      for (const std::string size : {"500", "2000"}) {
        for (int seed = 0; seed < 3; ++seed) {
          std::string tag = fmt::format("{}{}{}s{}", point.method, point.alpha, size, seed);
          std::string proxy_id = "proxy_rm-" + tag;
          std::string proxy = add_stage(proxy_id, "train-rm", labels(point.method, point.alpha, size, seed));
          std::string metrics;
          for (int step = 0; step <= 100; step += 20) {
            metrics += json({{"step", step},
                             {"epoch", step / 100.0},
                             {"loss", 0.7 - 0.002 * step},
                             {"accuracy", 0.5 + 0.002 * step}})
                           .dump() +
                       "\n";
          }
          grm::write_file_atomic(proxy + "/metrics.jsonl", metrics + "{\"step\": 12");  // torn last line
          auto [id, ood] = accuracy(point.method, point.alpha, size);
          // Seeds move GRM and the rest in different orders, so differences paired by seed vary.
          int shift = point.method == "grm" ? (2 * seed) % 3 : seed;
          id += 0.01 * shift;
          ood += 0.01 * shift;
          std::string eval =
              add_stage("eval-" + tag, "eval-rm", labels(point.method, point.alpha, size, seed));
          grm::write_file_atomic(
              eval + "/eval.json",
              json({{"sets",
                     {{"id", {{"accuracy", id}, {"n", 400}, {"ties", 0}}},
                      {"ood_animals", {{"accuracy", ood + 0.01}, {"n", 400}, {"ties", 1}}},
                      {"ood_space", {{"accuracy", ood - 0.01}, {"n", 400}, {"ties", 0}}}}}})
                  .dump());
          json curve = json::array();
          for (int n : {1, 2, 4, 8, 16}) {
            // The seeds' shifts differ between GRM and the rest (as for accuracy), so the paired
            // differences vary by seed and their t-interval has a width.
            double gold = bon_gold(point.method, kl_of(n)) + 0.01 * shift;
            curve.push_back({{"n", n},
                             {"kl", kl_of(n)},
                             {"proxy", kl_of(n)},
                             {"gold", gold},
                             {"gold_lo", gold - 0.05},
                             {"gold_hi", gold + 0.05},
                             {"proxy_lo", kl_of(n) - 0.05},
                             {"proxy_hi", kl_of(n) + 0.05},
                             {"proxy_norm", 0.0},
                             {"gold_norm", 0.0}});
          }
          curves[proxy_id] = curve;
          if (with_ppo && seed == 0) {
            std::string ppo = add_stage("ppo-" + tag, "ppo", labels(point.method, point.alpha, size, seed));
            std::string lines;
            for (int step = 0; step <= 50; step += 10) {
              double kl = 0.05 * step;
              // Eight held-out prompts around the mean; GRM's differ from the baseline's by a little noise.
              std::vector<double> proxies, golds;
              for (int i = 0; i < 8; ++i) {
                double offset = 0.05 * (i - 3.5),
                       noise = point.method == "grm" ? 0.01 * ((i % 2) * 2 - 1) : 0;
                proxies.push_back(kl * (1 + offset));
                golds.push_back(ppo_gold(point.method, kl) + offset + noise);
              }
              lines += json({{"step", step},
                             {"kl", kl},
                             {"proxy", kl},
                             {"gold", ppo_gold(point.method, kl)},
                             {"length", 40.0},
                             {"proxy_per_prompt", proxies},
                             {"gold_per_prompt", golds}})
                           .dump() +
                       "\n";
            }
            grm::write_file_atomic(ppo + "/ppo_curve.jsonl", lines);
          }
        }
      }
    }
    std::string gold = add_stage("gold_rm-0", "train-rm", json::object());
    grm::write_file_atomic(gold + "/metrics.jsonl", R"({"step": 0, "loss": 0.69, "accuracy": 0.5}
{"step": 100, "loss": 0.3, "accuracy": 0.9}
)");
    if (with_bon) {
      std::string bon = add_stage("bon-0", "bon", json::object());
      grm::write_file_atomic(bon + "/bon_curves.json",
                             json({{"n_max", 16}, {"n_prompts", 64}, {"curves", curves}}).dump());
    }
    write_dag();
  }

  json summary() const { return json::parse(grm::read_file(run_dir_ + "/report/summary.json")); }
  static const json& comparison(const json& summary, const std::string& measure) {
    for (const auto& c : summary["comparisons"]) {
      if (c["measure"] == measure) return c;
    }
    throw std::runtime_error("no comparison " + measure);
  }

  std::string run_dir_;
  json dag_ = {{"stages", json::array()}};
};

TEST_F(ReportTest, FullRunHasTheRightNumbersAndVerdicts) {
  write_full_run();
  std::string verdict = grm::build_report(run_dir_);
  json s = summary();

  EXPECT_EQ(s["methods"], json({"bt", "margin", "grm"}));
  EXPECT_EQ(s["main_settings"]["grm"], json({{"method", "grm"}, {"alpha", "0.01"}, {"size", "2000"}}));
  EXPECT_EQ(s["main_settings"]["bt"]["size"], "2000");

  const json& id = comparison(s, "id_accuracy");
  EXPECT_NEAR(id["grm"]["mean"].get<double>(), 0.73, 1e-9);
  EXPECT_NEAR(id["baseline"]["mean"].get<double>(), 0.71, 1e-9);
  // Seeds 0.72, 0.73, 0.74: standard error 0.01/sqrt(3), t(2) = 4.303.
  EXPECT_NEAR(id["grm"]["hi"].get<double>() - 0.73, 4.303 * 0.01 / std::sqrt(3.0), 1e-6);
  // Per-seed differences 0.02, 0.03, 0.01: mean 0.02, t-interval ± 4.303 * 0.01 / sqrt(3) = ± 0.0248.
  EXPECT_NEAR(id["difference"]["mean"].get<double>(), 0.02, 1e-9);
  EXPECT_NEAR(id["difference"]["lo"].get<double>(), 0.02 - 4.303 * 0.01 / std::sqrt(3.0), 1e-6);
  EXPECT_EQ(id["interval_basis"], "t-interval over 3 seeds, paired by seed");
  EXPECT_FALSE(id["grm_beat_baseline"].get<bool>());  // ahead, but the interval includes zero
  EXPECT_FALSE(id["grm_worse_than_baseline"].get<bool>());
  EXPECT_FALSE(id["intervals_disjoint"].get<bool>());
  EXPECT_NE(id["statement"].get<std::string>().find("GRM was within noise of the baseline"),
            std::string::npos)
      << id["statement"];

  const json& ood = comparison(s, "ood_accuracy");
  EXPECT_NEAR(ood["grm"]["mean"].get<double>(), 0.69, 1e-9);
  EXPECT_NEAR(ood["baseline"]["mean"].get<double>(), 0.61, 1e-9);
  EXPECT_TRUE(ood["intervals_disjoint"].get<bool>());
  EXPECT_TRUE(ood["grm_beat_baseline"].get<bool>());
  EXPECT_NE(ood["statement"].get<std::string>().find("GRM beat the baseline"), std::string::npos);
  EXPECT_NE(ood["statement"].get<std::string>().find("+8.0 points"), std::string::npos) << ood["statement"];

  const json& bon_end = comparison(s, "bon_gold_at_max_kl");
  EXPECT_NEAR(bon_end["grm"]["mean"].get<double>(), bon_gold("grm", kl_of(16)) + 0.01, 1e-9);
  EXPECT_NEAR(bon_end["baseline"]["mean"].get<double>(), bon_gold("bt", kl_of(16)) + 0.01, 1e-9);
  EXPECT_TRUE(bon_end["grm_beat_baseline"].get<bool>());
  EXPECT_EQ(bon_end["label"], "BoN gold reward at the largest KL (n = 16)");

  const json& ppo_final = comparison(s, "ppo_gold_final");
  EXPECT_NEAR(ppo_final["grm"]["mean"].get<double>(), ppo_gold("grm", 2.5), 1e-9);
  // One seed each: the paired bootstrap over the eight held-out prompts (the offsets cancel in the pairs).
  EXPECT_TRUE(ppo_final["grm_beat_baseline"].get<bool>());
  EXPECT_EQ(ppo_final["interval_basis"], "paired bootstrap over the same 8 held-out prompts");
  EXPECT_NEAR(ppo_final["difference"]["mean"].get<double>(), ppo_gold("grm", 2.5) - ppo_gold("bt", 2.5),
              1e-9);
  const json& ppo_peak = comparison(s, "ppo_peak_gold");
  EXPECT_NEAR(ppo_peak["grm"]["mean"].get<double>(), 0.4, 1e-9);       // 0.4 kl - 0.1 kl^2 at kl = 2
  EXPECT_NEAR(ppo_peak["baseline"]["mean"].get<double>(), 0.5, 1e-9);  // kl - 0.5 kl^2 at kl = 1
  EXPECT_FALSE(ppo_peak["grm_beat_baseline"].get<bool>());
  EXPECT_TRUE(ppo_peak["grm_worse_than_baseline"].get<bool>());  // -0.1 on every prompt, ± 0.01
  EXPECT_NE(ppo_peak["statement"].get<std::string>().find("GRM was worse than the baseline"),
            std::string::npos)
      << ppo_peak["statement"];

  EXPECT_NE(verdict.find("OOD accuracy (mean of 2 sets): GRM beat the baseline"), std::string::npos)
      << verdict;
  // The other methods (margin) get the same comparisons, in a section of their own, named as themselves.
  ASSERT_FALSE(s["method_comparisons"].empty());
  for (const auto& c : s["method_comparisons"]) {
    EXPECT_EQ(c["method_setting"]["method"], "margin") << c;
    EXPECT_EQ(c["statement"].get<std::string>().find(
                  c["statement"].get<std::string>().substr(0, c["statement"].get<std::string>().find(':')) +
                  ": margin "),
              0u)
        << c;
  }
  EXPECT_EQ(s["comparisons"].size(), 6u);  // GRM's alone
  EXPECT_NE(
      grm::read_file(run_dir_ + "/report/summary.md").find("## Every other method against the baseline"),
      std::string::npos);

  // Gao et al.'s fits recover the curves' coefficients; the checks measure what the fixture holds.
  int bon_fits = 0;
  for (const auto& fit : s["gao_fits"]) {
    if (fit["optimizer"] != "bon") continue;
    ++bon_fits;
    EXPECT_NEAR(fit["alpha"]["mean"].get<double>(), 0.8, 1e-6) << fit;
    EXPECT_NEAR(fit["beta"]["mean"].get<double>(), bon_beta(fit["method"]), 1e-6) << fit;
    double d = 0.8 / (2 * bon_beta(fit["method"]));
    EXPECT_NEAR(fit["peak_kl"].get<double>(), d * d, 1e-4) << fit;
  }
  EXPECT_EQ(bon_fits, 3);
  std::map<std::string, bool> checks;
  for (const auto& check : s["checks"]) checks[check["name"]] = check["met"];
  EXPECT_TRUE(checks.at("baseline_id_accuracy"));  // bt at size 2000: 71%
  EXPECT_TRUE(checks.at("ppo_proxy_rise"));        // 2.5 ± a little on every prompt
  EXPECT_TRUE(checks.at("ppo_kl"));                // 2.5 nats, gold at every evaluation
  EXPECT_EQ(checks.count("bon_gold_gain"), 0u);    // the fixture's BoN curves have no per-prompt values
  EXPECT_NE(s["notes"].dump().find("Best-of-N checks skipped"), std::string::npos);

  // Table 1: rows at the largest size only; GRM α=0.01 holds the best ID and OOD cells. Table 7 (the
  // smallest size) follows it, with every method's rows at size 500; one head in the run: no head column.
  std::string markdown = grm::read_file(run_dir_ + "/report/summary.md");
  std::size_t table7 = markdown.find("## Smallest training set, 500 pairs (Table 7)");
  ASSERT_NE(table7, std::string::npos) << markdown;
  std::string table1 = markdown.substr(0, table7);
  EXPECT_NE(table1.find("| grm | 0.01 | 2000 | 3 | **73.0 ± 2.5%** |"), std::string::npos) << markdown;
  EXPECT_NE(table1.find("| bt |  | 2000 | 3 | 71.0 ± 2.5% |"), std::string::npos) << markdown;
  EXPECT_EQ(table1.find("| 500 |"), std::string::npos);
  EXPECT_NE(markdown.find("| bt |  | 500 | 3 | 66.0 ± 2.5% |", table7), std::string::npos) << markdown;
  EXPECT_NE(markdown.find("| grm | 0.05 | 500 | 3 |", table7), std::string::npos) << markdown;
  EXPECT_EQ(markdown.find("| head |"), std::string::npos);
  EXPECT_EQ(s["accuracy_smallest_size"].size(), 5u);
  EXPECT_EQ(s.count("accuracy_by_head"), 0u);
  EXPECT_NE(markdown.find("**69.0 ± 2.5%** |\n"), std::string::npos);  // OOD mean column
  EXPECT_EQ(s["accuracy"].size(), 5u);

  std::string html = grm::read_file(run_dir_ + "/report/index.html");
  EXPECT_NE(html.find("<b>73.0 ± 2.5%</b>"), std::string::npos);
  EXPECT_NE(html.find("data:image/png;base64,iVBORw0KGgo"), std::string::npos);  // a PNG's magic, encoded
  EXPECT_EQ(html.find("<?xml"), std::string::npos);
  EXPECT_EQ(html.find("src=\"plots/"), std::string::npos);  // self-contained
  for (const char* figure : {"bon_proxy_gold", "bon_gold", "ppo_proxy_gold", "ppo_gold", "accuracy_vs_alpha",
                             "accuracy_vs_size", "training"}) {
    EXPECT_TRUE(fs::exists(run_dir_ + "/report/plots/" + figure + ".png")) << figure;
    EXPECT_TRUE(fs::exists(run_dir_ + "/report/plots/" + figure + ".svg")) << figure;
    EXPECT_NE(html.find(std::string("<figure id=\"") + figure + "\">\n<svg"), std::string::npos) << figure;
  }
  EXPECT_NE(html.find("KL(π_BoN ‖ π_init) (nats)"), std::string::npos);
  EXPECT_NE(html.find("reward (RM units)"), std::string::npos);
}

// A head sweep (the paper's Figure 7) is a side study: each method's main setting keeps its most common
// head, and the heads get a table of their own at the main size and α.
TEST_F(ReportTest, HeadsGetATableAndDoNotChooseTheMainSetting) {
  auto eval = [&](const std::string& method, const std::string& size, const std::string& head, int seed,
                  double id) {
    json labels = {
        {"rm.method", method}, {"data.size", size}, {"rm.head", head}, {"seed", std::to_string(seed)}};
    std::string dir = add_stage(fmt::format("eval-{}{}{}{}", method, size, head, seed), "eval-rm", labels);
    grm::write_file_atomic(dir + "/eval.json",
                           json({{"sets", {{"id", {{"accuracy", id}, {"n", 100}, {"ties", 0}}}}}}).dump());
  };
  for (int seed = 0; seed < 2; ++seed) {
    for (const char* method : {"bt", "grm"}) {
      bool grm = std::string(method) == "grm";
      eval(method, "100", "mlp", seed, 0.55 + 0.01 * seed);
      eval(method, "400", "mlp", seed, (grm ? 0.65 : 0.62) + 0.01 * seed);
      eval(method, "400", "linear", seed,
           (grm ? 0.70 : 0.66) + 0.01 * seed);  // better, but not the main head
    }
  }
  write_dag();
  grm::build_report(run_dir_);
  json s = summary();
  EXPECT_EQ(s["main_settings"]["bt"],
            json({{"method", "bt"}, {"alpha", ""}, {"size", "400"}, {"head", "mlp"}}));
  const json& id = comparison(s, "id_accuracy");
  EXPECT_NEAR(id["grm"]["mean"].get<double>(), 0.655, 1e-9);  // the mlp heads compared: 0.655 vs 0.625
  EXPECT_NEAR(id["baseline"]["mean"].get<double>(), 0.625, 1e-9);
  ASSERT_EQ(s["accuracy_by_head"].size(), 4u) << s["accuracy_by_head"];
  std::string markdown = grm::read_file(run_dir_ + "/report/summary.md");
  std::size_t heads = markdown.find("## Reward head (Figure 7)");
  ASSERT_NE(heads, std::string::npos) << markdown;
  EXPECT_NE(markdown.find("| grm |  | 400 | linear | 2 | **70.5 ", heads), std::string::npos) << markdown;
  EXPECT_NE(markdown.find("| bt |  | 400 | mlp | 2 | 62.5 ", heads), std::string::npos) << markdown;
  // Table 1 keeps the main head only.
  EXPECT_EQ(markdown.substr(0, heads).find("linear"), std::string::npos) << markdown;
  EXPECT_NE(markdown.find("## Smallest training set, 100 pairs (Table 7)"), std::string::npos) << markdown;
}

// The over-optimization signals: per method at its main setting, over seeds. bt's seeds have BoN length
// correlations 0.2, 0.3, 0.4 (mean 0.3); its prompts' best-of-n proxy and gold agree in order at n = 1
// (rho 1) and are reversed at n = 4 (rho -1); PPO's sample rho falls from 0.8 to 0.2.
TEST_F(ReportTest, OverOptimizationSignalsAreMeansOverSeedsAtTheMainSetting) {
  json curves = json::object(), length = json::object(), spearman = json::object();
  for (int seed = 0; seed < 3; ++seed) {
    std::string proxy_id = fmt::format("proxy_rm-bt{}", seed);
    add_stage(proxy_id, "train-rm", labels("bt", "", "1000", seed));
    json curve = json::array();
    for (int n : {1, 2, 4}) {
      std::vector<double> proxy = {1, 2, 3, 4}, gold = {1, 2, 3, 4};
      if (n == 4) gold = {4, 3, 2, 1};
      curve.push_back({{"n", n},
                       {"kl", kl_of(n)},
                       {"proxy", 1.0 * n},
                       {"gold", 0.5},
                       {"proxy_per_prompt", proxy},
                       {"gold_per_prompt", gold}});
    }
    curves[proxy_id] = curve;
    length[proxy_id] = 0.2 + 0.1 * seed;
    spearman[proxy_id] = 0.5;
    std::string ppo = add_stage(fmt::format("ppo-bt{}", seed), "ppo", labels("bt", "", "1000", seed));
    std::string lines;
    for (int step : {0, 8, 16})
      lines += json({{"step", step},
                     {"kl", 0.1 * step},
                     {"proxy", 0.1 * step},
                     {"gold", 0.0},
                     {"proxy_length_corr", 0.1 + 0.01 * step},
                     {"gold_length_corr", -0.1},
                     {"proxy_gold_spearman", 0.8 - 0.6 * step / 16.0}})
                   .dump() +
               "\n";
    grm::write_file_atomic(ppo + "/ppo_curve.jsonl", lines);
  }
  std::string bon = add_stage("bon-0", "bon", json::object());
  grm::write_file_atomic(bon + "/bon_curves.json", json({{"n_max", 4},
                                                         {"n_prompts", 4},
                                                         {"curves", curves},
                                                         {"length_correlation", length},
                                                         {"gold_length_correlation", 0.1},
                                                         {"proxy_gold_spearman", spearman}})
                                                       .dump());
  write_dag();
  grm::build_report(run_dir_);
  json s = summary();
  ASSERT_EQ(s["overoptimization_signals"].size(), 1u) << s["overoptimization_signals"];
  const json& row = s["overoptimization_signals"][0];
  EXPECT_EQ(row["setting"]["method"], "bt");
  EXPECT_NEAR(row["bon_proxy_length_corr"]["mean"].get<double>(), 0.3, 1e-9);
  EXPECT_EQ(row["bon_proxy_length_corr"]["n"], 3);
  // t(2) * sd 0.1 / sqrt(3)
  EXPECT_NEAR(row["bon_proxy_length_corr"]["hi"].get<double>(), 0.3 + 4.303 * 0.1 / std::sqrt(3.0), 1e-3);
  EXPECT_NEAR(row["bon_gold_length_corr"]["mean"].get<double>(), 0.1, 1e-9);
  EXPECT_NEAR(row["bon_proxy_gold_spearman_samples"]["mean"].get<double>(), 0.5, 1e-9);
  EXPECT_NEAR(row["bon_proxy_gold_spearman_first"]["mean"].get<double>(), 1.0, 1e-9);
  EXPECT_NEAR(row["bon_proxy_gold_spearman_last"]["mean"].get<double>(), -1.0, 1e-9);
  EXPECT_NEAR(row["ppo_proxy_length_corr_first"]["mean"].get<double>(), 0.1, 1e-9);
  EXPECT_NEAR(row["ppo_proxy_length_corr_last"]["mean"].get<double>(), 0.26, 1e-9);
  EXPECT_NEAR(row["ppo_gold_length_corr_last"]["mean"].get<double>(), -0.1, 1e-9);
  EXPECT_NEAR(row["ppo_proxy_gold_spearman_first"]["mean"].get<double>(), 0.8, 1e-9);
  EXPECT_NEAR(row["ppo_proxy_gold_spearman_last"]["mean"].get<double>(), 0.2, 1e-9);
  std::string markdown = grm::read_file(run_dir_ + "/report/summary.md");
  EXPECT_NE(markdown.find("## Over-optimization signals"), std::string::npos) << markdown;
  EXPECT_NE(markdown.find("| bt (size=1000) | +0.30 ± 0.25 | +0.10 ± 0.00 | +0.50 | +1.00 → -1.00 | "
                          "+0.10 ± 0.00 → +0.26 | -0.10 ± 0.00 | +0.80 ± 0.00 → +0.20 |"),
            std::string::npos)
      << markdown;
  EXPECT_TRUE(fs::exists(run_dir_ + "/report/plots/rank_correlation.png"));
}

// When every seed's difference is the same (GRM ranks exactly one more of the 40 pairs right on each), a
// t-interval over seeds would have zero width; the interval comes from the pairs, pooled over seeds.
TEST_F(ReportTest, EqualDifferencesOverSeedsTakeTheirIntervalFromThePooledPairs) {
  for (const std::string method : {"bt", "grm"})
    for (int seed = 0; seed < 3; ++seed) {
      std::vector<int> correct(40, 0);
      int right = 24 + seed + (method == "grm" ? 1 : 0);
      for (int i = 0; i < right; ++i) correct[size_t(i)] = 1;
      std::string eval = add_stage(fmt::format("eval-{}{}", method, seed), "eval-rm",
                                   labels(method, method == "grm" ? "0.01" : "", "100", seed));
      json set = json::object();
      set["accuracy"] = right / 40.0, set["n"] = 40, set["correct"] = correct;
      json file = json::object();
      file["sets"]["id"] = set;
      grm::write_file_atomic(eval + "/eval.json", file.dump());
    }
  write_dag();
  grm::build_report(run_dir_);
  json s = summary();
  const json& id = comparison(s, "id_accuracy");
  EXPECT_NEAR(id["difference"]["mean"].get<double>(), 0.025, 1e-9);
  EXPECT_EQ(
      id["interval_basis"],
      "paired bootstrap over the same 120 evaluation pairs of 3 seeds (the seeds' differences were equal)");
  EXPECT_LT(id["difference"]["lo"].get<double>(), id["difference"]["hi"].get<double>());
  EXPECT_FALSE(id["grm_beat_baseline"].get<bool>());  // 3 pairs of 120: the interval reaches 0
}

TEST_F(ReportTest, MissingPartsAreNotedNotFatal) {
  write_full_run(/*with_bon=*/false, /*with_ppo=*/false);
  add_stage("eval-late", "eval-rm", labels("grm", "0.01", "2000", 9), /*done=*/false);
  write_dag();
  grm::build_report(run_dir_);
  json s = summary();
  std::vector<std::string> measures;
  for (const auto& c : s["comparisons"]) measures.push_back(c["measure"]);
  EXPECT_EQ(measures, (std::vector<std::string>{"id_accuracy", "ood_accuracy"}));
  std::string notes = s["notes"].dump();
  EXPECT_NE(notes.find("No PPO results"), std::string::npos) << notes;
  EXPECT_NE(notes.find("No Best-of-N results"), std::string::npos) << notes;
  EXPECT_NE(notes.find("1 of 62 stages are not done"), std::string::npos) << notes;
  EXPECT_NE(notes.find("eval-late (failed)"), std::string::npos) << notes;
  EXPECT_TRUE(s["ppo"].empty());
  EXPECT_FALSE(fs::exists(run_dir_ + "/report/plots/ppo_gold.png"));
}

TEST_F(ReportTest, WithoutABaselineThereIsNoVerdict) {
  std::string eval = add_stage("eval-x", "eval-rm", labels("grm", "0.01", "100", 0));
  grm::write_file_atomic(eval + "/eval.json", R"({"sets": {"id": {"accuracy": 0.8, "n": 10, "ties": 0}}})");
  write_dag();
  std::string verdict = grm::build_report(run_dir_);
  EXPECT_EQ(verdict, "- No verdict: see the notes.\n");
  EXPECT_NE(summary()["notes"].dump().find("No comparison"), std::string::npos);
  EXPECT_NE(grm::read_file(run_dir_ + "/report/summary.md").find("| grm | 0.01 | 100 | 1 | **80.0%** |"),
            std::string::npos);
}

TEST_F(ReportTest, MissingDagIsAnError) {
  fs::create_directories(run_dir_);
  EXPECT_THROW(grm::build_report(run_dir_), grm::Error);
}

}  // namespace
