// Summaries of repeated timings, shared by the benchmarks.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace nibble::bench {

// The middle value (the upper one of an even count); 0 for none.
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct MeanSd {
  double mean = 0, sd = 0;  // sd: the sample standard deviation, 0 for fewer than 2 values
};

inline MeanSd mean_sd(const std::vector<double>& v) {
  MeanSd s;
  if (v.empty()) return s;
  for (double x : v) s.mean += x;
  s.mean /= double(v.size());
  double squares = 0;
  for (double x : v) squares += (x - s.mean) * (x - s.mean);
  s.sd = v.size() > 1 ? std::sqrt(squares / double(v.size() - 1)) : 0;
  return s;
}

}  // namespace nibble::bench
