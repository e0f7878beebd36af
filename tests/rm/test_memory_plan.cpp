// The memory plan against a case worked out by hand, ZeRO's division of the optimizer, and advice for a
// configuration that does not fit (the paper's Mistral-7B one, as written, on one H100).
#include <gtest/gtest.h>

#include "core/error.hpp"
#include "pipeline/stage_args.hpp"
#include "rm/memory_plan.hpp"
#include "tests/test_util.hpp"

namespace grm {
namespace {

double term(const MemoryPlan& plan, const std::string& name) {
  for (const auto& t : plan.terms)
    if (t.name == name) return t.bytes;
  ADD_FAILURE() << "no term " << name;
  return 0;
}

// D 4, one layer, 2 heads of 2 (one key head), F 8, V 10, untied: 236 backbone parameters and a
// linear head's 5 (see the comments for the arithmetic).
ModelConfig tiny_model() {
  return ModelConfig::from_json({{"model_type", "llama"},
                                 {"vocab_size", 10},
                                 {"hidden_size", 4},
                                 {"num_hidden_layers", 1},
                                 {"num_attention_heads", 2},
                                 {"num_key_value_heads", 1},
                                 {"intermediate_size", 8},
                                 {"max_position_embeddings", 16},
                                 {"tie_word_embeddings", false}},
                                "tiny");
}

TEST(MemoryPlan, MatchesAHandWorkedCase) {
  TrainRmConfig c;
  c.rm.method = "bt";
  c.rm.head = "linear";
  c.optim.batch_size = 1;
  c.max_length = 4;
  auto plan = plan_train_rm(c, tiny_model(), 1, "cpu-24gb");
  // Parameters: q 16 + k, v 16 + o 16 + MLP 96 + norms 8 = 152 per layer, final norm 4, embeddings and
  // output 80: 236, and the head's 5.
  EXPECT_DOUBLE_EQ(term(plan, "weights"), 4.0 * 241);
  EXPECT_DOUBLE_EQ(term(plan, "gradients"), 8.0 * 241);
  EXPECT_DOUBLE_EQ(term(plan, "optimizer"), 8.0 * 241);
  // 8 tokens (one pair of 4); per layer and token 4 (40 + 6 + 32) + 2 * 4 * 4 = 344, for L + 1 = 2 layers,
  // and 3 D fp32 values per token outside the layers.
  EXPECT_DOUBLE_EQ(term(plan, "activations"), 8.0 * 2 * 344 + 8.0 * 4 * 3 * 4);
  EXPECT_DOUBLE_EQ(plan.total, 4.0 * 241 + 16.0 * 241 + 5504 + 384);
  EXPECT_TRUE(plan.fits);
  // GRM's log-probs: the logits, their log-softmax and a gradient of each, 2 (4 + 4) 10 per token.
  c.rm.method = "grm";
  EXPECT_DOUBLE_EQ(term(plan_train_rm(c, tiny_model(), 1, "cpu-24gb"), "activations"),
                   5888 + 8.0 * 2 * 8 * 10);
  // Checkpointed: every layer's input (4 D) and twice the recomputed layer's 344, per token.
  c.rm.method = "bt";
  c.gradient_checkpointing = true;
  EXPECT_DOUBLE_EQ(term(plan_train_rm(c, tiny_model(), 1, "cpu-24gb"), "activations"),
                   8.0 * (16 + 2 * 344) + 384);
  // ZeRO divides the moments by the ranks, and only them.
  c.optim.shard = "optimizer";
  auto sharded = plan_train_rm(c, tiny_model(), 4, "cpu-24gb");
  EXPECT_DOUBLE_EQ(term(sharded, "optimizer"), 8.0 * 241 / 4);
  EXPECT_DOUBLE_EQ(term(sharded, "gradients"), 8.0 * 241);
  EXPECT_THROW(plan_train_rm(c, tiny_model(), 1, "tpu-v5"), Error);
}

TEST(MemoryPlan, AdvisesTheSettingsThatMakeAPlanFit) {
  StageArgs args;
  args.config = std::string(GRM_SOURCE_DIR) + "/experiments/paper/mistral7b_unified_feedback.yaml";
  args.sets = {"gradient_checkpointing=false"};
  auto config = load_stage_config<TrainRmConfig>(args);
  auto model = ModelConfig::from_file(std::string(GRM_SOURCE_DIR) +
                                      "/experiments/paper/shapes/Mistral-7B-Instruct-v0.2.json");
  auto plan = plan_train_rm(config, model, 8, "h100-80gb");
  EXPECT_FALSE(plan.fits);
  ASSERT_FALSE(plan.advice.empty());
  EXPECT_EQ(plan.advice[0].rfind("gradient_checkpointing: true", 0), 0u) << plan.advice[0];
  // As the file has it (checkpointed), it fits.
  config.gradient_checkpointing = true;
  EXPECT_TRUE(plan_train_rm(config, model, 8, "h100-80gb").fits);
  EXPECT_NE(format_memory_plan(plan, "t").find("does not fit"), std::string::npos);
}

}  // namespace
}  // namespace grm
