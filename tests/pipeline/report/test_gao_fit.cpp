// Gao et al.'s forms fitted to curves generated from known coefficients, with and without noise.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "bon/estimator.hpp"
#include "pipeline/report/gao_fit.hpp"

using namespace grm;

namespace {

TEST(GaoFit, RecoversKnownCoefficientsOfBothForms) {
  for (GaoForm form : {GaoForm::best_of_n, GaoForm::rl}) {
    const double alpha = 0.8, beta = 0.3;
    std::vector<double> kl, gain;
    for (int64_t n : best_of_n_grid(256)) {  // the KLs of a Best-of-N curve
      if (n == 1) continue;
      kl.push_back(best_of_n_kl(n));
      gain.push_back(gao_curve(form, alpha, beta, kl.back()));
    }
    GaoFit fit = fit_gao(form, kl, gain);
    ASSERT_TRUE(fit.ok);
    EXPECT_NEAR(fit.alpha.mean, alpha, 1e-9);
    EXPECT_NEAR(fit.beta.mean, beta, 1e-9);
    EXPECT_NEAR(fit.residual_rms, 0, 1e-9);
    // Peaks: BoN d* = alpha / (2 beta), RL d* = exp(alpha / beta - 1); the KL is d*^2.
    double d = form == GaoForm::best_of_n ? alpha / (2 * beta) : std::exp(alpha / beta - 1);
    EXPECT_NEAR(fit.peak_kl, d * d, 1e-6);
  }
  EXPECT_NEAR(gao_curve(GaoForm::best_of_n, 1, 0.5, 4), 2 * (1 - 0.5 * 2), 1e-12);               // d = 2: 0
  EXPECT_NEAR(gao_curve(GaoForm::rl, 1, 0.5, std::exp(2.0)), std::exp(1.0) * (1 - 0.5), 1e-12);  // d = e
}

TEST(GaoFit, IntervalsCoverTheTruthUnderNoiseAndShrinkWithMorePoints) {
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(0, 0.05);
  int covered = 0, trials = 200;
  double width_few = 0, width_many = 0;
  for (int t = 0; t < trials; ++t) {
    for (int points : {8, 64}) {
      std::vector<double> kl, gain;
      for (int i = 1; i <= points; ++i) {
        kl.push_back(5.0 * i / points);
        gain.push_back(gao_curve(GaoForm::best_of_n, 0.5, 0.2, kl.back()) + noise(rng));
      }
      GaoFit fit = fit_gao(GaoForm::best_of_n, kl, gain);
      ASSERT_TRUE(fit.ok);
      if (points == 8) {
        covered += fit.beta.lo <= 0.2 && 0.2 <= fit.beta.hi;
        width_few += fit.beta.hi - fit.beta.lo;
      } else {
        width_many += fit.beta.hi - fit.beta.lo;
      }
    }
  }
  EXPECT_GE(covered, int(0.9 * trials));  // a 95% interval, give or take the sampling of 200 trials
  EXPECT_LT(width_many, width_few);
}

TEST(GaoFit, NoPeakWhenTheCurveNeverTurnsDownAndNoFitWithoutPoints) {
  GaoFit rising = fit_gao(GaoForm::best_of_n, {1, 2, 3}, {1, 2, 3});  // beta <= 0 fits a monotone curve
  ASSERT_TRUE(rising.ok);
  EXPECT_LE(rising.beta.mean, 0);
  EXPECT_TRUE(std::isnan(rising.peak_kl));
  EXPECT_FALSE(fit_gao(GaoForm::rl, {0, 0}, {0, 0}).ok);  // KL 0 says nothing of the shape
  EXPECT_FALSE(fit_gao(GaoForm::rl, {1}, {0.3}).ok);
}

}  // namespace
