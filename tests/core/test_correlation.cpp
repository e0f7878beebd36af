// Correlation coefficients against hand-worked values.
#include "core/correlation.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "core/error.hpp"

using namespace grm;

TEST(Correlation, PearsonAndSpearmanMatchHandWorkedValues) {
  // dx = (-1, 0, 1), dy = (-7, -1, 8) / 3: r = 5 / sqrt(2 * 114 / 9) = 0.993399
  EXPECT_NEAR(pearson({1, 2, 3}, {2, 4, 7}), 5 / std::sqrt(2 * 114.0 / 9), 1e-12);
  EXPECT_NEAR(pearson({1, 2, 3}, {3, 2, 1}), -1.0, 1e-12);
  EXPECT_TRUE(std::isnan(pearson({1, 1, 1}, {1, 2, 3})));  // constant: undefined
  EXPECT_TRUE(std::isnan(pearson({1}, {2})));
  // The same from the sums ranks can add: n 3, Sx 6, Sy 13, Sxx 14, Syy 69, Sxy 31.
  EXPECT_NEAR(pearson_from_sums(3, 6, 13, 14, 69, 31), pearson({1, 2, 3}, {2, 4, 7}), 1e-12);
  EXPECT_TRUE(std::isnan(pearson_from_sums(3, 3, 6, 3, 14, 6)));  // x = (1, 1, 1)
  // Ranks with ties: {10, 30, 20, 20} -> {1, 4, 2.5, 2.5}
  EXPECT_EQ(mean_ranks({10, 30, 20, 20}), (std::vector<double>{1, 4, 2.5, 2.5}));
  // Any increasing map has rho 1; y = (1, 3, 2, 4) against x = (1, 2, 3, 4): 1 - 6 * 2 / (4 * 15) = 0.8
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {1, 8, 27, 1000}), 1.0, 1e-12);
  EXPECT_NEAR(spearman({1, 2, 3, 4}, {1, 3, 2, 4}), 0.8, 1e-12);
  EXPECT_THROW(spearman({1, 2}, {1}), Error);
}
