#include "pipeline/report/gao_fit.hpp"

#include <array>
#include <cmath>
#include <utility>

namespace grm {
namespace {

// The two regressors of a form at d: R = alpha * x1 - beta * x2.
std::pair<double, double> regressors(GaoForm form, double d) {
  return {d, form == GaoForm::best_of_n ? d * d : d * std::log(d)};
}

}  // namespace

double gao_curve(GaoForm form, double alpha, double beta, double kl) {
  if (kl <= 0) return 0;
  auto [x1, x2] = regressors(form, std::sqrt(kl));
  return alpha * x1 - beta * x2;
}

GaoFit fit_gao(GaoForm form, const std::vector<double>& kl, const std::vector<double>& gold_gain) {
  GaoFit fit;
  // Normal equations of y = a*x1 + b*(-x2): [S11 -S12; -S12 S22] [a; b] = [S1y; -S2y].
  double s11 = 0, s12 = 0, s22 = 0, s1y = 0, s2y = 0;
  std::vector<std::array<double, 3>> points;  // x1, x2, y
  for (size_t i = 0; i < kl.size() && i < gold_gain.size(); ++i) {
    if (!(kl[i] > 0) || !std::isfinite(gold_gain[i])) continue;
    auto [x1, x2] = regressors(form, std::sqrt(kl[i]));
    double y = gold_gain[i];
    s11 += x1 * x1, s12 += x1 * x2, s22 += x2 * x2, s1y += x1 * y, s2y += x2 * y;
    points.push_back({x1, x2, y});
  }
  fit.n_points = int(points.size());
  double det = s11 * s22 - s12 * s12;
  if (fit.n_points < 2 || !(std::fabs(det) > 1e-12 * (s11 * s22 + 1e-300))) return fit;
  double a = (s22 * s1y - s12 * s2y) / det;  // alpha
  double b = (s12 * s1y - s11 * s2y) / det;  // beta (the coefficient of -x2)
  double squares = 0;
  for (const auto& [x1, x2, y] : points) {
    double r = y - (a * x1 - b * x2);
    squares += r * r;
  }
  fit.residual_rms = std::sqrt(squares / fit.n_points);
  fit.alpha = {a, a, a, fit.n_points};
  fit.beta = {b, b, b, fit.n_points};
  if (fit.n_points > 2) {
    // Covariance sigma^2 (X'X)^-1; the sign of x2 does not change the variances.
    double sigma2 = squares / (fit.n_points - 2), t = t_quantile_95(fit.n_points - 2);
    double half_a = t * std::sqrt(sigma2 * s22 / det), half_b = t * std::sqrt(sigma2 * s11 / det);
    fit.alpha.lo = a - half_a, fit.alpha.hi = a + half_a;
    fit.beta.lo = b - half_b, fit.beta.hi = b + half_b;
  }
  if (b > 0) {
    double d = form == GaoForm::best_of_n ? a / (2 * b) : std::exp(a / b - 1);
    fit.peak_kl = d > 0 ? d * d : NAN;
  } else {
    fit.peak_kl = NAN;
  }
  fit.ok = true;
  return fit;
}

}  // namespace grm
