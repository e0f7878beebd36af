// The sampler chain (top-p, top-k, temperature, draw) on hand-worked distributions, seeded generation and
// its stop ids.
#include <gtest/gtest.h>

#include "policy/generate.hpp"
#include "policy/model_path.hpp"
#include "policy/sampler.hpp"

using namespace grm;

namespace {

TEST(Sampler, ChainOnHandWorkedDistributions) {
  auto logits = torch::log(torch::tensor({{0.5f, 0.3f, 0.15f, 0.05f}}));
  auto top_p = torch::softmax(apply_top_p(logits, 0.7), -1);  // 0.5 + 0.3 reach 0.7: keep two
  EXPECT_TRUE(torch::allclose(top_p, torch::tensor({{0.625f, 0.375f, 0.f, 0.f}}), 1e-6, 1e-6));
  auto top_k = torch::softmax(apply_top_k(logits, 3), -1);
  EXPECT_TRUE(torch::allclose(top_k, torch::tensor({{0.5f, 0.3f, 0.15f, 0.f}}) / 0.95, 1e-6, 1e-6));
  auto hot = torch::softmax(apply_temperature(logits, 0.5), -1);  // p^2 renormalised
  auto squared = torch::tensor({{0.25f, 0.09f, 0.0225f, 0.0025f}});
  EXPECT_TRUE(torch::allclose(hot, squared / squared.sum(), 1e-6, 1e-6));
  auto generator = make_generator(0);
  EXPECT_EQ(sample_tokens(logits, {0.0, 0, 1.0}, generator).item<int64_t>(), 0);  // greedy
  // Drawn frequencies follow the processed distribution.
  auto many = sample_tokens(logits.repeat({20000, 1}), {1.0, 0, 0.7}, generator);
  double share0 = (many == 0).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(share0, 0.625, 0.02);
  EXPECT_EQ((many >= 2).sum().item<int64_t>(), 0);
}

TEST(Sampler, GenerationIsReproducibleBySeedAndDiffersAcrossSeeds) {
  auto dir = resolve_model_path("tinystories-656k");
  auto model = load_causal_lm(dir);
  std::vector<std::vector<int64_t>> prompts(4, std::vector<int64_t>{1, 403, 407});
  GenerateOptions options;
  options.max_new_tokens = 12;
  options.seed = 5;
  auto a = generate(model, prompts, options), b = generate(model, prompts, options);
  options.seed = 6;
  auto c = generate(model, prompts, options);
  EXPECT_EQ(a.tokens, b.tokens);
  EXPECT_NE(a.tokens, c.tokens);
  EXPECT_NE(a.tokens[0], a.tokens[1]);  // rows of one batch are different draws
}

TEST(Generate, StopsAtTheModelsEosIdsElseTheTokenizers) {
  auto tokenizer = load_tokenizer(resolve_model_path("tinystories-656k"));
  ASSERT_TRUE(tokenizer->eos_id.has_value());
  ModelConfig config;
  config.eos_ids = {5, 7};
  auto options = generate_options_for(config, *tokenizer);
  EXPECT_EQ(options.eos_ids, (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(options.pad_id, tokenizer->pad_id.value_or(0));
  config.eos_ids.clear();
  EXPECT_EQ(generate_options_for(config, *tokenizer).eos_ids, std::vector<int64_t>{*tokenizer->eos_id});
}

}  // namespace
