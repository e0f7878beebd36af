#include "pipeline/report/stats.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "bon/estimator.hpp"
#include "core/error.hpp"

namespace grm {

double t_quantile_95(int degrees) {
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
                                 2.201,  2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
                                 2.080,  2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042};
  if (degrees < 1) return NAN;
  return degrees <= 30 ? table[degrees - 1] : 1.96;
}

Estimate estimate(const std::vector<double>& values) {
  Estimate result;
  result.n = static_cast<int>(values.size());
  if (values.empty()) return {NAN, NAN, NAN, 0};
  result.mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  result.lo = result.hi = result.mean;
  if (values.size() < 2) return result;
  double squares = 0;
  for (double value : values) squares += (value - result.mean) * (value - result.mean);
  double standard_error = std::sqrt(squares / (values.size() - 1) / values.size());
  double half_width = t_quantile_95(result.n - 1) * standard_error;
  result.lo = result.mean - half_width;
  result.hi = result.mean + half_width;
  return result;
}

bool intervals_disjoint(const Estimate& a, const Estimate& b) {
  return a.has_interval() && b.has_interval() && (a.hi < b.lo || b.hi < a.lo);
}

Estimate paired_difference(const std::vector<double>& a, const std::vector<double>& b, int resamples,
                           uint64_t seed) {
  if (a.size() != b.size())
    fail("paired difference of {} and {} items: the items must be the same", a.size(), b.size());
  if (a.empty()) return {NAN, NAN, NAN, 0};
  std::vector<double> differences(a.size());
  for (size_t i = 0; i < a.size(); ++i) differences[i] = a[i] - b[i];
  Interval interval = bootstrap_mean(differences, std::max(resamples, 1), 0.05, seed);
  // The bootstrap's percentiles can miss the mean itself by a resample's granularity; the interval keeps it.
  return {interval.mean, std::min(interval.mean, interval.low), std::max(interval.mean, interval.high),
          int(a.size())};
}

}  // namespace grm
