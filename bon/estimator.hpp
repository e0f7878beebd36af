// Best-of-N statistics over N_max stored samples per prompt (no re-sampling):
//  - the unbiased estimate of the gold (or proxy) reward of the best-of-n choice, where "best" is by
//    proxy score: with samples sorted by proxy ascending, E = sum_{i=n}^{N} C(i-1, n-1) / C(N, n) * r_(i),
//    the probability that sample i is the proxy-maximum of a uniformly drawn n-subset (weights in log space);
//    samples tied on the proxy share their group's probability, each getting the group's mean reward (a
//    uniformly random tie-break), so a coarse proxy (an oracle, bf16 rewards) is not ranked by sample index;
//  - KL(best-of-n || policy) = log n - (n-1)/n;
//  - percentile bootstrap confidence intervals over prompts.
#pragma once

#include <cstdint>
#include <vector>

namespace grm {

// proxy and reward hold the same N samples; returns E[reward of the proxy-best of n] for 1 <= n <= N.
double best_of_n_expectation(const std::vector<double>& proxy, const std::vector<double>& reward, int64_t n);
double best_of_n_kl(int64_t n);

struct Interval {
  double mean = 0, low = 0, high = 0;
};
// Mean over prompts and its (1 - alpha) percentile-bootstrap interval from `resamples` seeded resamples.
Interval bootstrap_mean(const std::vector<double>& per_prompt, int resamples = 1000, double alpha = 0.05,
                        uint64_t seed = 0);

// The n grid of a curve: 1, 2, 4, ... up to n_max, with n_max itself always included.
std::vector<int64_t> best_of_n_grid(int64_t n_max);

}  // namespace grm
