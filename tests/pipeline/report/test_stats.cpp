// Report statistics on hand-worked and simulated cases: the paired bootstrap of a difference.
#include <gtest/gtest.h>

#include <random>

#include "core/error.hpp"
#include "pipeline/report/stats.hpp"

using namespace grm;

namespace {

TEST(Stats, PairedDifferenceRemovesTheItemsOwnSpread) {
  // Items differ wildly, the two methods by exactly 0.1 on every one: the difference is 0.1, certainly.
  std::vector<double> a = {0.9, 0.1, 5.0, -3.0}, b = {0.8, 0.0, 4.9, -3.1};
  Estimate d = paired_difference(a, b);
  EXPECT_NEAR(d.mean, 0.1, 1e-12);
  EXPECT_NEAR(d.lo, 0.1, 1e-12);
  EXPECT_NEAR(d.hi, 0.1, 1e-12);
  EXPECT_EQ(d.n, 4);
  // Separate intervals of a and b would overlap completely.
  EXPECT_FALSE(intervals_disjoint(estimate(a), estimate(b)));
  // Hand-worked: differences {1, -1}: mean 0; resamples give -1, 0 or 1.
  Estimate even = paired_difference({1, 0}, {0, 1});
  EXPECT_DOUBLE_EQ(even.mean, 0.0);
  EXPECT_DOUBLE_EQ(even.lo, -1.0);
  EXPECT_DOUBLE_EQ(even.hi, 1.0);
  EXPECT_THROW(paired_difference({1}, {1, 2}), Error);
}

TEST(Stats, PairedDifferenceIntervalCoversTheTruthAtItsLevel) {
  std::mt19937_64 rng(9);
  std::normal_distribution<double> item(0, 1), noise(0, 0.5);
  int covered = 0, trials = 300;
  for (int t = 0; t < trials; ++t) {
    std::vector<double> a, b;
    for (int i = 0; i < 60; ++i) {
      double x = item(rng);
      a.push_back(x + 0.2 + noise(rng));
      b.push_back(x + noise(rng));
    }
    Estimate d = paired_difference(a, b, 1000, uint64_t(t));
    covered += d.lo <= 0.2 && 0.2 <= d.hi;
  }
  EXPECT_GE(covered, int(0.90 * trials));
  EXPECT_LE(covered, int(0.99 * trials));
}

}  // namespace
