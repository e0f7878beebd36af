#include "bon/estimator.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "core/error.hpp"

namespace grm {

double best_of_n_expectation(const std::vector<double>& proxy, const std::vector<double>& reward, int64_t n) {
  int64_t N = int64_t(proxy.size());
  if (reward.size() != proxy.size())
    fail("best-of-n: {} proxy scores but {} rewards", proxy.size(), reward.size());
  if (n < 1 || n > N) fail("best-of-n: n = {} outside 1..{}", n, N);
  std::vector<int64_t> order(size_t(N), 0);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return proxy[a] < proxy[b]; });
  auto log_choose = [](int64_t a, int64_t b) {
    return std::lgamma(double(a) + 1) - std::lgamma(double(b) + 1) - std::lgamma(double(a - b) + 1);
  };
  // P(the sample at sorted rank i is the subset's maximum) = C(i-1, n-1) / C(N, n) for any fixed order of
  // ties; summed over a tie group it is the chance the maximum falls in that group, and a uniformly random
  // tie-break then picks each member of the group alike: the group contributes that chance times its mean.
  double log_total = log_choose(N, n), expectation = 0;
  for (int64_t begin = 0; begin < N;) {  // [begin, end): 0-based ranks of one group of equal proxy scores
    int64_t end = begin + 1;
    while (end < N && proxy[size_t(order[size_t(end)])] == proxy[size_t(order[size_t(begin)])]) ++end;
    double chance = 0, reward_sum = 0;
    for (int64_t r = begin; r < end; ++r) {
      if (r + 1 >= n) chance += std::exp(log_choose(r, n - 1) - log_total);
      reward_sum += reward[size_t(order[size_t(r)])];
    }
    expectation += chance * reward_sum / double(end - begin);
    begin = end;
  }
  return expectation;
}

double best_of_n_kl(int64_t n) {
  return std::log(double(n)) - double(n - 1) / double(n);
}

Interval bootstrap_mean(const std::vector<double>& per_prompt, int resamples, double alpha, uint64_t seed) {
  Interval out;
  if (per_prompt.empty()) return out;
  size_t m = per_prompt.size();
  out.mean = std::accumulate(per_prompt.begin(), per_prompt.end(), 0.0) / double(m);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> pick(0, m - 1);
  std::vector<double> means(static_cast<size_t>(resamples));
  for (auto& mean : means) {
    double sum = 0;
    for (size_t i = 0; i < m; ++i) sum += per_prompt[pick(rng)];
    mean = sum / double(m);
  }
  std::sort(means.begin(), means.end());
  auto at = [&](double q) { return means[std::min(means.size() - 1, size_t(q * double(means.size())))]; };
  out.low = at(alpha / 2);
  out.high = at(1 - alpha / 2);
  return out;
}

std::vector<int64_t> best_of_n_grid(int64_t n_max) {
  std::vector<int64_t> grid;
  for (int64_t n = 1; n < n_max; n *= 2) grid.push_back(n);
  grid.push_back(n_max);
  return grid;
}

}  // namespace grm
