// PPO: the arithmetic against hand-worked values, the rollout layout against the model's own log-prob
// and reward functions, seeded sampling, the word oracle, PPO raising a proxy reward end to end, and
// exact resume.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "cluster/atomic_file.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/safetensors.hpp"
#include "policy/tokenizer.hpp"
#include "ppo/ppo.hpp"
#include "ppo/ppo_math.hpp"
#include "ppo/rollout.hpp"
#include "rm/reward_model.hpp"
#include "rm/scorer.hpp"

namespace fs = std::filesystem;
using namespace grm;

namespace {

torch::Tensor rows(std::vector<std::vector<float>> values) {
  std::vector<torch::Tensor> out;
  for (auto& row : values) out.push_back(torch::tensor(row));
  return torch::stack(out);
}

void expect_near(const torch::Tensor& actual, const torch::Tensor& expected, double tolerance = 1e-6) {
  ASSERT_EQ(actual.sizes(), expected.sizes());
  EXPECT_TRUE(torch::allclose(actual.to(torch::kFloat64), expected.to(torch::kFloat64), 0, tolerance))
      << "actual\n" << actual << "\nexpected\n" << expected;
}

fs::path temp_dir(const std::string& name) {
  auto dir = fs::temp_directory_path() / ("grm_ppo_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(PpoMath, KlEstimatorsMatchHandWorkedValuesAndAreUnbiased) {
  auto logp = torch::log(torch::tensor({{0.5f, 0.25f}})), ref = torch::log(torch::tensor({{0.25f, 0.5f}}));
  // k1 = log(p / q); k3 = q/p - 1 - log(q/p).
  expect_near(kl_k1(logp, ref), torch::tensor({{std::log(2.0), -std::log(2.0)}}));
  expect_near(kl_k3(logp, ref), torch::tensor({{0.5 - 1 + std::log(2.0), 2 - 1 - std::log(2.0)}}));
  // Under p = (0.5, 0.5), q = (0.25, 0.75) both have expectation KL(p || q) = 0.5 ln 2 + 0.5 ln(2/3).
  auto p = torch::tensor({{0.5f, 0.5f}}), q = torch::tensor({{0.25f, 0.75f}});
  double kl = 0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0);
  EXPECT_NEAR((p * kl_k1(p.log(), q.log())).sum().item<double>(), kl, 1e-6);
  EXPECT_NEAR((p * kl_k3(p.log(), q.log())).sum().item<double>(), kl, 1e-6);
}

TEST(PpoMath, ShapedRewardsPutTheScoreOnTheLastResponseToken) {
  auto kl = rows({{0.1f, 0.2f, 0.3f, 0.4f}, {1.0f, 9.0f, 9.0f, 9.0f}});
  auto mask = rows({{1, 1, 1, 0}, {1, 0, 0, 0}});
  auto rewards = shaped_rewards(kl, torch::tensor({2.0f, -1.0f}), mask, 0.5);
  // -0.5 * kl on response tokens, the score added on each row's last one, nothing past it.
  expect_near(rewards, rows({{-0.05f, -0.1f, -0.15f + 2.0f, 0}, {-0.5f - 1.0f, 0, 0, 0}}));
}

TEST(PpoMath, GaeMatchesHandWorkedValuesAndIgnoresMaskedSteps) {
  // gamma 0.9, lambda 0.8; the third step is past the response, its reward 2 and value 3 must not count.
  auto rewards = rows({{1.0f, 0.0f, 2.0f}}), values = rows({{0.5f, 1.0f, 3.0f}}), mask = rows({{1, 1, 0}});
  auto out = gae(rewards, values, mask, 0.9, 0.8);
  // delta_1 = 0 + 0.9 * 0 - 1.0 = -1.0 (the response ends: no next value); A_1 = -1.0
  // delta_0 = 1 + 0.9 * 1.0 - 0.5 = 1.4;  A_0 = 1.4 + 0.9 * 0.8 * -1.0 = 0.68
  expect_near(out.advantages, rows({{0.68f, -1.0f, 0.0f}}));
  expect_near(out.returns, rows({{1.18f, 0.0f, 0.0f}}));
  // gamma = lambda = 1: the advantage is the undiscounted return to go minus the value.
  auto mc = gae(rewards, values, mask, 1.0, 1.0);
  expect_near(mc.advantages, rows({{1.0f - 0.5f, 0.0f - 1.0f, 0.0f}}));
}

TEST(PpoMath, ClippedPolicyLossClipsOnlyWhereTheRatioLeavesTheTrustRegionInTheAdvantagesDirection) {
  // ratio 1.5 / 0.5 / 1.5 / 0.5 with advantages +1 / +1 / -1 / -2; the fifth token is masked.
  auto old_logp = torch::zeros({1, 5});
  auto logp = torch::log(torch::tensor({{1.5f, 0.5f, 1.5f, 0.5f, 3.0f}})).requires_grad_(true);
  auto advantages = torch::tensor({{1.0f, 1.0f, -1.0f, -2.0f, 5.0f}});
  auto mask = torch::tensor({{1.0f, 1.0f, 1.0f, 1.0f, 0.0f}});
  auto loss = clipped_policy_loss(logp, old_logp, advantages, mask, 0.2);
  // -min(r A, clip(r) A): -min(1.5, 1.2) = -1.2 (clipped), -min(0.5, 0.8) = -0.5,
  // -min(-1.5, -1.2) = 1.5, -min(-1.0, -1.6) = 1.6 (clipped); mean over 4.
  EXPECT_NEAR(loss.item<double>(), (-1.2 - 0.5 + 1.5 + 1.6) / 4, 1e-6);
  loss.backward();
  // Clipped tokens get no gradient; the others -r A / 4.
  expect_near(logp.grad(), torch::tensor({{0.0f, -0.5f / 4, 1.5f / 4, 0.0f, 0.0f}}));
}

TEST(PpoMath, ClippedValueLossTakesThePessimisticOfClippedAndUnclipped) {
  auto values = torch::tensor({{1.0f, 1.0f, 0.5f, 7.0f}}).requires_grad_(true);
  auto old_values = torch::tensor({{0.5f, 0.5f, 0.5f, 0.0f}});
  auto returns = torch::tensor({{1.2f, 0.6f, 1.0f, 0.0f}});
  auto mask = torch::tensor({{1.0f, 1.0f, 1.0f, 0.0f}});
  auto loss = clipped_value_loss(values, old_values, returns, mask, 0.2);
  // 1: unclipped 0.04, clipped (0.7 - 1.2)^2 = 0.25 -> 0.25;  2: 0.16 vs 0.01 -> 0.16;  3: 0.25 both.
  EXPECT_NEAR(loss.item<double>(), 0.5 * (0.25 + 0.16 + 0.25) / 3, 1e-6);
  loss.backward();
  // The first is held by the clip (no gradient); the second: 0.5 * 2 * (1.0 - 0.6) / 3.
  expect_near(values.grad(), torch::tensor({{0.0f, 0.4f / 3, -0.5f / 3, 0.0f}}));
}

TEST(PpoMath, WhiteningAndRunningMomentsAddUpAcrossParts) {
  auto x = rows({{1, 2, 3, 100}}), mask = rows({{1, 1, 1, 0}});
  double s = std::sqrt(1.5);  // 1 / std, variance 2/3
  expect_near(whiten(x, mask), rows({{-1.0f * float(s), 0, float(s), 0}}), 1e-4);
  EXPECT_NEAR(masked_mean(x, mask).item<double>(), 2.0, 1e-6);
  // Two ranks' moments summed whiten like the whole batch.
  auto a = masked_moments(rows({{1, 2}}), rows({{1, 1}})), b = masked_moments(rows({{3, 100}}), rows({{1, 0}}));
  expect_near(whiten(x, mask, a + b), whiten(x, mask));
  RunningMoments moments;
  moments.add(3, 1 + 2 + 3, 1 + 4 + 9);
  moments.add(2, 4 + 5, 16 + 25);
  EXPECT_DOUBLE_EQ(moments.count, 5);
  EXPECT_NEAR(moments.mean, 3.0, 1e-12);
  EXPECT_NEAR(moments.std(), std::sqrt(2.0), 1e-12);  // population variance of 1..5
}

TEST(PpoMath, AdaptiveKlControllerMovesTowardTheTargetAtMostTwentyPercentPerHorizon) {
  KlController adaptive(0.1, 6.0, 10000);
  adaptive.update(9.0, 256);  // 9 / 6 - 1 = 0.5, clipped to 0.2
  EXPECT_NEAR(adaptive.coef(), 0.1 * (1 + 0.2 * 256 / 10000.0), 1e-12);
  adaptive.update(6.6, 1000);  // error 0.1, inside the clip
  EXPECT_NEAR(adaptive.coef(), 0.1 * (1 + 0.2 * 0.0256) * (1 + 0.1 * 0.1), 1e-12);
  adaptive.update(0.0, 10000);  // error -1 clipped to -0.2
  EXPECT_NEAR(adaptive.coef(), 0.1 * (1 + 0.2 * 0.0256) * (1 + 0.1 * 0.1) * 0.8, 1e-12);
  KlController fixed(0.1, 0, 10000);
  fixed.update(100.0, 256);
  EXPECT_DOUBLE_EQ(fixed.coef(), 0.1);
}

TEST(PpoScorer, WordOracleCountsWholeWordsCaseInsensitivelyUpToItsCap) {
  ScorerConfig config;
  config.oracle = "word:happy";
  auto scorer = make_scorer(config);
  auto scores = scorer->score({{"Once", " Happy, happy! She was unhappy, happyish, HAPPY."}, {"Once", " sad"},
                               {"", "happy happy happy happy happy happy happy"}});
  EXPECT_EQ(scores, (std::vector<double>{3, 0, 5}));
  config.oracle = "word:happy:2";
  EXPECT_EQ(make_scorer(config)->score({{"", "happy happy happy"}}), (std::vector<double>{2}));
  for (std::string bad : {"word:", "word:happy:0", "word:happy:x", "words:happy"}) {
    config.oracle = bad;
    EXPECT_THROW(make_scorer(config), Error) << bad;
  }
  config.oracle = "story";  // still there
  EXPECT_EQ(make_scorer(config)->score({{"Once", " Tom was happy."}}).size(), 1u);
}

TEST(PpoRollout, SamplingIsReproducibleBySeedAndDifferentAcrossSeeds) {
  std::string dir = resolve_model_path("tinystories-656k");
  auto model = load_causal_lm(dir);
  auto tokenizer = load_tokenizer(dir);
  std::vector<std::vector<int64_t>> prompts(4, tokenizer->encode("Once upon a time"));
  GenerateOptions options;
  options.max_new_tokens = 16;
  options.pad_id = 0;
  options.seed = 7;
  auto first = generate(model, prompts, options), again = generate(model, prompts, options);
  options.seed = 8;
  auto other = generate(model, prompts, options);
  EXPECT_EQ(first.tokens, again.tokens);
  EXPECT_NE(first.tokens, other.tokens);
  EXPECT_NE(first.tokens[0], first.tokens[1]);  // rows of one batch are different draws
}

TEST(PpoRollout, LogprobsAndValuesLineUpWithTheirTokens) {
  std::string dir = resolve_model_path("tinystories-656k");
  auto model = load_causal_lm(dir);
  auto tokenizer = load_tokenizer(dir);
  std::vector<std::string> texts = {"Once upon a time, there was a dog", "Tom", "Lily went to the park"};
  std::vector<std::vector<int64_t>> ids;
  for (const auto& t : texts) ids.push_back(tokenizer->encode(t));
  GenerateOptions options;
  options.max_new_tokens = 12;
  options.eos_ids = {*tokenizer->eos_id};
  options.seed = 3;
  auto rollout = sample_rollout(model, *tokenizer, texts, ids, options);
  ASSERT_EQ(rollout.ids.size(0), 3);
  EXPECT_EQ(rollout.response_mask.sum().item<int64_t>(), rollout.n_response_tokens);
  torch::NoGradGuard no_grad;
  // Per-token log-probs summed equal response_logprobs on the same sequences laid out unpadded.
  auto scores = response_token_scores(model, rollout, 1.0, true);
  auto mask = rollout.response_mask.to(torch::kFloat32);
  auto generation = generate(model, ids, options);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::vector<int64_t> sequence = ids[i];
    sequence.insert(sequence.end(), generation.tokens[i].begin(), generation.tokens[i].end());
    auto tensor = torch::tensor(sequence).unsqueeze(0);
    auto response = torch::zeros_like(tensor);
    response.narrow(1, int64_t(ids[i].size()), int64_t(generation.tokens[i].size())).fill_(1);
    auto expected = response_logprobs(model->forward(tensor, torch::ones_like(tensor)).logits, tensor, response);
    EXPECT_NEAR((scores.logprobs[int64_t(i)] * mask[int64_t(i)]).sum().item<double>(), expected.item<double>(), 1e-4);
    // Scorers get the continuation of the prompt's text, the space at the seam included (decoding the
    // response's tokens alone drops a leading space with this SentencePiece-style tokenizer).
    EXPECT_EQ(rollout.texts[i].prompt + rollout.texts[i].response, tokenizer->decode(sequence));
  }
  EXPECT_TRUE((scores.entropy >= 0).all().item<bool>());
  // A temperature divides the logits: T = 0.5 sharpens every distribution.
  auto sharp = response_token_scores(model, rollout, 0.5, true);
  EXPECT_LT(masked_mean(sharp.entropy, mask).item<double>(), masked_mean(scores.entropy, mask).item<double>());
  // values[:, j] is the critic's reward for the prefix ending just before response token j.
  auto critic = make_reward_model(dir, {"mlp", 16}, 5);
  auto values = response_values(critic, rollout);
  for (int64_t j : {int64_t(0), int64_t(3)}) {
    for (size_t i = 0; i < texts.size(); ++i) {
      if (j >= int64_t(generation.tokens[i].size())) continue;
      std::vector<int64_t> prefix = ids[i];
      prefix.insert(prefix.end(), generation.tokens[i].begin(), generation.tokens[i].begin() + j);
      auto tensor = torch::tensor(prefix).unsqueeze(0);
      EXPECT_NEAR(values[int64_t(i)][j].item<double>(),
                  critic->forward(tensor, torch::ones_like(tensor)).rewards.item<double>(), 1e-4);
    }
  }
}

}  // namespace
