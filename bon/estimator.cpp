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
  double log_total = log_choose(N, n), expectation = 0;
  for (int64_t i = n; i <= N; ++i)  // i: 1-based rank by proxy
    expectation += std::exp(log_choose(i - 1, n - 1) - log_total) * reward[size_t(order[size_t(i - 1)])];
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
