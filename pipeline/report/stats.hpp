// Summary statistics for reports: means with 95% confidence intervals over seeds (Student t, since
// sweeps have a handful of seeds), or the bootstrap interval a stage computed over prompts.
#pragma once

#include <cstdint>
#include <vector>

namespace grm {

struct Estimate {
  double mean = 0;
  double lo = 0;  // 95% interval; equal to mean when there is none
  double hi = 0;
  int n = 0;  // values averaged (seeds)
  bool has_interval() const { return hi > lo; }
};

// Mean and t-interval of `values`; a single value has no interval.
Estimate estimate(const std::vector<double>& values);
// Two-sided 95% Student t quantile for `degrees` degrees of freedom.
double t_quantile_95(int degrees);
// Whether the two estimates' intervals are disjoint (both must have one).
bool intervals_disjoint(const Estimate& a, const Estimate& b);
// The mean of a[i] - b[i] over paired items (the same prompts or preference pairs measured for both) and
// its 95% percentile-bootstrap interval over items, from `resamples` seeded resamples. Pairing removes the
// items' own spread, which two separate intervals would count twice. n = the number of items.
Estimate paired_difference(const std::vector<double>& a, const std::vector<double>& b, int resamples = 2000,
                           uint64_t seed = 0);

}  // namespace grm
