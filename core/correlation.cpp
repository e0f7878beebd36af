#include "core/correlation.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.hpp"

namespace grm {

double pearson_from_sums(double n, double sum_x, double sum_y, double sum_xx, double sum_yy, double sum_xy) {
  double vx = n * sum_xx - sum_x * sum_x, vy = n * sum_yy - sum_y * sum_y;
  // The variances are differences of large sums: a constant column can come out as a tiny negative.
  if (n < 2 || !(vx > 1e-12 * std::max(1.0, n * sum_xx)) || !(vy > 1e-12 * std::max(1.0, n * sum_yy)))
    return std::nan("");
  return (n * sum_xy - sum_x * sum_y) / std::sqrt(vx * vy);
}

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size())
    fail("correlation of {} values with {}: the columns must pair up", x.size(), y.size());
  double n = double(x.size());
  if (n < 2) return std::nan("");
  double mx = std::accumulate(x.begin(), x.end(), 0.0) / n, my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i)
    sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx), syy += (y[i] - my) * (y[i] - my);
  // Relative to the squares (as pearson_from_sums): a constant 0.1 leaves rounding in its deviations.
  double xx = 0, yy = 0;
  for (size_t i = 0; i < x.size(); ++i) xx += x[i] * x[i], yy += y[i] * y[i];
  if (!(sxx > 1e-12 * std::max(1.0, xx)) || !(syy > 1e-12 * std::max(1.0, yy))) return std::nan("");
  return sxy / std::sqrt(sxx * syy);
}

std::vector<double> mean_ranks(const std::vector<double>& x) {
  std::vector<size_t> order(x.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return x[a] < x[b]; });
  std::vector<double> ranks(x.size());
  for (size_t begin = 0; begin < order.size();) {
    size_t end = begin;
    while (end < order.size() && x[order[end]] == x[order[begin]]) ++end;
    double rank = (double(begin + 1) + double(end)) / 2;  // mean of ranks begin+1 .. end
    for (size_t i = begin; i < end; ++i) ranks[order[i]] = rank;
    begin = end;
  }
  return ranks;
}

double spearman(const std::vector<double>& x, const std::vector<double>& y) {
  if (x.size() != y.size())
    fail("correlation of {} values with {}: the columns must pair up", x.size(), y.size());
  // NaN has no rank (and would break the sort's ordering).
  for (size_t i = 0; i < x.size(); ++i)
    if (!std::isfinite(x[i]) || !std::isfinite(y[i])) return std::nan("");
  return pearson(mean_ranks(x), mean_ranks(y));
}

}  // namespace grm
