// Gao et al.'s (2022) functional forms for the gold reward gained under optimization pressure, fitted to a
// measured gold curve. With d = sqrt(KL(pi || pi_init)) and R(d) the gold reward gained over the initial
// policy (R(0) = 0):
//   Best-of-N   R(d) = d (alpha - beta d)          peak at d* = alpha / (2 beta)
//   RL (PPO)    R(d) = d (alpha - beta ln d)       peak at d* = exp(alpha / beta - 1)
// Both are linear in (alpha, beta), so the fit is ordinary least squares without intercept; the
// intervals are the 95% t-intervals of the coefficients (n - 2 degrees of freedom), and the peak's KL
// (d*^2) is reported where beta > 0 (otherwise the fitted curve never turns down and there is no peak).
#pragma once

#include <string>
#include <vector>

#include "pipeline/report/stats.hpp"

namespace grm {

enum class GaoForm { best_of_n, rl };

struct GaoFit {
  Estimate alpha, beta;  // coefficients with 95% intervals (no interval with fewer than 3 points)
  double peak_kl = 0;    // KL at the fitted gold peak; NaN when beta <= 0 (no peak)
  double residual_rms = 0;
  int n_points = 0;
  bool ok = false;  // false: fewer than 2 usable points or a degenerate design
};

// kl (nats, >= 0) and gold_gain (gold reward minus the initial policy's) point by point; points with
// KL <= 0 carry no information about the shape and are skipped.
GaoFit fit_gao(GaoForm form, const std::vector<double>& kl, const std::vector<double>& gold_gain);
// R(d) of a form at KL = kl.
double gao_curve(GaoForm form, double alpha, double beta, double kl);

}  // namespace grm
