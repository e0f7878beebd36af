#include "policy/activation_checkpoint.hpp"

#include <ATen/Context.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

namespace grm {
namespace {

// The block and the random state it first ran with, kept in the autograd context until backward.
struct Recompute : torch::CustomClassHolder {
  std::function<torch::Tensor(const torch::Tensor&)> block;
  at::Generator generator;  // the default generator of the block input's device
  torch::Tensor rng_state;
};

struct Checkpoint : torch::autograd::Function<Checkpoint> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               c10::intrusive_ptr<Recompute> recompute) {
    {
      std::lock_guard<std::mutex> lock(recompute->generator.mutex());
      recompute->rng_state = recompute->generator.get_state();
    }
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;  // nothing of the block's is kept but its input
      y = recompute->block(x);
    }
    ctx->save_for_backward({x});
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(recompute);
    return y;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto recompute = c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    auto x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto& generator = recompute->generator;
    // Run the block as it first ran (same dropout masks), then put the random state back.
    torch::Tensor now;
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      now = generator.get_state();
      generator.set_state(recompute->rng_state);
    }
    torch::Tensor y;
    {
      torch::AutoGradMode enable(true);
      y = recompute->block(x);
    }
    {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(now);
    }
    // Parameters' gradients accumulate here; the input's is returned to the outer graph.
    torch::autograd::backward({y}, {grad_outputs[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> block, const torch::Tensor& x) {
  auto recompute = c10::make_intrusive<Recompute>();
  recompute->block = std::move(block);
  recompute->generator = at::globalContext().defaultGenerator(x.device());
  // An input that needs no gradient (a frozen embedding's output under LoRA) would leave the block out of
  // the graph, and its adapters without gradients: the block is still entered through a leaf that does.
  torch::Tensor input = x.requires_grad() ? x : x.detach().requires_grad_(true);
  return Checkpoint::apply(input, recompute);
}

}  // namespace grm
