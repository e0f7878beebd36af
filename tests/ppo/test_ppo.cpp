// PPO: the arithmetic against hand-worked values, the rollout layout against the model's own log-prob
// and reward functions, seeded sampling, the word oracle, PPO raising a proxy reward end to end, and
// exact resume.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "core/atomic_file.hpp"
#include "core/config.hpp"
#include "policy/chat_format.hpp"
#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/safetensors.hpp"
#include "policy/tokenizer/tokenizer.hpp"
#include "ppo/ppo.hpp"
#include "ppo/ppo_math.hpp"
#include "ppo/rollout.hpp"
#include "rm/reward_model.hpp"
#include "rm/scorer.hpp"
#include "rm/train_rm.hpp"
#include "tests/test_util.hpp"

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
      << "actual\n"
      << actual << "\nexpected\n"
      << expected;
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
  auto a = masked_moments(rows({{1, 2}}), rows({{1, 1}})),
       b = masked_moments(rows({{3, 100}}), rows({{1, 0}}));
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
  auto scores = scorer->score({{"Once", " Happy, happy! She was unhappy, happyish, HAPPY."},
                               {"Once", " sad"},
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
    auto expected =
        response_logprobs(model->forward(tensor, torch::ones_like(tensor)).logits, tensor, response);
    EXPECT_NEAR((scores.logprobs[int64_t(i)] * mask[int64_t(i)]).sum().item<double>(),
                expected.item<double>(), 1e-4);
    // Scorers see the continuation of the prompt's text, without the EOS: decoding the response alone
    // would drop the leading space this SentencePiece-style tokenizer keeps in the joint text.
    auto joint = ids[i];
    auto kept = without_eos(generation.tokens[i], options.eos_ids);
    joint.insert(joint.end(), kept.begin(), kept.end());
    EXPECT_EQ(tokenizer->decode(ids[i]) + rollout.texts[i].response, tokenizer->decode(joint));
  }
  EXPECT_TRUE((scores.entropy >= 0).all().item<bool>());
  // A temperature divides the logits: T = 0.5 sharpens every distribution.
  auto sharp = response_token_scores(model, rollout, 0.5, true);
  EXPECT_LT(masked_mean(sharp.entropy, mask).item<double>(),
            masked_mean(scores.entropy, mask).item<double>());
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

// Story openings of the TinyStories kind, split into disjoint training and held-out sets.
void story_prompts(std::vector<std::string>& train, std::vector<std::string>& held_out) {
  const char* names[] = {"Lily", "Tom", "Sue", "Ben", "Max", "Mia", "Sam", "Anna"};
  const char* kinds[] = {"girl", "boy", "dog", "cat", "bird", "bunny"};
  const char* places[] = {"park", "beach", "forest", "store", "garden", "lake"};
  for (int i = 0; i < 8; ++i)
    for (int j = 0; j < 6; ++j) {
      auto& set = (i + j) % 4 == 0 ? held_out : train;
      set.push_back(fmt::format("Once upon a time, there was a little {} named {}.", kinds[j], names[i]));
      set.push_back(fmt::format("One day, {} went to the {}.", names[i], places[j]));
    }
}

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> out;
  std::istringstream lines(read_file(path.string()));
  for (std::string line; std::getline(lines, line);) out.push_back(nlohmann::json::parse(line));
  return out;
}

// A templated policy's rollouts: prompts rendered with its generation header, and texts for the scorers
// in the interchange form (the prompt as given, the response after the layout's space) that say which
// responses finished at a stop token and which were cut.
TEST(PpoRollout, TemplatedPoliciesGiveScorersInterchangeTextsAndWhetherEachFinished) {
  std::string dir = resolve_model_path("tinystories-656k");
  auto model = load_causal_lm(dir);
  auto tokenizer = load_tokenizer(dir);
  ChatFormat format = ChatFormat::resolve({"mistral", "auto"}, dir, *tokenizer, "test");
  std::vector<std::string> texts(6, "Once upon a time, there was a dog");
  std::vector<std::vector<int64_t>> ids;
  for (const auto& t : texts) {
    ChatText rendered = format.render_prompt(t);
    ids.push_back(tokenizer->encode(rendered.prompt, rendered.add_special_tokens));
  }
  EXPECT_GT(ids[0].size(), tokenizer->encode(texts[0]).size());  // the [INST] header
  GenerateOptions options;
  options.max_new_tokens = 5;
  options.eos_ids = end_of_turn_ids(format, *tokenizer, {*tokenizer->eos_id});
  options.seed = 5;
  auto rollout = sample_rollout(model, *tokenizer, texts, ids, options, format);
  auto generation = generate(model, ids, options);
  size_t cut = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    const auto& item = rollout.texts[i];
    EXPECT_EQ(item.prompt, texts[i]);
    EXPECT_EQ(item.finished, bool(generation.stopped_at_eos[i]));
    EXPECT_EQ(item.response,
              " " + decode_continuation(*tokenizer, ids[i], generation.tokens[i], options.eos_ids));
    cut += item.finished ? 0 : 1;
  }
  EXPECT_GT(cut, 0u);  // five tokens cut some
}

// Through the YAML binder, as `grm ppo --config` reads it.
PpoConfig story_config(const std::string& extra) {
  std::vector<std::string> train, held_out;
  story_prompts(train, held_out);
  std::string yaml = fmt::format(
      "policy: tinystories-656k\nprompt_list: {}\neval_prompt_list: {}\nthreads: 1\ndevice: cpu\n{}",
      nlohmann::json(train).dump(), nlohmann::json(held_out).dump(), extra);
  return read_config<PpoConfig>(load_yaml_text(yaml, "test"), "test");
}

// reward_norm with a proxy that recorded its training statistics divides by those, the same at every step.
TEST(PpoTraining, RewardNormUsesTheProxysTrainingStatistics) {
  auto dir = temp_dir("reward_norm");
  TrainRmConfig rm;
  rm.data.path = (dir / "pairs.jsonl").string();
  std::string pairs;
  for (int i = 0; i < 16; ++i)
    pairs +=
        nlohmann::json{
            {"prompt", "Once upon a time"}, {"chosen", " Lily was happy."}, {"rejected", " Tom was sad."}}
            .dump() +
        "\n";
  write_file_atomic(rm.data.path, pairs);
  rm.threads = 1, rm.eval_fraction = 0, rm.max_length = 48, rm.rm.head = "linear", rm.checkpoint_every = 0;
  rm.optim.max_steps = 2, rm.optim.batch_size = 4, rm.device = "cpu";
  train_reward_model(rm, (dir / "rm").string());
  auto stats = make_model_scorer((dir / "rm/model").string())->reward_statistics();
  ASSERT_TRUE(stats.has_value());
  auto config = story_config(
      "rollout_batch: 2\nsamples_per_prompt: 2\nminibatch_size: 4\nmax_new_tokens: 8\n"
      "steps: 2\nn_eval_prompts: 2\nreward_norm: true\n");
  config.proxy.model = (dir / "rm/model").string();
  train_ppo(config, (dir / "ppo").string());
  auto metrics = read_jsonl(dir / "ppo/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);
  for (const auto& line : metrics)  // "reward" is the mean normalized score, "score" the raw one
    EXPECT_NEAR(line["reward"].get<double>(), (line["score"].get<double>() - stats->mean) / stats->std, 1e-6);
  fs::remove_all(dir);
}

TEST(PpoConfig, ValidationNamesWhatIsWrong) {
  auto config = story_config("");
  EXPECT_NO_THROW(config.validate());
  auto both = config;
  both.prompt_file = "prompts.jsonl";
  EXPECT_THROW(both.validate(), Error);
  auto greedy = config;
  greedy.sampling.temperature = 0;
  EXPECT_THROW(greedy.validate(), Error);
  auto rm_critic = config;
  rm_critic.critic.init = "rm";
  rm_critic.proxy.oracle = "word:happy";
  EXPECT_THROW(rm_critic.validate(), Error);  // init: rm needs a proxy reward model
  EXPECT_THROW(story_config("ppo_epochs: 0\n"), Error);
  EXPECT_THROW(story_config("kl: {estimator: k2}\n"), Error);
}

TEST(PpoConfig, OldSpellingsNameTheirNewKeys) {
  auto message = [](const std::string& yaml) {
    try {
      read_config<PpoConfig>(load_yaml_text(yaml, "ppo.yaml"), "ppo.yaml");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message("steps: 2\nlr_schedule: cosine\n"),
            "ppo.yaml:2: 'lr_schedule' was renamed to 'optim.schedule'");
  EXPECT_EQ(message("lr: 0.001\n"), "ppo.yaml:1: 'lr' was renamed to 'optim.lr'");
  EXPECT_EQ(message("prompts_train: train.jsonl\n"),
            "ppo.yaml:1: 'prompts_train' was renamed to 'prompt_file'");
  EXPECT_EQ(message("prompts: [Once]\n"), "ppo.yaml:1: 'prompts' was renamed to 'prompt_list'");
  EXPECT_EQ(message("critic: {finetune: head}\n"),
            "ppo.yaml:1: 'critic.finetune: head' was renamed to 'critic.finetune: frozen'");
  EXPECT_EQ(
      read_config<PpoConfig>(load_yaml_text("optim: {schedule: cosine}\n", "ppo.yaml"), "ppo.yaml").optim.lr,
      1e-5);  // PPO's own default, not reward-model training's
}

// PPO against a proxy that rewards one word ("happy", at most 5 per response). The untrained model says
// it in about 2% of 24-token continuations (initial proxy ~0.02, standard error ~0.015 over 96 samples).
// Requiring the final proxy to exceed the initial one by 1.0 (50x the base rate) is at least 4 standard
// errors even if the final scores were spread over the whole 0..5 range (std <= 2.5, se <= 0.26). Across
// seeds 0-6 this configuration ends at 3.5-4.9 after 24 steps. Advantages are not whitened: with a proxy
// that is 0 for almost every sample, whitening blows the KL penalty up to the scale of the score and the
// policy learns to end every response at once (seed 0 did, ending at proxy 0).
TEST(PpoTraining, RaisesTheProxyRewardWhileKlGrowsFromZero) {
  auto dir = temp_dir("learn");
  auto config = story_config(
      "proxy: {oracle: 'word:happy'}\ngold: {oracle: story}\nrollout_batch: 8\nsamples_per_prompt: 4\n"
      "minibatch_size: 16\nppo_epochs: 2\noptim: {lr: 0.001}\nwhiten_advantages: false\nmax_new_tokens: 24\n"
      "steps: 24\neval_every: 8\nn_eval_prompts: 24\neval_samples_per_prompt: 4\nkl: {coef: 0.02}\n"
      "checkpoint_every: 12\n");
  auto result = train_ppo(config, (dir / "out").string());
  ASSERT_TRUE(result.finished);
  auto curve = read_jsonl(dir / "out/ppo_curve.jsonl");
  ASSERT_EQ(curve.size(), 4u);  // steps 0, 8, 16, 24
  const auto &first = curve.front(), &last = curve.back();
  for (const auto& point : curve) std::printf("%s\n", point.dump().c_str());
  EXPECT_EQ(first["step"], 0);
  EXPECT_EQ(last["step"], 24);
  EXPECT_NEAR(first["kl"].get<double>(), 0.0, 1e-5);  // the actor starts as the reference
  EXPECT_LT(first["proxy"].get<double>(), 0.3);
  EXPECT_GE(last["proxy"].get<double>(), first["proxy"].get<double>() + 1.0);
  EXPECT_GT(curve[1]["kl"].get<double>(), 0.1);
  EXPECT_GT(last["kl"].get<double>(), curve[1]["kl"].get<double>());
  EXPECT_TRUE(last["gold"].is_number());
  EXPECT_EQ(last["samples"], 96);
  // The over-optimization signals over the 96 held-out samples: correlations, so within [-1, 1].
  for (const char* key : {"proxy_length_corr", "gold_length_corr", "proxy_gold_spearman"}) {
    ASSERT_TRUE(last[key].is_number()) << key;
    EXPECT_LE(std::abs(last[key].get<double>()), 1.0) << key;
  }
  auto metrics = read_jsonl(dir / "out/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 24u);
  for (const char* key : {"policy_loss", "value_loss", "entropy", "kl", "kl_coef", "score", "return",
                          "clipfrac", "tokens_per_s", "samples_per_s"})
    EXPECT_TRUE(metrics.back()[key].is_number()) << key;
  EXPECT_TRUE(fs::exists(dir / "out/policy/model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "out/policy/tokenizer.json"));
  EXPECT_GT(result.samples_per_second, 0);
  fs::remove_all(dir);
}

void write_prompt_file(const fs::path& path, const std::vector<std::string>& prompts) {
  std::string text;
  for (size_t i = 0; i < prompts.size(); ++i)
    text += nlohmann::json{{"id", fmt::format("p{}", i)}, {"prompt", prompts[i]}}.dump() + "\n";
  write_file_atomic(path.string(), text);
}

TEST(PpoConfig, PromptFileErrorsNameTheLine) {
  auto dir = temp_dir("prompt_errors");
  write_file_atomic((dir / "bad.jsonl").string(),
                    "{\"id\": 1, \"prompt\": \"Once\"}\n{\"id\": 2, \"text\": \"x\"}\n");
  auto config = story_config("proxy: {oracle: 'word:happy'}\n");
  config.prompt_list.clear();
  config.prompt_file = (dir / "bad.jsonl").string();
  try {
    train_ppo(config, (dir / "out").string());
    ADD_FAILURE() << "a prompt record without 'prompt' was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2: needs a string field 'prompt'"), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

// `grm ppo` under mpirun: two ranks, each sampling its own prompts, prompt files found beside the config.
TEST(PpoTraining, RunsDataParallelThroughTheCommandLine) {
  auto dir = temp_dir("cli");
  std::vector<std::string> train, held_out;
  story_prompts(train, held_out);
  write_prompt_file(dir / "train.jsonl", train);
  write_prompt_file(dir / "eval.jsonl", held_out);
  write_file_atomic((dir / "ppo.yaml").string(),
                    "policy: tinystories-656k\nprompt_file: train.jsonl\neval_prompt_file: eval.jsonl\n"
                    "proxy: {oracle: story}\nrollout_batch: 2\nsamples_per_prompt: 2\nminibatch_size: 2\n"
                    "max_new_tokens: 8\nsteps: 2\nn_eval_prompts: 6\nthreads: 1\ndevice: cpu\n");
  std::string command = fmt::format(
      "mpirun --allow-run-as-root --oversubscribe -np 2 {} ppo --config {} --out {} "
      "--set optim.lr=0.001 > {} 2>&1",
      GRM_BINARY, (dir / "ppo.yaml").string(), (dir / "out").string(), (dir / "log.txt").string());
  ASSERT_EQ(std::system(command.c_str()), 0) << read_file((dir / "log.txt").string());
  auto metrics = read_jsonl(dir / "out/metrics.jsonl");
  ASSERT_EQ(metrics.size(), 2u);                    // written once, by rank 0
  EXPECT_EQ(metrics.back()["samples"], 2 * 2 * 2);  // ranks x prompts x samples
  auto curve = read_jsonl(dir / "out/ppo_curve.jsonl");
  ASSERT_EQ(curve.size(), 2u);            // steps 0 and 2
  EXPECT_EQ(curve.back()["samples"], 6);  // the held-out prompts split over the ranks
  EXPECT_TRUE(curve.back()["gold"].is_null());
  // Every held-out prompt's mean, whichever rank sampled it, once: their mean is the point's.
  auto per_prompt = curve.back()["proxy_per_prompt"].get<std::vector<double>>();
  ASSERT_EQ(per_prompt.size(), 6u);
  double sum = 0;
  for (double value : per_prompt) sum += value;
  EXPECT_NEAR(sum / 6, curve.back()["proxy"].get<double>(), 1e-9);
  EXPECT_TRUE(curve.back()["gold_per_prompt"].empty());
  // No gold scorer: no gold signals (8-token responses may all be 8 long, leaving no length correlation).
  EXPECT_TRUE(curve.back()["gold_length_corr"].is_null() && curve.back()["proxy_gold_spearman"].is_null());
  EXPECT_TRUE(fs::exists(dir / "out/policy/model.safetensors"));
  EXPECT_NE(read_file((dir / "out/config.resolved.yaml").string()).find("lr: 0.001"), std::string::npos);
  fs::remove_all(dir);
}

// Timing fields differ between runs; everything else in a metrics line must not.
nlohmann::json without_timing(nlohmann::json line) {
  for (const char* key : {"tokens_per_s", "samples_per_s", "rollout_s", "update_s"}) line.erase(key);
  return line;
}

TEST(PpoTraining, ResumeAfterAKillGivesTheSameFinalActorAndCurve) {
  auto dir = temp_dir("resume");
  // LoRA with dropout (the CPU generator's state), an MLP critic head, normalised rewards and an adaptive
  // KL coefficient: every piece of state a checkpoint must carry.
  auto config = story_config(
      "proxy: {oracle: story}\nrollout_batch: 2\nsamples_per_prompt: 2\nminibatch_size: 2\n"
      "ppo_epochs: 2\noptim: {lr: 0.003}\nmax_new_tokens: 8\nsteps: 5\neval_every: 2\nn_eval_prompts: 4\n"
      "checkpoint_every: 2\nfinetune: lora\nlora: {rank: 4, dropout: 0.1}\ncritic: {head: mlp, head_hidden: "
      "16}\n"
      "reward_norm: true\nkl: {coef: 0.1, target: 1.0, horizon: 100}\n");
  train_ppo(config, (dir / "straight").string());
  // Killed after step 3 (the last checkpoint is step 2, the evaluation at step 2 already written), then
  // restarted with the same arguments.
  auto partial = train_ppo(config, (dir / "resumed").string(), "", 3);
  EXPECT_FALSE(partial.finished);
  EXPECT_FALSE(fs::exists(dir / "resumed/policy"));
  train_ppo(config, (dir / "resumed").string());
  auto a = load_safetensors((dir / "straight/policy/model.safetensors").string());
  auto b = load_safetensors((dir / "resumed/policy/model.safetensors").string());
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) EXPECT_TRUE(torch::equal(tensor, b.at(name))) << name;
  EXPECT_EQ(read_jsonl(dir / "straight/ppo_curve.jsonl"), read_jsonl(dir / "resumed/ppo_curve.jsonl"));
  auto straight = read_jsonl(dir / "straight/metrics.jsonl"),
       resumed = read_jsonl(dir / "resumed/metrics.jsonl");
  ASSERT_EQ(straight.size(), 5u);
  ASSERT_EQ(resumed.size(), 5u);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_EQ(without_timing(straight[i]), without_timing(resumed[i]));
  // The run did train: the KL coefficient moved and the actor left the base model.
  EXPECT_NE(straight.back()["kl_coef"].get<double>(), 0.1);
  auto base = load_safetensors(resolve_model_path("tinystories-656k"));
  EXPECT_FALSE(torch::equal(a.at("model.layers.0.self_attn.q_proj.weight"),
                            base.at("model.layers.0.self_attn.q_proj.weight")));
  fs::remove_all(dir);
}

TEST(PpoCurve, EvalPointsRoundTripThroughTheirJsonWithTodaysKeys) {
  EvalPoint point{8, 0.5, 1.25, 12.5, 0.75, 16, {1.0, 1.5}, {0.5, 1.0}, 0.25, -0.5, 0.75};
  auto text = R"({"step": 8, "kl": 0.5, "proxy": 1.25, "gold": 0.75, "length": 12.5, "samples": 16,
                  "proxy_per_prompt": [1.0, 1.5], "gold_per_prompt": [0.5, 1.0], "proxy_length_corr": 0.25,
                  "gold_length_corr": -0.5, "proxy_gold_spearman": 0.75})";
  EXPECT_EQ(nlohmann::json(point), nlohmann::json::parse(text));
  auto back = nlohmann::json::parse(text).get<EvalPoint>();
  EXPECT_EQ(back.step, 8);
  ASSERT_TRUE(back.gold.has_value());
  EXPECT_EQ(*back.gold, 0.75);
  EXPECT_EQ(nlohmann::json(back), nlohmann::json(point));

  point.gold.reset();  // no gold scorer: null in the file, none when read
  EXPECT_TRUE(nlohmann::json(point)["gold"].is_null());
  EXPECT_FALSE(nlohmann::json(point).get<EvalPoint>().gold.has_value());
  // An older line: samples written as a float, no length.
  auto old = nlohmann::json::parse(R"({"step": 0, "kl": 0.0, "proxy": 0.5, "gold": null, "samples": 6.0})")
                 .get<EvalPoint>();
  EXPECT_EQ(old.samples, 6);
  EXPECT_TRUE(old.proxy_per_prompt.empty());
  EXPECT_TRUE(std::isnan(old.length));
  EXPECT_TRUE(std::isnan(old.proxy_length_corr) && std::isnan(old.proxy_gold_spearman));
  EXPECT_THROW(nlohmann::json::parse(R"({"kl": 0.5})").get<EvalPoint>(), nlohmann::json::exception);
}

}  // namespace
