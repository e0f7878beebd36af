// Correlation coefficients for the report's over-optimization signals (reward against response length,
// proxy against gold). Each is NaN when it is undefined: fewer than two values, or a constant column.
#pragma once

#include <vector>

namespace grm {

// Pearson's r from the sums a data-parallel job can add over ranks: n values, sum x, sum y, sum x^2,
// sum y^2 and sum x*y. r = (n Sxy - Sx Sy) / sqrt((n Sxx - Sx^2)(n Syy - Sy^2)).
double pearson_from_sums(double n, double sum_x, double sum_y, double sum_xx, double sum_yy, double sum_xy);
// Pearson's r of paired values (x and y of one length, else an error).
double pearson(const std::vector<double>& x, const std::vector<double>& y);
// Spearman's rho: Pearson's r of the ranks, ties given their mean rank; NaN if any value is not finite.
double spearman(const std::vector<double>& x, const std::vector<double>& y);
// 1-based ranks of x (finite values), ties sharing their mean rank: {10, 30, 20, 20} -> {1, 4, 2.5, 2.5}.
std::vector<double> mean_ranks(const std::vector<double>& x);

}  // namespace grm
