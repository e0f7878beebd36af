// Activation checkpointing: the same loss and gradients as the plain forward pass, for full
// fine-tuning and for LoRA with dropout (the recomputation draws the same masks and leaves the random
// state where the plain run leaves it), and no recomputation outside training.
#include <gtest/gtest.h>
#include <torch/csrc/autograd/autograd.h>

#include "policy/activation_checkpoint.hpp"
#include "policy/model.hpp"
#include "policy/model_path.hpp"
#include "tests/test_util.hpp"

namespace grm {
namespace {

struct Gradients {
  double loss;
  std::vector<torch::Tensor> grads;  // per parameter that requires one (zeros where it got none)
  torch::Tensor next_random;         // a draw after the step: where the random state was left
};

Gradients run_step(bool checkpointing, const LoraConfig* lora) {
  torch::manual_seed(3);
  auto model = load_causal_lm(resolve_model_path("tinystories-656k"));
  if (lora) model->enable_lora(*lora);
  if (lora)  // adapters start at B = 0, where dropout leaves no trace in the gradients of B alone
    for (auto& p : model->parameters())
      if (p.requires_grad()) torch::NoGradGuard(), p.data().normal_(0, 0.05);
  model->set_gradient_checkpointing(checkpointing);
  model->train();
  auto ids = torch::randint(1, 500, {3, 12}, torch::kInt64);
  auto mask = torch::ones({3, 12}, torch::kInt64);
  mask[0][0] = 0;  // padding on the left of one row
  torch::manual_seed(11);
  auto out = model->forward(ids, mask);
  auto loss =
      torch::log_softmax(out.logits, -1).gather(2, ids.unsqueeze(2)).mean() + out.hidden.pow(2).mean();
  loss.backward();
  Gradients g{loss.item<double>(), {}, torch::rand({4})};
  for (auto& p : model->parameters())
    if (p.requires_grad()) g.grads.push_back(p.grad().defined() ? p.grad().clone() : torch::zeros_like(p));
  return g;
}

void expect_same(const Gradients& plain, const Gradients& recomputed) {
  EXPECT_NEAR(plain.loss, recomputed.loss, 1e-7);
  ASSERT_EQ(plain.grads.size(), recomputed.grads.size());
  double worst = 0, largest = 0;
  for (size_t i = 0; i < plain.grads.size(); ++i) {
    worst = std::max(worst, (plain.grads[i] - recomputed.grads[i]).abs().max().item<double>());
    largest = std::max(largest, plain.grads[i].abs().max().item<double>());
  }
  EXPECT_GT(largest, 1e-6);  // the gradients are not all zero
  EXPECT_LE(worst, 1e-6 * std::max(1.0, largest)) << "largest gradient " << largest;
  EXPECT_TRUE(torch::equal(plain.next_random, recomputed.next_random));
}

TEST(ActivationCheckpoint, FullFineTuningGradientsEqualThePlainPasses) {
  expect_same(run_step(false, nullptr), run_step(true, nullptr));
}

TEST(ActivationCheckpoint, LoraWithDropoutRecomputesTheSameMasks) {
  LoraConfig lora;
  lora.rank = 4;
  lora.dropout = 0.3;
  lora.targets = {"q", "v", "up"};
  auto plain = run_step(false, &lora), recomputed = run_step(true, &lora);
  expect_same(plain, recomputed);
  // With the random state not restored, the masks differ and so would the gradients: the check bites.
  LoraConfig no_dropout = lora;
  no_dropout.dropout = 0;
  auto other = run_step(false, &no_dropout);
  double differ = 0;
  for (size_t i = 0; i < plain.grads.size(); ++i)
    differ = std::max(differ, (plain.grads[i] - other.grads[i]).abs().max().item<double>());
  EXPECT_GT(differ, 1e-4);
}

TEST(ActivationCheckpoint, ABlockRunsTwiceOnlyWhenAGraphIsBuilt) {
  int runs = 0;
  auto w = torch::randn({4, 4}).requires_grad_(true);
  auto block = [&](const torch::Tensor& x) {
    ++runs;
    return torch::tanh(x.matmul(w));
  };
  auto x = torch::randn({2, 4});
  auto y = checkpointed(block, x);
  EXPECT_EQ(runs, 1);
  y.sum().backward();
  EXPECT_EQ(runs, 2);  // recomputed once, in backward
  auto expected = torch::autograd::grad({torch::tanh(x.matmul(w)).sum()}, {w})[0];
  EXPECT_TRUE(torch::allclose(w.grad(), expected, 1e-6, 1e-7));
}

}  // namespace
}  // namespace grm
