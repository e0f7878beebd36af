// Response log-probs without a (B, T, V) logits tensor, for large vocabularies (gemma's 256k: about 1 GB of
// fp32 logits per 1,024-token sequence). Only the positions that predict a response token are projected,
// `chunk` vocabulary rows at a time, with a running log-sum-exp; the backward recomputes each chunk's
// logits instead of keeping them, so memory is O(N * chunk) for N response tokens, not O(B * T * V).
#pragma once

#include <cstdint>

#include "core/torch.hpp"

namespace grm {

// log p(target_i | h_i) = h_i . w_{target_i} - logsumexp_v(h_i . w_v), in fp32 whatever h and w hold.
// h (N, D), w (V, D), targets (N) int64 -> (N); differentiable in h and w.
torch::Tensor chunked_token_logprobs(const torch::Tensor& h, const torch::Tensor& w,
                                     const torch::Tensor& targets, int64_t chunk);

// The sum over each row's response tokens of log p(token | prefix), as response_logprobs
// (policy/model.hpp) computes it from full logits: hidden (B, T, D) final hidden states, w (V, D) the
// output matrix, ids and response_mask (B, T) -> (B).
torch::Tensor response_logprobs_chunked(const torch::Tensor& hidden, const torch::Tensor& w,
                                        const torch::Tensor& ids, const torch::Tensor& response_mask,
                                        int64_t chunk);

}  // namespace grm
