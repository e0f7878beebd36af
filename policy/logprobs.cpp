#include "policy/logprobs.hpp"

#include <torch/csrc/autograd/custom_function.h>

#include "core/error.hpp"

namespace grm {
namespace {

// The chunk loop's forward and a backward that recomputes: d logp_i / d logits_iv = [v = t_i] - p_iv.
struct ChunkedLogprob : torch::autograd::Function<ChunkedLogprob> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& h,
                               const torch::Tensor& w, const torch::Tensor& targets, int64_t chunk) {
    int64_t N = h.size(0), V = w.size(0);
    auto hf = h.to(torch::kFloat32);
    auto lse = torch::full({N}, -INFINITY, hf.options());
    auto target_logit = torch::zeros({N}, hf.options());
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
      int64_t width = std::min(chunk, V - v0);
      auto logits = hf.matmul(w.narrow(0, v0, width).to(torch::kFloat32).t());  // (N, width)
      lse = torch::logaddexp(lse, logits.logsumexp(1));
      auto inside = (targets >= v0) & (targets < v0 + width);
      auto local = (targets - v0).clamp(0, width - 1);
      target_logit = target_logit + torch::where(inside, logits.gather(1, local.unsqueeze(1)).squeeze(1),
                                                 torch::zeros_like(target_logit));
    }
    ctx->save_for_backward({h, w, targets, lse});
    ctx->saved_data["chunk"] = chunk;
    return target_logit - lse;
  }

  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx,
                                               torch::autograd::tensor_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto h = saved[0], w = saved[1], targets = saved[2], lse = saved[3];
    int64_t chunk = ctx->saved_data["chunk"].toInt(), V = w.size(0);
    auto g = grad_outputs[0].to(torch::kFloat32);  // (N)
    auto hf = h.to(torch::kFloat32);
    auto grad_h = torch::zeros_like(hf);
    bool want_w = ctx->needs_input_grad(1);
    torch::Tensor grad_w = want_w ? torch::zeros({V, w.size(1)}, hf.options()) : torch::Tensor();
    for (int64_t v0 = 0; v0 < V; v0 += chunk) {
      int64_t width = std::min(chunk, V - v0);
      auto wc = w.narrow(0, v0, width).to(torch::kFloat32);
      auto p = (hf.matmul(wc.t()) - lse.unsqueeze(1)).exp();  // (N, width) softmax over the whole vocabulary
      auto coef = -g.unsqueeze(1) * p;
      auto inside = (targets >= v0) & (targets < v0 + width);
      auto local = (targets - v0).clamp(0, width - 1);
      coef.scatter_add_(1, local.unsqueeze(1), (g * inside.to(g.scalar_type())).unsqueeze(1));
      grad_h += coef.matmul(wc);
      if (want_w) grad_w.narrow(0, v0, width).copy_(coef.t().matmul(hf));
    }
    return {grad_h.to(h.scalar_type()), want_w ? grad_w.to(w.scalar_type()) : torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor chunked_token_logprobs(const torch::Tensor& h, const torch::Tensor& w,
                                     const torch::Tensor& targets, int64_t chunk) {
  if (chunk < 1) fail("chunked log-probs: chunk must be at least 1, not {}", chunk);
  if (h.dim() != 2 || w.dim() != 2 || h.size(1) != w.size(1) || targets.numel() != h.size(0))
    fail("chunked log-probs: h (N, D), w (V, D) and targets (N) do not fit together");
  return ChunkedLogprob::apply(h, w, targets.to(torch::kInt64), chunk);
}

torch::Tensor response_logprobs_chunked(const torch::Tensor& hidden, const torch::Tensor& w,
                                        const torch::Tensor& ids, const torch::Tensor& response_mask,
                                        int64_t chunk) {
  int64_t B = ids.size(0), T = ids.size(1);
  // Position t predicts token t + 1: those whose next token is a response token.
  auto scored = response_mask.narrow(1, 1, T - 1).to(torch::kBool);  // (B, T - 1)
  auto where = scored.nonzero();                                     // (N, 2): row, position
  auto rows = where.select(1, 0), positions = where.select(1, 1);
  auto h = hidden.narrow(1, 0, T - 1).index({rows, positions});     // (N, D)
  auto targets = ids.narrow(1, 1, T - 1).index({rows, positions});  // (N)
  auto logp = chunked_token_logprobs(h, w, targets, chunk);         // (N)
  return torch::zeros({B}, logp.options()).index_add(0, rows, logp);
}

}  // namespace grm
