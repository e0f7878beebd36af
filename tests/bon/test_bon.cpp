// Best-of-N: the unbiased estimator against brute-force enumeration, the KL formula, bootstrap intervals,
// prompt reading, the curve files' JSON, and a small end-to-end run with resume.
#include <gtest/gtest.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <functional>
#include <random>

#include "bon/best_of_n.hpp"
#include "bon/estimator.hpp"
#include "core/atomic_file.hpp"
#include "core/correlation.hpp"
#include "core/text_io.hpp"
#include "policy/chat_format.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/preference_data.hpp"
#include "rm/story_oracle.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using namespace grm;

namespace {

// E[gold of the proxy-max of a uniformly drawn n-subset], by listing every subset; a tie for the maximum is
// broken uniformly at random, so the subset counts the mean gold of its tied maxima.
double brute_force(const std::vector<double>& proxy, const std::vector<double>& gold, int n) {
  int N = int(proxy.size());
  double sum = 0;
  int64_t count = 0;
  std::function<void(int, std::vector<int>&)> walk = [&](int start, std::vector<int>& chosen) {
    if (int(chosen.size()) == n) {
      double top = proxy[size_t(chosen[0])];
      for (int i : chosen) top = std::max(top, proxy[size_t(i)]);
      double tied_sum = 0;
      int tied = 0;
      for (int i : chosen)
        if (proxy[size_t(i)] == top) tied_sum += gold[size_t(i)], ++tied;
      sum += tied_sum / tied;
      ++count;
      return;
    }
    for (int i = start; i < N; ++i) {
      chosen.push_back(i);
      walk(i + 1, chosen);
      chosen.pop_back();
    }
  };
  std::vector<int> chosen;
  walk(0, chosen);
  return sum / double(count);
}

TEST(BestOfN, EstimatorEqualsEnumerationOverAllSubsets) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal;
  for (int N : {1, 3, 7, 10}) {
    std::vector<double> proxy(static_cast<size_t>(N)), gold(static_cast<size_t>(N));
    for (int i = 0; i < N; ++i) proxy[size_t(i)] = normal(rng), gold[size_t(i)] = normal(rng);
    for (int n = 1; n <= N; ++n)
      EXPECT_NEAR(best_of_n_expectation(proxy, gold, n), brute_force(proxy, gold, n), 1e-12) << N << " " << n;
    EXPECT_NEAR(best_of_n_expectation(proxy, proxy, N), *std::max_element(proxy.begin(), proxy.end()), 1e-12);
  }
  EXPECT_THROW(best_of_n_expectation({1, 2}, {1, 2}, 3), Error);
}

TEST(BestOfN, TiedProxyScoresAverageTheGoldOfTheTieGroup) {
  // Worked by hand: both samples tie on the proxy, so best-of-2 is either one with probability 1/2.
  EXPECT_DOUBLE_EQ(best_of_n_expectation({1, 1}, {0, 1}, 2), 0.5);
  EXPECT_DOUBLE_EQ(best_of_n_expectation({1, 1}, {1, 0}, 2), 0.5);
  // {a: 0, b: 1, c: 1}, n = 2: subsets ab -> b, ac -> c, bc -> (b + c) / 2; gold a 5, b 1, c 3.
  EXPECT_NEAR(best_of_n_expectation({0, 1, 1}, {5, 1, 3}, 2), (1.0 + 3.0 + 2.0) / 3.0, 1e-12);
  // Coarse proxies (oracles, bf16 rewards) tie often: the estimator still equals enumeration.
  std::mt19937_64 rng(5);
  std::uniform_int_distribution<int> level(0, 2);
  std::normal_distribution<double> normal;
  for (int N : {4, 9}) {
    std::vector<double> proxy(static_cast<size_t>(N)), gold(static_cast<size_t>(N));
    for (int i = 0; i < N; ++i) proxy[size_t(i)] = level(rng), gold[size_t(i)] = normal(rng);
    for (int n = 1; n <= N; ++n)
      EXPECT_NEAR(best_of_n_expectation(proxy, gold, n), brute_force(proxy, gold, n), 1e-12) << N << " " << n;
  }
}

TEST(BestOfN, KlFormulaAndGrid) {
  EXPECT_DOUBLE_EQ(best_of_n_kl(1), 0.0);
  EXPECT_NEAR(best_of_n_kl(2), std::log(2.0) - 0.5, 1e-15);
  EXPECT_NEAR(best_of_n_kl(256), std::log(256.0) - 255.0 / 256.0, 1e-12);
  EXPECT_EQ(best_of_n_grid(10), (std::vector<int64_t>{1, 2, 4, 8, 10}));
  EXPECT_EQ(best_of_n_grid(8), (std::vector<int64_t>{1, 2, 4, 8}));
}

TEST(BestOfN, BootstrapIntervalBracketsTheMeanAndIsSeeded) {
  std::vector<double> values = {1, 2, 3, 4, 5, 6, 7, 8};
  auto a = bootstrap_mean(values, 500, 0.05, 3), b = bootstrap_mean(values, 500, 0.05, 3);
  EXPECT_DOUBLE_EQ(a.mean, 4.5);
  EXPECT_LT(a.low, 4.5);
  EXPECT_GT(a.high, 4.5);
  EXPECT_GT(a.low, 1.0);
  EXPECT_DOUBLE_EQ(a.low, b.low);
  EXPECT_DOUBLE_EQ(a.high, b.high);
}

TEST(BestOfN, PromptsAreTheInlineListThenTheFileUpToTheLimit) {
  auto path = (temp_dir("bon_prompts") / "prompts.jsonl").string();
  write_file_atomic(path,
                    "{\"id\": 1, \"prompt\": \"one\"}\n\n{\"id\": 2, \"prompt\": \"two\"}\n"
                    "{\"id\": 3, \"prompt\": \"three\"}\n");
  EXPECT_EQ(read_prompts(path, {"inline"}, 3), (std::vector<std::string>{"inline", "one", "two"}));
  EXPECT_EQ(read_prompts(path, {}, 0), (std::vector<std::string>{"one", "two", "three"}));
  write_file_atomic(path, "{\"id\": 1, \"prompt\": \"one\"}\n{\"id\": 2}\n");
  try {
    read_prompts(path, {}, 0);
    ADD_FAILURE() << "a record without a prompt was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":2: needs a string field 'prompt'"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(read_prompts("", {}, 0), Error);
  fs::remove(path);
}

TEST(BestOfN, PromptsAreSpelledAsInPpo) {
  auto read = [](const std::string& yaml) {
    return read_config<BonConfig>(load_yaml_text(yaml, "bon.yaml"), "bon.yaml");
  };
  auto c = read("prompt_file: p.jsonl\nprompt_list: [Once]\n");
  EXPECT_EQ(c.prompt_file, "p.jsonl");
  EXPECT_EQ(c.prompt_list, std::vector<std::string>{"Once"});
  try {
    read("n_max: 4\nprompts: p.jsonl\n");
    ADD_FAILURE() << "the old key was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "bon.yaml:2: 'prompts' was renamed to 'prompt_file'");
  }
}

TEST(BestOfN, EndToEndCurvesAndResumedSampling) {
  auto dir = temp_dir("bon");
  BonConfig c;
  c.prompt_list = {"Once upon a time, Lily had a ball.", "Tom and Sue went to the park.", "One day, a cat"};
  c.n_max = 8;
  c.max_new_tokens = 24;
  c.threads = 1;
  c.bootstrap = 200;
  c.proxies["story"].oracle = "story";
  c.gold.oracle = "story";
  run_best_of_n(c, (dir / "run").string());
  auto curves = nlohmann::json::parse(read_file((dir / "run/bon_curves.json").string()));
  EXPECT_EQ(curves["n_max"], 8);
  EXPECT_EQ(curves["n_prompts"], 3);
  auto curve = curves["curves"]["story"];
  ASSERT_EQ(curve.size(), 4u);  // n = 1, 2, 4, 8
  EXPECT_DOUBLE_EQ(curve[0]["proxy_norm"].get<double>(), 0.0);
  // With gold = proxy the best-of-n reward can only grow with n, and proxy and gold agree.
  for (size_t i = 1; i < curve.size(); ++i) {
    EXPECT_GE(curve[i]["proxy"].get<double>(), curve[i - 1]["proxy"].get<double>() - 1e-12);
    EXPECT_NEAR(curve[i]["gold"].get<double>(), curve[i]["proxy"].get<double>(), 1e-12);
  }
  EXPECT_GT(curve[3]["proxy_norm"].get<double>(), 0.0);
  EXPECT_NEAR(curve[3]["kl"].get<double>(), std::log(8.0) - 7.0 / 8.0, 1e-9);
  // Gold and proxy are one scorer: the same length correlation, and a rank correlation of 1.
  ASSERT_TRUE(curves["gold_length_correlation"].is_number());
  EXPECT_DOUBLE_EQ(curves["length_correlation"]["story"].get<double>(),
                   curves["gold_length_correlation"].get<double>());
  EXPECT_LE(std::abs(curves["gold_length_correlation"].get<double>()), 1.0);
  // And it is the correlation of the oracle's scores with the samples' token counts, worked out here.
  std::vector<double> story, tokens;
  for (const auto& line : read_lines((dir / "run/samples.jsonl").string())) {
    auto sample = nlohmann::json::parse(line);
    story.push_back(
        story_oracle_score(sample["prompt"].get<std::string>(), sample["text"].get<std::string>()));
    tokens.push_back(sample["tokens"].get<double>());
  }
  EXPECT_NEAR(curves["gold_length_correlation"].get<double>(), pearson(story, tokens), 1e-9);
  EXPECT_NEAR(curves["proxy_gold_spearman"]["story"].get<double>(), 1.0, 1e-12);
  auto csv = read_lines((dir / "run/bon_curves.csv").string());
  EXPECT_EQ(csv.size(), 5u);  // header + 4 points
  // A run killed while sampling (the file cut mid-prompt and mid-line) resumes to the same samples.
  auto samples = read_file((dir / "run/samples.jsonl").string());
  fs::create_directories(dir / "killed");
  write_file_atomic((dir / "killed/samples.jsonl").string(), samples.substr(0, samples.size() * 2 / 3));
  run_best_of_n(c, (dir / "killed").string());
  EXPECT_EQ(read_file((dir / "killed/samples.jsonl").string()), samples);
  fs::remove_all(dir);
}

TEST(BestOfN, CurvesRoundTripThroughTheirJsonWithTodaysKeys) {
  BonPoint point{4, 0.5, 1.5, 0.25, 1.25, 1.75, 0.125, 0.375, 0.5, 0.0625, 2.0, 1.0, {1.0, 2.0}, {0.5, 0.0}};
  auto text = R"({"n": 4, "kl": 0.5, "proxy": 1.5, "gold": 0.25, "proxy_lo": 1.25, "proxy_hi": 1.75,
                  "gold_lo": 0.125, "gold_hi": 0.375, "proxy_norm": 0.5, "gold_norm": 0.0625,
                  "proxy_sd": 2.0, "gold_sd": 1.0, "proxy_per_prompt": [1.0, 2.0], "gold_per_prompt": [0.5, 0.0]})";
  EXPECT_EQ(nlohmann::json(point), nlohmann::json::parse(text));
  auto back = nlohmann::json::parse(text).get<BonPoint>();
  EXPECT_EQ(back.n, 4);
  EXPECT_EQ(back.gold_hi, 0.375);
  EXPECT_EQ(nlohmann::json(back), nlohmann::json(point));  // every field read back (the file has them all)

  BonCurves curves{64, 8, {{"proxy_rm-0123456789abcdef", {point, point}}}, {{"gold", 0.25}}, {}, 0.5};
  nlohmann::json file = curves;
  EXPECT_EQ(file["gold_length_correlation"], 0.5);
  EXPECT_EQ(file["length_correlation"]["gold"], 0.25);  // a proxy named "gold" is a proxy
  EXPECT_EQ(file["n_max"], 64);
  EXPECT_EQ(file["n_prompts"], 8);
  EXPECT_EQ(file["curves"]["proxy_rm-0123456789abcdef"][1], nlohmann::json::parse(text));
  auto read = file.get<BonCurves>();
  EXPECT_EQ(read.n_max, 64);
  EXPECT_EQ(read.n_prompts, 8);
  ASSERT_EQ(read.curves.size(), 1u);
  EXPECT_EQ(nlohmann::json(read), file);

  // A number the file lacks (or holds as null, how JSON writes NaN) reads as NaN; "n" is required.
  auto partial = nlohmann::json::parse(R"({"n": 2, "kl": 0.25, "gold_lo": null})").get<BonPoint>();
  EXPECT_EQ(partial.kl, 0.25);
  EXPECT_TRUE(std::isnan(partial.gold_lo) && std::isnan(partial.proxy_norm));
  EXPECT_TRUE(partial.gold_per_prompt.empty());  // runs from before per-prompt values still load
  EXPECT_THROW(nlohmann::json::parse(R"({"kl": 0.25})").get<BonPoint>(), nlohmann::json::exception);
}

}  // namespace

namespace grm {
namespace {

// A templated policy samples from its rendered prompt and stops at its end of turn; samples keep the
// interchange prompt (each scorer renders it with its own template) and whether they finished.
TEST(BestOfN, TemplatedPoliciesSampleFromTheirRenderedPromptsAndRecordCutResponses) {
  auto dir = temp_dir("bon_template");
  auto samples_of = [&](const std::string& chat_template) {
    BonConfig c;
    c.prompt_list = {"Once upon a time, Lily had a ball."};
    c.n_max = 8;
    c.max_new_tokens = 6;
    c.threads = 1;
    c.chat_template = chat_template;
    run_best_of_n(c, (dir / chat_template).string());
    std::vector<nlohmann::json> out;
    for (const auto& line : read_lines((dir / chat_template / "samples.jsonl").string()))
      out.push_back(nlohmann::json::parse(line));
    return out;
  };
  auto plain = samples_of("none"), templated = samples_of("mistral"), transcript = samples_of("plain");
  ASSERT_EQ(plain.size(), 8u);
  ASSERT_EQ(templated.size(), 8u);
  auto model_dir = resolve_model_path("tinystories-656k");
  auto tokenizer = load_tokenizer(model_dir);
  ChatFormat mistral = ChatFormat::resolve({"mistral", "auto"}, model_dir, *tokenizer, "test");
  size_t differ = 0, cut = 0, one_space = 0;
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(templated[i]["prompt"], "Once upon a time, Lily had a ball.");
    // Rendered again from the sample, the prompt is what the policy read.
    EXPECT_EQ(
        mistral.render(templated[i]["prompt"].get<std::string>(), templated[i]["text"].get<std::string>())
            .prompt,
        mistral.render_prompt("Once upon a time, Lily had a ball.").prompt);
    // The plain family's header ends at "Assistant:": the space is the policy's own, not doubled.
    std::string text = transcript[i]["text"];
    EXPECT_NE(text.rfind("  ", 0), 0u) << text;
    one_space += text.rfind(" ", 0) == 0 ? 1 : 0;
    differ += plain[i]["text"] != templated[i]["text"] ? 1 : 0;
    // A sample shorter than max_new_tokens stopped at a stop token.
    if (templated[i]["tokens"].get<int64_t>() < 6) EXPECT_TRUE(templated[i]["finished"].get<bool>());
    cut += templated[i]["finished"].get<bool>() ? 0 : 1;
  }
  EXPECT_GT(differ, 0u);  // the same seed from another prompt: the policy read the template
  EXPECT_GT(cut, 0u);     // 6 tokens cut most responses
  EXPECT_GT(one_space, 0u);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace grm
