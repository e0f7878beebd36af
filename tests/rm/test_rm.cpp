// Reward models: losses against hand-worked values, the HF sequence-classification fixture, data
// readers and their bad-record errors, training that learns, exact resume, and DDP equivalence under mpirun.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "core/atomic_file.hpp"
#include "core/correlation.hpp"
#include "core/error.hpp"
#include "core/text_io.hpp"
#include "policy/model_path.hpp"
#include "policy/safetensors.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "rm/eval_rm.hpp"
#include "rm/losses.hpp"
#include "rm/reward_data.hpp"
#include "rm/reward_model.hpp"
#include "rm/rewardbench2.hpp"
#include "rm/scorer.hpp"
#include "rm/train_rm.hpp"
#include "tests/test_util.hpp"

namespace fs = std::filesystem;
using namespace grm;

namespace {

double value(const torch::Tensor& t) {
  return t.item<double>();
}
torch::Tensor vec(std::vector<float> v) {
  return torch::tensor(v);
}

// -log sigmoid(x), worked out: log(1 + e^-x)
double nls(double x) {
  return std::log1p(std::exp(-x));
}

TEST(Losses, MatchHandWorkedValues) {
  auto rc = vec({1.0f, 0.0f}), rr = vec({0.0f, 1.0f});
  EXPECT_NEAR(value(bt_loss(rc, rr)), (nls(1) + nls(-1)) / 2, 1e-6);  // 0.813262
  EXPECT_NEAR(value(bt_loss(rc, rr)), 0.8132616, 1e-6);
  EXPECT_NEAR(value(margin_loss(rc, rr, vec({0.5f, 0.0f}))), (nls(0.5) + nls(-1)) / 2, 1e-6);
  double ls = ((0.9 * nls(1) + 0.1 * nls(-1)) + (0.9 * nls(-1) + 0.1 * nls(1))) / 2;
  EXPECT_NEAR(value(label_smooth_loss(rc, rr, 0.1)), ls, 1e-6);
  EXPECT_NEAR(value(sft_reg(vec({-10.0f}), 0.1)), nls(-1), 1e-6);  // 1.313262
  EXPECT_NEAR(value(sft_nll_per_token_reg(vec({-6.0f, -2.0f}), torch::tensor({3, 4}))), (2.0 + 0.5) / 2,
              1e-6);
  EXPECT_NEAR(value(sft_nll_reg(vec({-6.0f, -2.0f}))), (6.0 + 2.0) / 2, 1e-6);  // no_logsigmoid_sft
  EXPECT_NEAR(value(dpo_noref_reg(vec({-5.0f}), vec({-7.0f}), 0.1)), nls(0.2), 1e-6);
  // ((-5 - -4) - (-7 - -7)) = -1, times beta
  EXPECT_NEAR(value(dpo_reg(vec({-5.0f}), vec({-7.0f}), vec({-4.0f}), vec({-7.0f}), 0.1)), nls(-0.1), 1e-6);
  EXPECT_NEAR(value(grm_loss(torch::tensor(1.0), torch::tensor(2.0), 0.01)), 1.01, 1e-6);
}

TEST(Losses, PublishedMethodsMatchHandWorkedValues) {
  // BSR: B = 2 pairs, mean reward (1 + 0 + 2 + 1) / 4 = 1, so 0.001 * 2 * 1^2
  EXPECT_NEAR(value(batch_sum_penalty(vec({1, 0, 2, 1}), 1e-3)), 0.002, 1e-9);
  EXPECT_NEAR(value(batch_sum_penalty(vec({3, -1, -2, 0}), 1e-3)), 0.0, 1e-9);  // sums to zero
  // Eurus: (nls(1) + nls(0)) and (nls(0) + nls(-1)), averaged: 1.506409
  EXPECT_NEAR(value(eurus_penalty(vec({1, 0}), vec({0, 1}))), (nls(1) + 2 * nls(0) + nls(-1)) / 2, 1e-6);
  EXPECT_NEAR(value(eurus_penalty(vec({1, 0}), vec({0, 1}))), 1.506409, 1e-6);
  // Centering: pair sums 2 and 1, mean of squares 2.5, times 0.01
  EXPECT_NEAR(value(centering_penalty(vec({1, 0.5}), vec({1, 0.5}), 0.01)), 0.025, 1e-7);
  // InfoRM's KL: 0.5 * ((1 + 1 - 0 - 1) + (0 + 2 - ln 2 - 1)) = 1 - ln(2) / 2, one row
  auto mu = torch::tensor({{1.0f, 0.0f}}), logvar = torch::tensor({{0.0f, float(std::log(2.0))}});
  EXPECT_NEAR(value(gaussian_kl(mu, logvar)), 1 - std::log(2.0) / 2, 1e-6);
  EXPECT_NEAR(value(gaussian_kl(torch::zeros({3, 4}), torch::zeros({3, 4}))), 0.0, 1e-9);  // the prior itself
  // Pearson: dx = (-1, 0, 1), dy = (-7, -1, 8) / 3: 5 / sqrt(2 * 114 / 9) = 0.993399
  EXPECT_NEAR(value(pearson(vec({1, 2, 3}), vec({2, 4, 7}))), 5 / std::sqrt(2 * 114.0 / 9), 1e-6);
  EXPECT_NEAR(value(pearson(vec({1, 1, 1}), vec({1, 2, 3}))), 0.0, 1e-9);  // constant: 0, not NaN
  // ODIN: quality perfectly correlated with length (|1|), the length head anti-correlated (-(-1)): 2
  EXPECT_NEAR(value(odin_length_penalty(vec({1, 2, 3}), vec({3, 2, 1}), vec({1, 2, 3}))), 2.0, 1e-6);
  EXPECT_NEAR(value(odin_length_penalty(vec({1, 3, 2}), vec({1, 2, 3}), vec({1, 2, 3}))), 0.5 - 1, 1e-6);
  // Orthogonality: |1 * 3 + 2 * -1| = 1; two rows: (|2| + |-4|) / 2 = 3
  EXPECT_NEAR(value(orthogonality_penalty(torch::tensor({{1.0f, 2.0f}}), torch::tensor({{3.0f, -1.0f}}))),
              1.0, 1e-6);
  EXPECT_NEAR(value(orthogonality_penalty(torch::eye(2), torch::tensor({{2.0f, -4.0f}}))), 3.0, 1e-6);
}

TEST(RewardData, ResponseMaskCoversOnlyResponseTokensAndPaddingIsMasked) {
  auto tokenizer = load_tokenizer(resolve_model_path("tinystories-656k"));
  auto a = encode_prompt_response(*tokenizer, "Once upon a time", " there was a cat.", 0);
  auto prompt_only = tokenizer->encode("Once upon a time");
  // The response starts where the joint tokens leave the prompt's own (a seam token counts as response).
  ASSERT_GT(a.response_start, 0);
  ASSERT_LE(a.response_start, int64_t(prompt_only.size()));
  EXPECT_TRUE(std::equal(a.ids.begin(), a.ids.begin() + a.response_start, prompt_only.begin()));
  EXPECT_EQ(a.ids, tokenizer->encode("Once upon a time there was a cat."));
  auto b = encode_prompt_response(*tokenizer, "Once", " upon", 0);
  auto batch = collate({&a, &b}, 0);
  ASSERT_EQ(batch.ids.size(1), int64_t(a.ids.size()));
  EXPECT_EQ(batch.response_mask[0].sum().item<int64_t>(), int64_t(a.ids.size()) - a.response_start);
  EXPECT_EQ(batch.response_mask[1].sum().item<int64_t>(), int64_t(b.ids.size()) - b.response_start);
  EXPECT_EQ(batch.mask[1].sum().item<int64_t>(), int64_t(b.ids.size()));  // padding is 0
  EXPECT_EQ((batch.response_mask * (1 - batch.mask)).sum().item<int64_t>(), 0);
  // Left truncation keeps BOS and the response's end.
  auto t = encode_prompt_response(*tokenizer, "Once upon a time there was a big red dog", " and a cat.", 6);
  ASSERT_EQ(t.ids.size(), 6u);
  EXPECT_EQ(t.ids.front(), *tokenizer->bos_id);
  auto full = tokenizer->encode("Once upon a time there was a big red dog and a cat.");
  EXPECT_EQ(t.ids.back(), full.back());
}

TEST(RewardModel, SequenceClassificationFixtureReproducesTransformers) {
  torch::NoGradGuard no_grad;
  auto dir = shared_path("fixtures/hf/llama_seqcls_rm");
  auto model = load_reward_model(dir);
  auto ref = load_safetensors(dir + "/reference.safetensors");
  auto rewards = model->forward(ref.at("input_ids"), ref.at("attention_mask")).rewards;
  auto expected = ref.at("rewards").view({-1});
  EXPECT_LT((rewards - expected).abs().max().item<double>(), 1e-4);
}

TEST(RewardModel, HeadDropoutActsWhileTrainingOnly) {
  auto model_dir = resolve_model_path("tinystories-656k");
  auto model = make_reward_model(model_dir, {"mlp", 64, 0.5}, 3);
  auto tokenizer = load_tokenizer(model_dir);
  auto ids = torch::tensor(tokenizer->encode("Once upon a time there was a cat")).unsqueeze(0).repeat({4, 1});
  auto mask = torch::ones_like(ids);
  torch::NoGradGuard no_grad;
  model->train();
  auto a = model->forward(ids, mask).rewards, b = model->forward(ids, mask).rewards;
  EXPECT_FALSE(torch::allclose(a, b)) << "rows of one batch and two calls should draw different masks";
  model->eval();
  auto c = model->forward(ids, mask).rewards, d = model->forward(ids, mask).rewards;
  EXPECT_TRUE(torch::equal(c, d));
  EXPECT_NEAR((c - c[0]).abs().max().item<double>(), 0.0, 1e-6);  // same text, same reward
  // The training default is the reference's 0.1.
  EXPECT_DOUBLE_EQ(RmConfig().head_dropout, 0.1);
}

TEST(RewardModel, LinearHeadSavesAsSequenceClassificationAndReloads) {
  torch::NoGradGuard no_grad;
  auto out = temp_dir("save");
  auto model = make_reward_model(resolve_model_path("tinystories-656k"), {"linear", 0}, 3);
  save_reward_model(model, (out / "rm").string());
  auto config = nlohmann::json::parse(read_file((out / "rm/config.json").string()));
  EXPECT_EQ(config["architectures"][0], "LlamaForSequenceClassification");
  EXPECT_TRUE(SafetensorsFile((out / "rm/model.safetensors").string()).contains("score.weight"));
  auto reloaded = load_reward_model((out / "rm").string());
  auto ids = torch::tensor({{1, 300, 400, 500}}, torch::kInt64);
  auto mask = torch::ones_like(ids);
  EXPECT_TRUE(torch::equal(model->forward(ids, mask).rewards, reloaded->forward(ids, mask).rewards));
  fs::remove_all(out);
}

TEST(PreferenceData, ReadsHhhAndHhRlhfThroughTheirMappings) {
  DataConfig hhh;
  hhh.path = shared_path("data/hhh_alignment.jsonl");
  DataReport report;
  auto pairs = read_preferences(hhh, &report);
  ASSERT_GT(pairs.size(), 0u);
  EXPECT_EQ(report.records, int64_t(pairs.size()));
  EXPECT_TRUE(pairs[0].groups.count("subset"));
  DataConfig hh;
  hh.path = shared_path("data/hh_rlhf_harmless_test.jsonl.gz");
  auto dialogues = read_preferences(hh, &report);
  ASSERT_GT(dialogues.size(), 0u);
  EXPECT_EQ(report.skipped, 0);
  for (const auto& p : dialogues) {
    ASSERT_GE(p.prompt.size(), 12u);
    EXPECT_EQ(p.prompt.substr(p.prompt.size() - 12), "\n\nAssistant:") << p.origin;
  }
  // Most dialogues differ only in the last turn, so their responses hold no further Assistant turn.
  size_t last_turn_only = 0;
  for (const auto& p : dialogues) last_turn_only += p.chosen.find("\n\nAssistant:") == std::string::npos;
  EXPECT_GT(last_turn_only, dialogues.size() * 9 / 10);
}

// Writes lines to a temp JSONL file and reads it with the given format; returns the error or "".
std::string read_error(const std::string& name, const std::string& lines, const std::string& format,
                       std::vector<PreferencePair>* out = nullptr, DataReport* report = nullptr,
                       const std::string& on_bad = "error", const std::string& ties = "drop") {
  auto dir = temp_dir("data_" + name);
  DataConfig c;
  c.path = (dir / "data.jsonl").string();
  c.format = format;
  c.on_bad_record = on_bad;
  c.ties = ties;
  write_file_atomic(c.path, lines);
  try {
    auto pairs = read_preferences(c, report);
    if (out) *out = pairs;
    return "";
  } catch (const Error& e) {
    return e.what();
  }
}

TEST(PreferenceData, EachBadRecordNamesFileLineAndField) {
  const std::string good = R"({"prompt": "p", "chosen": "a", "rejected": "b"})";
  auto expect = [](const std::string& error, const std::string& part) {
    EXPECT_NE(error.find(part), std::string::npos) << "error: " << error << "\nexpected: " << part;
  };
  expect(read_error("json", good + "\n{not json\n", "pairs"), "data.jsonl:2: not valid JSON");
  expect(read_error("missing", good + "\n" + R"({"prompt": "p", "chosen": "a"})", "pairs"),
         "data.jsonl:2: missing field 'rejected'");
  expect(read_error("type", R"({"prompt": "p", "chosen": 3, "rejected": "b"})", "pairs"),
         "data.jsonl:1: field 'chosen' must be a string");
  expect(read_error("object", "[1, 2]", "pairs"), "must be a JSON object");
  expect(read_error("messages", R"({"chosen": [{"role": "user"}], "rejected": []})", "messages"),
         "field 'chosen[0]' must be");
  expect(
      read_error(
          "last_role",
          R"({"chosen": [{"role": "user", "content": "x"}], "rejected": [{"role": "user", "content": "y"}]})",
          "messages"),
      "the last message must be the assistant's");
  expect(read_error("transcript", R"({"chosen": "no turns", "rejected": "no turns"})", "transcript"),
         "has no \"\\n\\nAssistant:\" turn");
  expect(
      read_error(
          "rating",
          R"({"conv_A": "\n\nHuman: q\n\nAssistant: a", "conv_B": "\n\nHuman: q\n\nAssistant: b", "conv_A_rating": "high", "conv_B_rating": 1})",
          "rated"),
      "field 'conv_A_rating' must be a number");
  expect(read_error("winner", R"({"prompt": "p", "response_a": "a", "response_b": "b", "winner": "both"})",
                    "winner"),
         "must be a, b, model_a, model_b or tie");

  // skip mode counts and reports instead of failing
  DataReport report;
  std::vector<PreferencePair> pairs;
  EXPECT_EQ(read_error("skip", good + "\n{bad\n" + good + "\n", "pairs", &pairs, &report, "skip"), "");
  EXPECT_EQ(pairs.size(), 2u);
  EXPECT_EQ(report.skipped, 1);
  ASSERT_EQ(report.skipped_examples.size(), 1u);
  EXPECT_NE(report.skipped_examples[0].find("data.jsonl:2"), std::string::npos);
}

TEST(PreferenceData, RatedAndWinnerFormatsHandleTiesAndMargins) {
  std::string rated =
      R"({"conv_A": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "conv_B": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}], "conv_A_rating": 2, "conv_B_rating": 5})"
      "\n"
      R"({"conv_A": "\n\nHuman: q\n\nAssistant: a", "conv_B": "\n\nHuman: q\n\nAssistant: b", "conv_A_rating": 3, "conv_B_rating": 3})";
  std::vector<PreferencePair> pairs;
  DataReport report;
  EXPECT_EQ(read_error("rated", rated, "auto", &pairs, &report), "");
  ASSERT_EQ(pairs.size(), 1u);
  EXPECT_EQ(pairs[0].chosen, " b");
  EXPECT_DOUBLE_EQ(pairs[0].margin, 3.0);
  EXPECT_EQ(report.ties_dropped, 1);
  std::string winner = R"({"prompt": "p", "response_a": "a", "response_b": "b", "winner": "model_b"})"
                       "\n"
                       R"({"prompt": "p", "response_a": "a", "response_b": "b", "winner": "tie"})";
  EXPECT_EQ(read_error("winner_keep", winner, "auto", &pairs, &report, "error", "keep"), "");
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].chosen, "b");
  EXPECT_TRUE(pairs[1].tie);
  EXPECT_EQ(report.ties_kept, 1);
}

// Layouts as public pairwise sets have them: numbers for the winner (0 = first better, 1 = second, 2 =
// tie), field names with spaces, and a single group field given as a string (as `--map` passes it).
TEST(PreferenceData, WinnerValuesMapNumbersAndFieldNamesMayHoldSpaces) {
  auto dir = temp_dir("winner_values");
  std::string path = (dir / "d.jsonl").string();
  write_file_atomic(
      path, R"({"the question": "q1", "answer one": "a1", "answer two": "b1", "label": 1, "scenario": "x"})"
            "\n"
            R"({"the question": "q2", "answer one": "a2", "answer two": "b2", "label": 0, "scenario": "y"})"
            "\n"
            R"({"the question": "q3", "answer one": "a3", "answer two": "b3", "label": 2, "scenario": "y"})"
            "\n");
  YAML::Node data(YAML::NodeType::Map);
  for (const char* assignment : {"format=winner", "prompt_field=the question", "response_a_field=answer one",
                                 "response_b_field=answer two", "winner_field=label",
                                 "winner_values={0: a, 1: b, 2: tie}", "group_fields=scenario"})
    apply_checked_override<DataConfig>(data, assignment);
  DataConfig config = read_config<DataConfig>(data, "--map");
  config.path = path;
  EXPECT_EQ(config.group_fields, std::vector<std::string>{"scenario"});
  DataReport report;
  auto pairs = read_preferences(config, &report);
  ASSERT_EQ(pairs.size(), 2u);
  EXPECT_EQ(pairs[0].prompt, "q1");
  EXPECT_EQ(pairs[0].chosen, "b1");  // 1: the second answer is better
  EXPECT_EQ(pairs[1].chosen, "a2");
  EXPECT_EQ(pairs[1].groups.at("scenario"), "y");
  EXPECT_EQ(report.ties_dropped, 1);
  // A value the map does not name is an error naming the line, the field and the remedy.
  config.winner_values.erase("2");
  std::string message = error_of([&] { read_preferences(config); });
  EXPECT_NE(message.find("d.jsonl:3"), std::string::npos) << message;
  EXPECT_NE(
      message.find("field 'label' must be a, b, model_a, model_b or tie, got 2; map the data's own values "
                   "with winner_values"),
      std::string::npos)
      << message;
  // Only a, b and tie may be meant.
  EXPECT_NE(error_of([] {
              check_config_key<DataConfig>("winner_values", YAML::Load("{0: first}"), "--map");
            }).find("must be one of a, b, tie"),
            std::string::npos);
  fs::remove_all(dir);
}

// Scores a response by its text: "right" above "wrong", so each pair's outcome is chosen by its texts.
struct TextScorer : Scorer {
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    std::vector<double> out;
    for (const auto& item : items) out.push_back(item.response == "right" ? 1.0 : 0.0);
    return out;
  }
};

// `n` pairs of `subset`, the first `n_right` ranked right.
void add_pairs(std::vector<PreferencePair>& pairs, const std::string& subset, int n, int n_right) {
  for (int i = 0; i < n; ++i) {
    PreferencePair p;
    p.chosen = i < n_right ? "right" : "wrong";
    p.rejected = i < n_right ? "wrong" : "right";
    p.groups["subset"] = subset;
    pairs.push_back(p);
  }
}

// The issue's worked example: math-prm (447 pairs) at 0.90 and code (6 x 164 pairs) at 0.60. Pooling the
// pairs gives 0.694; RewardBench v1's scorer counts math-prm as 984 and gives 0.750.
TEST(EvalRm, RewardBenchReasoningWeighsMathAsTheOfficialScorerDoes) {
  std::vector<PreferencePair> pairs;
  add_pairs(pairs, "math-prm", 447, 402);  // 402 / 447 = 0.8993
  for (const char* code : {"hep-cpp", "hep-go", "hep-java", "hep-js", "hep-python", "hep-rust"})
    add_pairs(pairs, code, 164, 98);  // 98 / 164 = 0.5976 each
  TextScorer scorer;
  EvalSetConfig set;
  set.sections["Reasoning"] = {"math-prm", "hep-cpp",    "hep-go",  "hep-java",
                               "hep-js",   "hep-python", "hep-rust"};
  double math = 402.0 / 447, code = 98.0 / 164;
  auto pooled = evaluate_pairs(scorer, pairs, set);
  EXPECT_NEAR(pooled.sections.at("Reasoning").accuracy, (402.0 + 6 * 98) / (447 + 984), 1e-12);  // 0.692
  set.subset_weights["math-prm"] = 984;
  auto weighted = evaluate_pairs(scorer, pairs, set);
  EXPECT_NEAR(weighted.sections.at("Reasoning").accuracy, (984 * math + 984 * code) / 1968, 1e-12);  // 0.748
  EXPECT_EQ(weighted.sections.at("Reasoning").n, 447 + 984);
  EXPECT_NEAR(*weighted.section_score, weighted.sections.at("Reasoning").accuracy, 1e-12);
  // benchmark: rewardbench gives the official four sections and that weight; given sections win.
  EvalSetConfig preset;
  preset.benchmark = "rewardbench";
  preset = with_benchmark_defaults(preset);
  EXPECT_EQ(preset.sections.size(), 4u);
  EXPECT_EQ(preset.sections.at("Reasoning").size(), 7u);
  EXPECT_DOUBLE_EQ(preset.subset_weights.at("math-prm"), 984);
  EvalSetConfig own = set;
  own.benchmark = "rewardbench";
  EXPECT_EQ(with_benchmark_defaults(own).sections.size(), 1u);
}

TEST(RewardBench2, BestOfFourAndTiesMatchHandWorkedScores) {
  EXPECT_EQ(best_of_k_credit({2, 1, 0, -1}, 1), 1.0);
  EXPECT_EQ(best_of_k_credit({1, 2, 0, 0}, 1), 0.0);
  EXPECT_EQ(best_of_k_credit({2, 2, 0, 1}, 1), 0.5);  // tied at the top with one wrong answer: half
  EXPECT_EQ(best_of_k_credit({2, 2, 2, 2}, 1), 0.25);
  EXPECT_THROW(best_of_k_credit({1, 2}, 2), Error);
  auto stats = ties_prompt_stats({3, 2, 1, 0}, 2);
  EXPECT_TRUE(stats.accurate);
  EXPECT_EQ(stats.correct_spread, 1.0);
  EXPECT_EQ(stats.correct_incorrect_margin, 1.0);
  EXPECT_TRUE(std::isnan(ties_prompt_stats({5, 1}, 1).correct_spread));
  // Prompt 1: ref margin 4; tied spread 0.5, margin 2.5, so both margin tests hold and tanh(2.5/0.5 - 1).
  // Prompt 2: ref margin 2; tied {1, 0 | 2}: margin -2 (inaccurate), spread 1, tanh(-2/1 - 1).
  std::map<std::string, TiesPromptStats> ref = {{"1", ties_prompt_stats({5, 1}, 1)}},
                                         tied = {{"1", ties_prompt_stats({4, 3.5, 1, 0}, 2)}};
  EXPECT_NEAR(ties_score(ref, tied), 0.3 + 0.3 + 0.2 + 0.2 + 0.01 * std::tanh(4.0), 1e-12);
  ref["2"] = ties_prompt_stats({3, 1}, 1);
  tied["2"] = ties_prompt_stats({1, 0, 2}, 2);
  double expected =
      0.3 * 0.5 + 0.3 * 1 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (std::tanh(4.0) + std::tanh(-3.0)) / 2;
  EXPECT_NEAR(ties_score(ref, tied), expected, 1e-12);  // 0.6500214
  EXPECT_NEAR(ties_score(ref, tied), 0.6500214, 1e-7);
  // Equal margins: "greater than" fails, tanh(0) adds nothing.
  EXPECT_NEAR(ties_score({{"1", ties_prompt_stats({5, 1}, 1)}}, {{"1", ties_prompt_stats({3, 2, 1, 0}, 2)}}),
              0.6, 1e-12);
}

// Scores a response by the number it is.
struct NumberScorer : Scorer {
  std::vector<double> score(const std::vector<ScoreItem>& items) override {
    std::vector<double> out;
    for (const auto& item : items) out.push_back(std::stod(item.response));
    return out;
  }
};

TEST(RewardBench2, FilesAreScoredPerSubsetAndAveraged) {
  auto dir = temp_dir("rb2");
  auto path = (dir / "rb2.jsonl").string();
  // Math: credits 1 and 0.5 -> 0.75. Focus: 0 (a wrong answer on top). Ties: the hand-worked 0.6 above.
  write_file_atomic(
      path,
      R"({"id": "1", "prompt": "p", "chosen": ["3"], "rejected": ["1", "2", "0"], "subset": "Math", "num_correct": 1}
{"id": "2", "prompt": "p", "chosen": "2", "rejected": ["2", "1", "0"], "subset": "Math"}
{"id": "3", "prompt": "p", "chosen": ["1"], "rejected": ["4", "1", "0"], "subset": "Focus"}
{"id": "ref:1", "prompt": "q", "chosen": ["5"], "rejected": ["1"], "subset": "Ties", "num_correct": 1}
{"id": "tied:1", "prompt": "q", "chosen": ["3", "2"], "rejected": ["1", "0"], "subset": "Ties", "num_correct": 2}
)");
  NumberScorer scorer;
  EvalSetConfig set;
  set.data.path = path;
  set.benchmark = "rewardbench2";
  auto result = evaluate_rewardbench2(scorer, set);
  EXPECT_EQ(result.n, 5);
  EXPECT_NEAR(result.sections.at("Math").accuracy, 0.75, 1e-12);
  EXPECT_EQ(result.sections.at("Math").n, 2);
  EXPECT_NEAR(result.sections.at("Focus").accuracy, 0.0, 1e-12);
  EXPECT_NEAR(result.sections.at("Ties").accuracy, 0.6, 1e-12);
  EXPECT_NEAR(result.accuracy, (0.75 + 0 + 0.6) / 3, 1e-12);
  EXPECT_NEAR(*result.section_score, result.accuracy, 1e-12);
  // Bad records name the line and the field.
  write_file_atomic(path,
                    "{\"prompt\": \"p\", \"chosen\": [\"1\"], \"rejected\": [\"0\"], \"subset\": \"Math\"}\n"
                    "{\"prompt\": \"p\", \"chosen\": [1], \"rejected\": [\"0\"], \"subset\": \"Math\"}\n");
  EXPECT_NE(error_of([&] {
              evaluate_rewardbench2(scorer, set);
            }).find("rb2.jsonl:2: field 'chosen' must hold strings"),
            std::string::npos);
  write_file_atomic(
      path, R"({"id": "x:1", "prompt": "p", "chosen": ["1", "2"], "rejected": ["0"], "subset": "Ties"})");
  EXPECT_NE(error_of([&] {
              evaluate_rewardbench2(scorer, set);
            }).find("rb2.jsonl:1: a Ties record's id must be ref:N or tied:N"),
            std::string::npos);
  write_file_atomic(path,
                    R"({"id": "ref:1", "prompt": "q", "chosen": ["5"], "rejected": ["1"], "subset": "Ties"}
{"id": "ref:1", "prompt": "q", "chosen": ["4"], "rejected": ["1"], "subset": "Ties"}
)");
  EXPECT_NE(error_of([&] {
              evaluate_rewardbench2(scorer, set);
            }).find("rb2.jsonl:2: the Ties id 'ref:1' appears twice"),
            std::string::npos);
  write_file_atomic(
      path, R"({"prompt": "p", "chosen": ["1"], "rejected": ["0"], "subset": "Math", "num_correct": 2})");
  EXPECT_NE(
      error_of([&] { evaluate_rewardbench2(scorer, set); }).find("num_correct is 2, but 'chosen' holds 1"),
      std::string::npos);
  fs::remove_all(dir);
}

// transformers saves *ForSequenceClassification checkpoints without tokenizer files: such a directory is
// scored with a tokenizer given beside it, and without one the error says how.
TEST(Scorer, AModelSavedWithoutATokenizerTakesOneGivenBesideIt) {
  auto dir = temp_dir("no_tokenizer");
  std::string backbone = shared_path("models/tinystories-656k");
  auto rm = make_reward_model(backbone, {"linear", 0}, 0);
  save_reward_model(rm, (dir / "rm").string());
  ASSERT_FALSE(fs::exists(dir / "rm/tokenizer.json"));
  std::string message = error_of([&] { make_model_scorer((dir / "rm").string(), 8, "cpu"); });
  EXPECT_NE(message.find("--tokenizer DIR|FILE"), std::string::npos) << message;
  ScorerConfig config;
  config.model = (dir / "rm").string();
  config.tokenizer = backbone + "/tokenizer.json";
  config.device = "cpu";
  auto scorer = make_scorer(config);
  auto rewards = scorer->score({{"Once upon a time", " there was a cat."}});
  ASSERT_EQ(rewards.size(), 1u);
  EXPECT_TRUE(std::isfinite(rewards[0]));
  fs::remove_all(dir);
}

// A pair set whose preferred story has a simple property: it ends happily, the rejected one sadly.
std::string story_pairs(int n, uint64_t seed) {
  const char* names[] = {"Lily", "Tom", "Ben", "Sue", "Max", "Mia", "Sam", "Anna"};
  const char* things[] = {"ball", "kite", "cake", "toy", "book", "dog", "hat", "box"};
  const char* happy[] = {"They laughed and played together all day.", "She smiled and was very happy.",
                         "He hugged his friend and felt glad.", "They had fun and were happy."};
  const char* sad[] = {"He cried and was very sad.", "She felt angry and alone.",
                       "They were scared and upset.", "He lost it and felt bad."};
  std::mt19937_64 rng(seed);
  std::string out;
  for (int i = 0; i < n; ++i) {
    std::string name = names[rng() % 8], thing = things[rng() % 8];
    std::string prompt = "Once upon a time, " + name + " had a " + thing + ".";
    std::string middle = " " + name + " took the " + thing + " to the park. ";
    nlohmann::json record = {
        {"prompt", prompt}, {"chosen", middle + happy[rng() % 4]}, {"rejected", middle + sad[rng() % 4]}};
    out += record.dump() + "\n";
  }
  return out;
}

TrainRmConfig small_config(const fs::path& dir, int n_pairs) {
  TrainRmConfig c;
  c.data.path = (dir / "pairs.jsonl").string();
  write_file_atomic(c.data.path, story_pairs(n_pairs, 7));
  c.max_length = 48;
  c.threads = 1;
  c.eval_fraction = 0.2;
  c.rm.head = "linear";
  c.optim.lr = 3e-4;
  c.optim.batch_size = 8;
  c.log_every = 5;
  c.checkpoint_every = 4;
  return c;
}

TEST(TrainRm, LearnsASimplePreferenceToHighHeldOutAccuracy) {
  auto dir = temp_dir("learn");
  auto c = small_config(dir, 400);
  c.optim.epochs = 1;
  auto result = train_reward_model(c, (dir / "out").string());
  EXPECT_GE(result.heldout_accuracy, 0.95);
  EXPECT_EQ(result.heldout_pairs, 80);
  EXPECT_TRUE(fs::exists(dir / "out/model/config.json"));
  EXPECT_TRUE(fs::exists(dir / "out/model/tokenizer.json"));
  EXPECT_TRUE(fs::exists(dir / "out/metrics.jsonl"));
  fs::remove_all(dir);
}

std::map<std::string, torch::Tensor> weights_of(const fs::path& model_dir) {
  return load_safetensors((model_dir / "model.safetensors").string());
}

double max_difference(const std::map<std::string, torch::Tensor>& a,
                      const std::map<std::string, torch::Tensor>& b) {
  double worst = 0;
  EXPECT_EQ(a.size(), b.size());
  for (const auto& [key, t] : a) worst = std::max(worst, (t - b.at(key)).abs().max().item<double>());
  return worst;
}

// Trains `c` straight through, and again stopped after `stop_after` steps (as a kill would) and restarted
// with the same command; both end with the same weights, and the stopped run exported nothing.
void expect_resume_matches_straight(const TrainRmConfig& c, const fs::path& dir, int64_t stop_after) {
  train_reward_model(c, (dir / "straight").string());
  EXPECT_FALSE(train_reward_model(c, (dir / "resumed").string(), "", stop_after).finished);
  EXPECT_FALSE(fs::exists(dir / "resumed/model/config.json"));
  train_reward_model(c, (dir / "resumed").string());
  EXPECT_EQ(max_difference(weights_of(dir / "straight/model"), weights_of(dir / "resumed/model")), 0.0);
}

TEST(TrainRm, ResumeAfterAKillGivesTheSameFinalParameters) {
  auto dir = temp_dir("resume");
  auto c = small_config(dir, 120);
  c.rm.method = "grm";
  c.rm.reg = "sft";
  c.rm.alpha = 0.1;
  // Stopped after 5 steps (the last checkpoint is at step 4), then restarted with the same command.
  expect_resume_matches_straight(c, dir, 5);
  fs::remove_all(dir);
}

TEST(TrainRm, EveryMethodAndRegularizerTrains) {
  auto dir = temp_dir("methods");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 2;
  c.checkpoint_every = 0;
  c.rm.head = "mlp";
  c.rm.head_hidden = 32;
  auto base = load_causal_lm(resolve_model_path("tinystories-656k"))->hf_state_dict();
  int index = 0;
  for (std::string variant :
       {"margin", "label_smooth", "frozen", "grm:sft", "grm:sft_nll", "grm:dpo_noref", "grm:dpo", "lora"}) {
    auto run = c;
    auto colon = variant.find(':');
    run.rm.method = variant.substr(0, colon);
    if (colon != std::string::npos) run.rm.reg = variant.substr(colon + 1);
    if (variant == "lora") run.rm.method = "bt", run.rm.finetune = "lora";
    auto out = dir / std::to_string(index++);
    auto result = train_reward_model(run, out.string());
    EXPECT_EQ(result.steps, 2) << variant;
    auto trained = weights_of(out / "model");
    double backbone_change = (trained.at("model.layers.0.self_attn.q_proj.weight") -
                              base.at("model.layers.0.self_attn.q_proj.weight"))
                                 .abs()
                                 .max()
                                 .item<double>();
    if (run.rm.method == "frozen")
      EXPECT_EQ(backbone_change, 0.0) << variant;
    else
      EXPECT_GT(backbone_change, 0.0) << variant;  // LoRA changes it once merged on export
  }
  fs::remove_all(dir);
}

TEST(TrainRm, ScheduleHoldsOrDecaysTheLearningRate) {
  auto dir = temp_dir("schedule");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 3;
  c.optim.warmup_ratio = 0;
  c.log_every = 1;
  c.checkpoint_every = 0;
  auto rates = [&](const std::string& schedule) {
    auto run = c;
    run.optim.schedule = schedule;
    train_reward_model(run, (dir / schedule).string());
    std::vector<double> out;
    for (const auto& line : read_lines((dir / schedule / "metrics.jsonl").string()))
      out.push_back(nlohmann::json::parse(line).at("lr").get<double>());
    return out;
  };
  EXPECT_EQ(rates("constant"), std::vector<double>(3, c.optim.lr));
  auto cosine = rates("cosine");
  ASSERT_EQ(cosine.size(), 3u);
  EXPECT_EQ(cosine[0], c.optim.lr);
  EXPECT_LT(cosine[2], cosine[1]);
  EXPECT_LT(cosine[1], cosine[0]);
  fs::remove_all(dir);
}

TEST(TrainRmConfig, AFrozenBackboneIsSpelledMethodFrozen) {
  auto read = [](const std::string& yaml) {
    return read_config<TrainRmConfig>(load_yaml_text(yaml, "rm.yaml"), "rm.yaml");
  };
  EXPECT_EQ(read("rm: {method: frozen}\n").rm.method, "frozen");
  try {
    read("rm:\n  finetune: frozen\n");
    ADD_FAILURE() << "finetune: frozen was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "rm.yaml:2: 'rm.finetune: frozen' was renamed to 'rm.method: frozen'");
  }
}

TEST(TrainRm, EnsembleTrainsMembersAndCombinesThem) {
  auto dir = temp_dir("ensemble");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 2;
  c.rm.method = "ensemble";
  c.rm.ensemble.members = 2;
  c.rm.ensemble.combine = "min";
  train_reward_model(c, (dir / "out").string());
  ASSERT_TRUE(fs::exists(dir / "out/model/member_1/config.json"));
  auto ensemble = make_model_scorer((dir / "out/model").string());
  auto m0 = make_model_scorer((dir / "out/model/member_0").string());
  auto m1 = make_model_scorer((dir / "out/model/member_1").string());
  std::vector<ScoreItem> items = {{"Once upon a time", " a dog was happy."}, {"Once", " Tom cried."}};
  auto e = ensemble->score(items), a = m0->score(items), b = m1->score(items);
  for (size_t i = 0; i < items.size(); ++i) EXPECT_DOUBLE_EQ(e[i], std::min(a[i], b[i]));
  EXPECT_NE(a[0], b[0]);  // different seeds, different members
  EXPECT_DOUBLE_EQ(combine_ensemble({1, 3}, "mean_minus_std", 2.0), 2.0 - 2.0 * 1.0);
  // The members were trained with their own seeds, none of them the run's (the bt proxy's) seed.
  for (int k = 0; k < 2; ++k) {
    auto config =
        nlohmann::json::parse(read_file((dir / fmt::format("out/model/member_{}/config.json", k)).string()));
    EXPECT_EQ(config["grm"]["seed"].get<uint64_t>(), ensemble_member_seed(c.seed, k));
    EXPECT_TRUE(config["mean"].is_number() && config["std"].is_number());  // each member its own
  }
  fs::remove_all(dir);
}

TEST(Scorer, EnsembleRulesMatchHandWorkedValuesAndTheirLimits) {
  // Members 1 and 3: mean 2, population variance 1.
  EXPECT_DOUBLE_EQ(combine_ensemble({1, 3}, "mean", 0), 2.0);
  EXPECT_DOUBLE_EQ(combine_ensemble({1, 3}, "min", 0), 1.0);                       // WCO
  EXPECT_DOUBLE_EQ(combine_ensemble({1, 3, 2}, "uwo", 0.5), 2.0 - 0.5 * 2.0 / 3);  // variance 2/3
  EXPECT_DOUBLE_EQ(combine_ensemble({1, 3}, "uwo", 2.0), 0.0);
  // -log((e^-1 + e^-3) / 2) = 1.566219
  EXPECT_NEAR(combine_ensemble({1, 3}, "softmin", 0, 1.0), -std::log((std::exp(-1) + std::exp(-3)) / 2),
              1e-12);
  EXPECT_NEAR(combine_ensemble({1, 3}, "softmin", 0, 1.0), 1.566219, 1e-6);
  EXPECT_NEAR(combine_ensemble({1, 3}, "softmin", 0, 1e-3), 1.0 + 1e-3 * std::log(2.0), 1e-9);  // -> min
  EXPECT_NEAR(combine_ensemble({1, 3}, "softmin", 0, 1e4), 2.0, 1e-3);                          // -> mean
  EXPECT_NEAR(combine_ensemble({1000, 3000}, "softmin", 0, 0.01), 1000 + 0.01 * std::log(2.0), 1e-9);
  EXPECT_THROW(combine_ensemble({1, 3}, "median", 0), Error);
}

TEST(TrainRm, PublishedMethodsTrainAndExportOrdinaryModels) {
  auto dir = temp_dir("published");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 2;
  c.log_every = 1;
  c.checkpoint_every = 0;
  c.rm.head = "mlp";
  c.rm.head_hidden = 16;
  c.rm.inform.latent = 8;
  auto base = load_causal_lm(resolve_model_path("tinystories-656k"))->hf_state_dict();
  std::vector<ScoreItem> items = {{"Once upon a time", " a dog was happy."}, {"Once", " Tom cried."}};
  for (std::string method : {"bsr", "eurus", "center", "inform", "odin"}) {
    auto run = c;
    run.rm.method = method;
    auto out = dir / method;
    EXPECT_EQ(train_reward_model(run, out.string()).steps, 2) << method;
    // The method's own term is in the loss: loss = reward loss + the method's term, and that term is not 0
    // (ODIN's can be negative: a length head correlated with length lowers it).
    for (const auto& line : read_lines((out / "metrics.jsonl").string())) {
      auto row = nlohmann::json::parse(line);
      EXPECT_NE(row.at("reg_loss").get<double>(), 0.0) << method;
      EXPECT_NEAR(row.at("loss").get<double>(),
                  row.at("reward_loss").get<double>() + row.at("reg_loss").get<double>(), 1e-6)
          << method;
    }
    auto trained = weights_of(out / "model");
    EXPECT_GT((trained.at("model.norm.weight") - base.at("model.norm.weight")).abs().max().item<double>(), 0)
        << method;
    // ODIN's length head is a training device: not saved. InfoRM's bottleneck is part of the scorer.
    EXPECT_EQ(trained.count("length_head.weight"), 0u) << method;
    EXPECT_EQ(trained.count("bottleneck.weight"), method == "inform" ? 1u : 0u) << method;
    auto model = load_reward_model((out / "model").string());
    EXPECT_EQ(model->head_options().bottleneck, method == "inform" ? 8 : 0) << method;
    EXPECT_EQ(model->metadata.at("method"), method);
    auto scorer = make_model_scorer((out / "model").string());
    auto first = scorer->score(items), again = scorer->score(items);
    EXPECT_EQ(first, again) << method << ": scoring reads z = mu, no noise";
    EXPECT_NE(first[0], first[1]) << method;
  }
  // InfoRM's noise is a function of (seed, step): a killed and resumed run ends where a straight one does.
  auto run = c;
  run.rm.method = "inform";
  run.optim.max_steps = 6;
  run.checkpoint_every = 2;
  expect_resume_matches_straight(run, dir, 3);
  fs::remove_all(dir);
}

TEST(TrainRm, WarmAveragesMembersTrainedFromOneInitialization) {
  auto dir = temp_dir("warm");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 3;
  c.checkpoint_every = 0;
  c.rm.head = "mlp";
  c.rm.head_hidden = 16;
  c.rm.method = "warm";
  c.rm.warm.members = 2;
  auto result = train_reward_model(c, (dir / "out").string());
  EXPECT_EQ(result.heldout_pairs, 8);
  EXPECT_FALSE(fs::exists(dir / "out/model/ensemble.json"));  // one ordinary model
  auto merged = weights_of(dir / "out/model"), m0 = weights_of(dir / "out/warm_members/member_0"),
       m1 = weights_of(dir / "out/warm_members/member_1");
  ASSERT_EQ(merged.size(), m0.size());
  for (const auto& [name, tensor] : merged)
    EXPECT_LE((tensor - (m0.at(name) + m1.at(name)) / 2).abs().max().item<double>(), 1e-6) << name;
  EXPECT_GT(max_difference(m0, m1), 1e-6);  // their own data orders made them differ
  auto config = nlohmann::json::parse(read_file((dir / "out/model/config.json").string()));
  EXPECT_EQ(config["grm"]["method"], "warm");
  EXPECT_EQ(config["grm"]["warm_members"], 2);
  // One initialization: with a learning rate too small to move anything, WARM's members keep one head,
  // where an ensemble's members start from heads of their own.
  auto still = c;
  still.optim.lr = 1e-12;
  train_reward_model(still, (dir / "still").string());
  auto s0 = weights_of(dir / "still/warm_members/member_0"),
       s1 = weights_of(dir / "still/warm_members/member_1");
  EXPECT_LE((s0.at("reward_head.0.weight") - s1.at("reward_head.0.weight")).abs().max().item<double>(), 1e-9);
  still.rm.method = "ensemble";
  still.rm.ensemble.members = 2;
  train_reward_model(still, (dir / "ensemble").string());
  auto e0 = weights_of(dir / "ensemble/model/member_0"), e1 = weights_of(dir / "ensemble/model/member_1");
  EXPECT_GT((e0.at("reward_head.0.weight") - e1.at("reward_head.0.weight")).abs().max().item<double>(), 1e-3);
  // Members of different architectures are not averaged.
  EXPECT_THROW(
      average_reward_models({(dir / "out/warm_members/member_0").string(), resolve_model_path("stories3m")},
                            (dir / "bad").string()),
      Error);
  fs::remove_all(dir);
}

// A chat format chosen in data.chat_template is what the model trains on and what it is scored with:
// its record in config.json makes the scorer read the same text, so the reward statistics training
// took over its own encoded pairs are the scorer's over the raw pairs.
TEST(TrainRm, TrainsOnItsChatTemplateAndScorersReadTextTheSameWay) {
  auto dir = temp_dir("chat_train");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 2;
  c.checkpoint_every = 0;
  c.eval_fraction = 0;
  c.data.chat = {"gemma", "true"};
  train_reward_model(c, (dir / "out").string());
  auto config = nlohmann::json::parse(read_file((dir / "out/model/config.json").string()));
  EXPECT_EQ(config["grm"]["chat_template"], "gemma");
  EXPECT_EQ(config["grm"]["append_eos"], "true");
  auto scorer = make_model_scorer((dir / "out/model").string());
  std::vector<ScoreItem> items;
  for (const auto& pair : read_preferences(c.data))
    items.push_back({pair.prompt, pair.chosen}), items.push_back({pair.prompt, pair.rejected});
  auto rewards = scorer->score(items);
  double m = 0;
  for (double r : rewards) m += r / double(rewards.size());
  EXPECT_NEAR(config["mean"].get<double>(), m, 1e-6);
  // Read as plain text instead, the same model gives other rewards: the template is what it trained on.
  ScorerConfig as_text;
  as_text.model = (dir / "out/model").string();
  as_text.chat_template = "none";
  auto plain = make_scorer(as_text)->score(items);
  double m_plain = 0;
  for (double r : plain) m_plain += r / double(plain.size());
  EXPECT_GT(std::abs(m_plain - m), 1e-6);
  fs::remove_all(dir);
}

// A few logged steps of GRM on small_config's pairs, and the rows of its metrics.jsonl that log them.
TrainRmConfig short_grm_config(const fs::path& dir, const std::string& reg, int64_t steps) {
  auto c = small_config(dir, 40);
  c.optim.max_steps = steps;
  c.log_every = 1;
  c.checkpoint_every = 0;
  c.rm.method = "grm";
  c.rm.reg = reg;
  c.rm.alpha = 0.1;
  return c;
}
std::vector<nlohmann::json> step_rows(const fs::path& out) {
  std::vector<nlohmann::json> rows;
  for (const auto& line : read_lines((out / "metrics.jsonl").string())) {
    auto row = nlohmann::json::parse(line);
    if (row.contains("reg_loss")) rows.push_back(row);
  }
  return rows;
}

// A pair its chat template refuses (here a system message) is a bad record: an error naming its file and
// line, the template's own message and data.chat_template, or with on_bad_record: skip, dropped.
TEST(TrainRm, PairsTheTemplateRefusesAreBadRecords) {
  auto dir = temp_dir("chat_refused");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 1;
  c.checkpoint_every = 0;
  std::string good = read_lines(c.data.path).front();
  write_file_atomic((dir / "strict.jinja").string(),
                    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not "
                    "supported') }}{% endif %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                    "{% if add_generation_prompt %}<assistant>{% endif %}");
  nlohmann::json refused = {
      {"prompt", "Be brief.\n\nHuman: Hi\n\nAssistant:"}, {"chosen", " Hello"}, {"rejected", " Go"}};
  std::string text;
  for (int i = 0; i < 6; ++i) text += good + "\n";
  write_file_atomic(c.data.path, text + refused.dump() + "\n" + text);
  c.data.chat = {(dir / "strict.jinja").string(), "auto"};
  std::string message = error_of([&] { train_reward_model(c, (dir / "out").string()); });
  EXPECT_NE(message.find("pairs.jsonl:7"), std::string::npos) << message;
  EXPECT_NE(message.find("System role not supported"), std::string::npos) << message;
  EXPECT_NE(message.find("on_bad_record"), std::string::npos) << message;
  c.data.on_bad_record = "skip";
  auto result = train_reward_model(c, (dir / "out").string());
  EXPECT_EQ(result.steps, 1);
  fs::remove_all(dir);
}

// Activation checkpointing changes what is kept, not what is computed: GRM's loss and regularizer at
// every step equal the plain run's, with LoRA dropout drawing the same masks.
TEST(TrainRm, GradientCheckpointingTrainsAsThePlainRun) {
  auto dir = temp_dir("checkpointing");
  auto run = [&](bool checkpointing, const std::string& name) {
    auto c = short_grm_config(dir, "sft", 3);
    c.rm.finetune = "lora";
    c.rm.lora.dropout = 0.2;
    c.gradient_checkpointing = checkpointing;
    train_reward_model(c, (dir / name).string());
    return step_rows(dir / name);
  };
  auto plain = run(false, "plain"), recomputed = run(true, "recomputed");
  ASSERT_EQ(plain.size(), 3u);
  ASSERT_EQ(recomputed.size(), plain.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_NEAR(plain[i]["loss"].get<double>(), recomputed[i]["loss"].get<double>(), 1e-6) << "step " << i;
    EXPECT_NEAR(plain[i]["reg_loss"].get<double>(), recomputed[i]["reg_loss"].get<double>(), 1e-6);
  }
  fs::remove_all(dir);
}

// Frozen weights stored in bf16 (references' default on GPUs, chosen here on the CPU): DPO's regularizer
// stays within bf16's rounding of fp32's, and a bf16 scorer ranks responses as the fp32 one does.
TEST(TrainRm, FrozenWeightsInBf16StayWithinRoundingOfFp32) {
  auto dir = temp_dir("frozen_bf16");
  auto run = [&](const std::string& dtype, const std::string& name) {
    auto c = short_grm_config(dir, "dpo", 2);
    c.frozen_dtype = dtype;
    train_reward_model(c, (dir / name).string());
    std::vector<double> reg;
    for (const auto& row : step_rows(dir / name)) reg.push_back(row["reg_loss"].get<double>());
    return reg;
  };
  auto fp32 = run("float32", "fp32"), bf16 = run("bfloat16", "bf16");
  ASSERT_EQ(fp32.size(), 2u);
  ASSERT_EQ(bf16.size(), 2u);
  for (size_t i = 0; i < fp32.size(); ++i) {
    EXPECT_NEAR(fp32[i], bf16[i], 0.02 * std::abs(fp32[i]) + 1e-3) << "step " << i;
    EXPECT_NE(fp32[i], bf16[i]);  // the reference did run in bf16
  }
  ScorerConfig settings;
  auto full = make_model_scorer((dir / "fp32/model").string(), settings);
  settings.dtype = "bfloat16";
  auto half = make_model_scorer((dir / "fp32/model").string(), settings);
  std::vector<ScoreItem> items;
  for (const auto& pair : read_preferences(small_config(dir, 40).data))
    items.push_back({pair.prompt, pair.chosen});
  auto a = full->score(items), b = half->score(items);
  double largest = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) largest = std::max(largest, std::abs(a[i]));
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  EXPECT_GT(worst, 0.0);
  // bf16 keeps 8 bits of mantissa (0.4%), which the layers compound: on this model the rewards move by
  // up to 10% of the largest and correlate 0.98 with fp32's. That is why scorers default to float32.
  EXPECT_LT(worst, 0.15 * largest) << "largest reward " << largest << ", pearson " << pearson(a, b);
  EXPECT_GT(pearson(a, b), 0.95);
  fs::remove_all(dir);
}

TEST(TrainRm, RecordsRewardStatisticsThatScorersNormalizeWith) {
  auto dir = temp_dir("stats");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 2;
  c.checkpoint_every = 0;
  c.eval_fraction = 0;  // every pair a training pair
  train_reward_model(c, (dir / "out").string());
  auto config = nlohmann::json::parse(read_file((dir / "out/model/config.json").string()));
  ASSERT_TRUE(config["mean"].is_number() && config["std"].is_number()) << config.dump();
  double mean = config["mean"], std = config["std"];
  // The population moments of the exported model's rewards over every training response.
  auto raw = make_model_scorer((dir / "out/model").string());
  std::vector<ScoreItem> items;
  for (const auto& pair : read_preferences(c.data))
    items.push_back({pair.prompt, pair.chosen}), items.push_back({pair.prompt, pair.rejected});
  auto rewards = raw->score(items);
  double m = 0, v = 0;
  for (double r : rewards) m += r / double(rewards.size());
  for (double r : rewards) v += (r - m) * (r - m) / double(rewards.size());
  EXPECT_NEAR(mean, m, 1e-6);
  EXPECT_NEAR(std, std::sqrt(v), 1e-6);
  EXPECT_GT(std, 0);
  ASSERT_TRUE(raw->reward_statistics().has_value());
  EXPECT_EQ(raw->reward_statistics()->mean, mean);
  ScorerConfig normalized;
  normalized.model = (dir / "out/model").string();
  normalized.normalize = true;
  auto scaled = make_scorer(normalized)->score(items);
  for (size_t i = 0; i < items.size(); ++i) EXPECT_NEAR(scaled[i], (rewards[i] - mean) / std, 1e-9);
  // A model without statistics (from an older grm, or another trainer) cannot be normalized.
  config.erase("mean");
  config.erase("std");
  write_file_atomic((dir / "out/model/config.json").string(), config.dump());
  EXPECT_FALSE(make_model_scorer((dir / "out/model").string())->reward_statistics().has_value());
  EXPECT_NE(error_of([&] { make_scorer(normalized); }).find("has no reward statistics"), std::string::npos);
  ScorerConfig oracle;
  oracle.oracle = "story";
  oracle.normalize = true;
  EXPECT_THROW(make_scorer(oracle), Error);
  fs::remove_all(dir);
}

// GRM with a vocabulary above logprob_chunk takes its log-probs chunk by chunk over the response tokens:
// the same regularizer at every step as with the full logits (1e-5), and the same weights to within a third
// of one AdamW step of 3e-4 (AdamW turns the rounding in near-zero gradients, such as those of the
// embedding rows of tokens no response uses, into steps of their own).
TEST(TrainRm, ChunkedLogprobsTrainAsTheFullLogitsDo) {
  auto dir = temp_dir("chunked");
  auto c = small_config(dir, 40);
  c.optim.max_steps = 3;
  c.checkpoint_every = 0;
  c.rm.method = "grm";
  c.rm.alpha = 0.5;  // a regularizer that weighs
  c.log_every = 1;
  for (std::string reg : {"sft", "dpo"}) {
    auto full = c, chunked = c;
    full.rm.reg = chunked.rm.reg = reg;
    chunked.logprob_chunk = 100;  // TinyStories' 512 tokens in 6 chunks, the last one short
    train_reward_model(full, (dir / ("full_" + reg)).string());
    train_reward_model(chunked, (dir / ("chunked_" + reg)).string());
    auto a = read_jsonl(dir / ("full_" + reg) / "metrics.jsonl"),
         b = read_jsonl(dir / ("chunked_" + reg) / "metrics.jsonl");
    ASSERT_EQ(a.size(), b.size());
    for (size_t k = 0; k < a.size(); ++k)  // every step's regularizer, as the full logits give it
      EXPECT_NEAR(a[k]["reg_loss"].get<double>(), b[k]["reg_loss"].get<double>(), 1e-5) << reg;
    EXPECT_LE(max_difference(weights_of(dir / ("full_" + reg) / "model"),
                             weights_of(dir / ("chunked_" + reg) / "model")),
              1e-4)
        << reg;
  }
  fs::remove_all(dir);
}

TEST(TrainRm, EnsembleMemberSeedsAreDisjointFromRunSeedsAndOtherEnsembles) {
  std::set<uint64_t> seen;
  for (uint64_t seed = 0; seed < 50; ++seed)
    for (int64_t k = 0; k < 8; ++k) {
      uint64_t member = ensemble_member_seed(seed, k);
      EXPECT_GE(member, uint64_t(1) << 62) << "member " << k << " of seed " << seed;
      EXPECT_TRUE(seen.insert(member).second) << "member " << k << " of seed " << seed << " repeats a seed";
    }
  EXPECT_EQ(ensemble_member_seed(3, 1), (uint64_t(1) << 62) + (uint64_t(3) << 16) + 1);
  EXPECT_THROW(ensemble_member_seed(uint64_t(1) << 46, 0), Error);
  EXPECT_THROW(ensemble_member_seed(0, 1 << 16), Error);
}

TEST(EvalRm, ReportsOverallAndPerSubsetAccuracyOnHhh) {
  auto dir = temp_dir("eval");
  auto model = make_reward_model(resolve_model_path("tinystories-656k"), {"linear", 0}, 1);
  save_reward_model(model, (dir / "rm").string());
  copy_tokenizer_files(resolve_model_path("tinystories-656k"), (dir / "rm").string());
  EvalRmConfig config;
  config.scorer.model = (dir / "rm").string();
  config.sets["hhh"].data.path = shared_path("data/hhh_alignment.jsonl");
  config.sets["hhh"].sections = {{"safety", {"harmless"}}, {"rest", {"helpful", "honest", "other"}}};
  auto result = nlohmann::json(evaluate_reward_model(config))["sets"]["hhh"];  // as eval.json has it
  auto pairs = read_preferences(config.sets["hhh"].data);
  EXPECT_EQ(result["n"].get<size_t>(), pairs.size());
  int64_t total = 0, right = 0;
  for (auto& [subset, stats] : result["groups"]["subset"].items()) {
    total += stats["n"].get<int64_t>();
    right += std::llround(stats["accuracy"].get<double>() * stats["n"].get<double>());
  }
  EXPECT_EQ(total, int64_t(pairs.size()));
  EXPECT_NEAR(result["accuracy"].get<double>(), double(right) / double(total), 1e-9);
  double sections = (result["sections"]["safety"]["accuracy"].get<double>() +
                     result["sections"]["rest"]["accuracy"].get<double>()) /
                    2;
  EXPECT_NEAR(result["section_score"].get<double>(), sections, 1e-12);
  fs::remove_all(dir);
}

TEST(EvalRm, ResultsRoundTripThroughEvalJsonWithTodaysKeys) {
  EvalSetResult hhh{{0.75, 8}, 1, {{"subset", {{"harmless", {0.5, 2}}, {"helpful", {1.0, 6}}}}}, {}, {}};
  hhh.sections = {{"safety", {0.5, 2}}, {"rest", {1.0, 6}}};
  hhh.section_score = 0.75;
  hhh.correct = {1, 1, 0, 1, 1, 1, 0, 1};
  EvalRmResult result{{{"hhh", hhh}, {"id", EvalSetResult{{0.625, 8}, 0, {}, {}, std::nullopt, {}}}}};
  auto text = R"({"sets": {
      "hhh": {"accuracy": 0.75, "n": 8, "ties": 1,
              "groups": {"subset": {"harmless": {"accuracy": 0.5, "n": 2}, "helpful": {"accuracy": 1.0, "n": 6}}},
              "sections": {"rest": {"accuracy": 1.0, "n": 6}, "safety": {"accuracy": 0.5, "n": 2}},
              "section_score": 0.75, "correct": [1, 1, 0, 1, 1, 1, 0, 1]},
      "id": {"accuracy": 0.625, "n": 8, "ties": 0, "groups": {}, "correct": []}}})";
  EXPECT_EQ(nlohmann::json(result), nlohmann::json::parse(text));  // no sections: neither key
  auto back = nlohmann::json::parse(text).get<EvalRmResult>();
  ASSERT_EQ(back.sets.size(), 2u);
  EXPECT_EQ(back.sets["hhh"].groups["subset"]["helpful"].n, 6);
  EXPECT_EQ(back.sets["hhh"].section_score, 0.75);
  EXPECT_FALSE(back.sets["id"].section_score.has_value());
  EXPECT_EQ(nlohmann::json(back), nlohmann::json(result));
  // The report's fixtures and older runs give less; what is missing reads as NaN, 0 or none.
  auto old = nlohmann::json::parse(R"({"sets": {"id": {"n": 10}}})").get<EvalRmResult>();
  EXPECT_TRUE(std::isnan(old.sets["id"].accuracy));
  EXPECT_EQ(old.sets["id"].ties, 0);
  EXPECT_TRUE(old.sets["id"].correct.empty());
}

TEST(TrainRm, MetricsRowsRoundTripThroughTheirJsonWithTodaysKeys) {
  TrainMetricsRow row{20, 0.5, 0.625, 0.5, 0.25, 0.75, 0.125, 1.5, 1000, 0.0001, "member 1"};
  auto text = R"({"step": 20, "epoch": 0.5, "loss": 0.625, "reward_loss": 0.5, "reg_loss": 0.25,
                  "accuracy": 0.75, "reward_mean": 0.125, "reward_std": 1.5, "tokens_per_s": 1000.0,
                  "lr": 0.0001, "member": "member 1"})";
  EXPECT_EQ(nlohmann::json(row), nlohmann::json::parse(text));
  auto back = nlohmann::json::parse(text).get<TrainMetricsRow>();
  EXPECT_EQ(back.member, "member 1");
  EXPECT_EQ(nlohmann::json(back), nlohmann::json(row));
  row.member.clear();  // not an ensemble: no "member" key
  EXPECT_FALSE(nlohmann::json(row).contains("member"));
  auto old = nlohmann::json::parse(R"({"step": 100, "loss": 0.3, "accuracy": 0.9})").get<TrainMetricsRow>();
  EXPECT_EQ(old.step, 100);
  EXPECT_EQ(old.accuracy, 0.9);
  EXPECT_TRUE(std::isnan(old.epoch) && std::isnan(old.lr));
  EXPECT_THROW(nlohmann::json::parse(R"({"loss": 0.3})").get<TrainMetricsRow>(), nlohmann::json::exception);
}

// Runs `grm train-rm` and returns its exit status.
int run_grm(const std::string& prefix, const fs::path& config, const fs::path& out) {
  std::string command = prefix + " " + GRM_BINARY + " train-rm --config " + config.string() + " --out " +
                        out.string() + " > " + out.string() + ".log 2>&1";
  return std::system(command.c_str());
}

// Trains `rm` (a YAML flow mapping) for 3 steps on one rank with batch 8 and on two with batch 4 each,
// and expects the same weights; and that they moved (the comparison is not between untouched models).
void expect_two_ranks_equal_one(const std::string& name, const std::string& rm, int grad_accum = 1) {
  auto dir = temp_dir("ddp_" + name);
  write_file_atomic((dir / "pairs.jsonl").string(), story_pairs(64, 3));
  auto write_config = [&](const std::string& file, int batch) {
    std::string yaml = fmt::format(
        "model: tinystories-656k\nmax_length: 40\nthreads: 1\neval_fraction: 0\nlog_every: "
        "1\ncheckpoint_every: 0\ndevice: cpu\n"  // MPI buckets, also on a machine with one GPU
        "data: {{path: {}}}\nrm: {}\noptim: {{lr: 0.0002, batch_size: {}, grad_accum: {}, max_steps: 3, "
        "warmup_ratio: 0}}\n",
        (dir / "pairs.jsonl").string(), rm, batch, grad_accum);
    write_file_atomic((dir / file).string(), yaml);
  };
  write_config("one.yaml", 8);
  write_config("two.yaml", 4);
  ASSERT_EQ(run_grm("", dir / "one.yaml", dir / "one"), 0) << read_file((dir / "one.log").string());
  ASSERT_EQ(run_grm("mpirun --allow-run-as-root --oversubscribe -np 2", dir / "two.yaml", dir / "two"), 0)
      << read_file((dir / "two.log").string());
  auto one = weights_of(dir / "one/model"), two = weights_of(dir / "two/model");
  EXPECT_LE(max_difference(one, two), 1e-5) << name;
  auto base = load_causal_lm(resolve_model_path("tinystories-656k"))->hf_state_dict();
  EXPECT_GT((one.at("model.norm.weight") - base.at("model.norm.weight")).abs().max().item<double>(), 1e-4)
      << name;
  fs::remove_all(dir);
}

// No head dropout in these: its masks depend on how the batch is split, and the tests compare splits.
TEST(TrainRm, TwoRanksWithBatchBEqualOneRankWithBatch2B) {
  expect_two_ranks_equal_one("grm", "{method: grm, reg: sft, alpha: 0.1, head: linear, head_dropout: 0}");
}

// BSR's mean reward and ODIN's correlations are statistics of the global batch; InfoRM's noise is drawn
// for the global batch. Each gives on two ranks what it gives on one.
TEST(TrainRm, TwoRanksEqualOneRankForThePublishedMethods) {
  // BSR at a lambda large enough that its term moves the weights visibly.
  expect_two_ranks_equal_one("bsr", "{method: bsr, bsr_lambda: 0.5, head: linear, head_dropout: 0}");
  expect_two_ranks_equal_one("odin", "{method: odin, head: linear, head_dropout: 0}");
  // A linear decoder: an MLP's last bias has no gradient under Bradley-Terry (it cancels in r_c - r_r),
  // so AdamW turns the rounding left in its gradient, different for each split, into steps.
  expect_two_ranks_equal_one("inform",
                             "{method: inform, inform: {latent: 8}, head: linear, head_dropout: 0}");
  // A per-pair penalty, for a regression guard: the global-batch mechanism is not used.
  expect_two_ranks_equal_one("center", "{method: center, center_coef: 0.5, head: linear, head_dropout: 0}");
  // With accumulation, micro-batch m of every rank together is one rank's micro-batch m of twice the size.
  expect_two_ranks_equal_one("bsr_accum", "{method: bsr, bsr_lambda: 0.5, head: linear, head_dropout: 0}", 2);
  expect_two_ranks_equal_one("inform_accum",
                             "{method: inform, inform: {latent: 8}, head: linear, head_dropout: 0}", 2);
}

// ZeRO: on two ranks, sharding AdamW's state (and the gradients) gives the unsharded run's weights, each
// rank keeps half the optimizer state, and a sharded checkpoint resumes on another number of ranks.
TEST(TrainRm, ShardedOptimizerOnTwoRanksEqualsUnshardedAndResumesOnOne) {
  auto dir = temp_dir("zero");
  write_file_atomic((dir / "pairs.jsonl").string(), story_pairs(64, 3));
  auto write_config = [&](const std::string& file, const std::string& shard, int steps) {
    std::string yaml = fmt::format(
        "model: tinystories-656k\nmax_length: 40\nthreads: 1\neval_fraction: 0\nlog_every: 1\n"
        "checkpoint_every: 1\ndevice: cpu\ndata: {{path: {}}}\n"
        "rm: {{method: grm, reg: sft, alpha: 0.1, head: linear, head_dropout: 0}}\n"
        "optim: {{lr: 0.0002, batch_size: 4, grad_accum: 2, max_steps: {}, warmup_ratio: 0, "
        "max_grad_norm: 0.05, weight_decay: 0.01, shard: {}}}\n",
        (dir / "pairs.jsonl").string(), steps, shard);
    write_file_atomic((dir / file).string(), yaml);
  };
  const std::string two = "mpirun --allow-run-as-root --oversubscribe -np 2";
  for (const std::string shard : {"none", "optimizer", "gradients"}) {
    write_config(shard + "3.yaml", shard, 3);
    ASSERT_EQ(run_grm(two, dir / (shard + "3.yaml"), dir / shard), 0)
        << read_file((dir / (shard + ".log")).string());
  }
  auto none = weights_of(dir / "none/model");
  auto base = load_causal_lm(resolve_model_path("tinystories-656k"))->hf_state_dict();
  EXPECT_GT((none.at("model.norm.weight") - base.at("model.norm.weight")).abs().max().item<double>(), 1e-4);
  EXPECT_LE(max_difference(none, weights_of(dir / "optimizer/model")), 1e-6);
  EXPECT_LE(max_difference(none, weights_of(dir / "gradients/model")), 1e-6);
  // Each rank's state: two moments of half the parameters, as its log says.
  int64_t n = 0;
  for (const auto& [name, tensor] : load_causal_lm(resolve_model_path("tinystories-656k"))->hf_state_dict())
    n += tensor.numel();
  auto log = read_file((dir / "optimizer.log").string());
  auto at = log.find("optimizer state sharded over 2 ranks");
  ASSERT_NE(at, std::string::npos) << log;
  double mib = std::stod(log.substr(log.find(": ", at) + 2));
  double unsharded_mib = 2.0 * double(n + 64 + 1) * 4 / (1 << 20);  // backbone, linear head (D = 64) and bias
  EXPECT_NEAR(mib, unsharded_mib / 2, 0.1) << log.substr(at, 120);
  // Resumed on one rank for two more steps: the sharded checkpoint's two slices give one rank the whole
  // state, and the run goes on as the unsharded one resumed the same way does.
  for (const std::string shard : {"none", "optimizer"}) {
    write_config(shard + "5.yaml", shard, 5);
    ASSERT_EQ(run_grm("", dir / (shard + "5.yaml"), dir / shard), 0)
        << read_file((dir / (shard + ".log")).string());
    EXPECT_NE(read_file((dir / (shard + ".log")).string()).find("resuming at step 3"), std::string::npos);
  }
  EXPECT_LE(max_difference(weights_of(dir / "none/model"), weights_of(dir / "optimizer/model")), 1e-6);
  fs::remove_all(dir);
}

}  // namespace
