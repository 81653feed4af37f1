// Sampling: greedy picks the first largest logit (llama2.c's argmax); top-k 1 and a tiny top-p
// reduce to greedy; a seed reproduces a run; sampled frequencies follow softmax(logits / T)
// (chi-square against the exact probabilities); NaN logits are refused.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <random>

#include "base/error.h"
#include "model/sampler.h"

namespace nibble {
namespace {

std::vector<float> random_logits(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0, 2);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(Sampler, GreedyIsFirstArgmax) {
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  Sampler s({});
  EXPECT_EQ(s.sample(l.data(), l.size()), 1);
}

TEST(Sampler, TopKOneAndTinyTopPAreGreedy) {
  const auto l = random_logits(300, std::random_device{}());
  const int32_t best = argmax(l.data(), l.size());
  Sampler k1({1.0f, 1, 1.0f, 3});
  Sampler p0({1.0f, 0, 1e-6f, 4});
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(k1.sample(l.data(), l.size()), best);
    EXPECT_EQ(p0.sample(l.data(), l.size()), best);
  }
}

TEST(Sampler, SeedReproduces) {
  const auto l = random_logits(100, std::random_device{}());
  Sampler a({0.8f, 40, 0.95f, 1234}), b({0.8f, 40, 0.95f, 1234});
  std::vector<int32_t> x, y;
  for (int i = 0; i < 200; ++i) {
    x.push_back(a.sample(l.data(), l.size()));
    y.push_back(b.sample(l.data(), l.size()));
  }
  EXPECT_EQ(x, y);
  EXPECT_GT(std::set<int32_t>(x.begin(), x.end()).size(), 3u);  // it does sample
}

TEST(Sampler, FrequenciesFollowSoftmax) {
  const std::vector<float> l = {1.0f, 0.0f, -0.5f, 2.0f, 0.3f};
  const float T = 0.7f;
  std::vector<double> p(l.size());
  double z = 0;
  for (size_t i = 0; i < l.size(); ++i) z += p[i] = std::exp(l[i] / T);
  for (auto& x : p) x /= z;
  Sampler s({T, 0, 1.0f, std::random_device{}()});
  const int n = 40000;
  std::vector<int> count(l.size());
  for (int i = 0; i < n; ++i) ++count[size_t(s.sample(l.data(), l.size()))];
  double chi2 = 0;
  for (size_t i = 0; i < l.size(); ++i) chi2 += std::pow(count[i] - n * p[i], 2) / (n * p[i]);
  EXPECT_LT(chi2, 20.5);  // 4 degrees of freedom: p = 0.0004
}

TEST(Sampler, TopKLimitsTheSupport) {
  const auto l = random_logits(64, std::random_device{}());
  std::vector<std::pair<float, int32_t>> sorted;
  for (size_t i = 0; i < l.size(); ++i) sorted.push_back({l[i], int32_t(i)});
  std::sort(sorted.rbegin(), sorted.rend());
  std::set<int32_t> top3 = {sorted[0].second, sorted[1].second, sorted[2].second};
  Sampler s({5.0f, 3, 1.0f, std::random_device{}()});
  for (int i = 0; i < 500; ++i) EXPECT_TRUE(top3.count(s.sample(l.data(), l.size())));
}

TEST(Sampler, NanIsRefused) {
  std::vector<float> l = {0.0f, NAN, 1.0f};
  Sampler greedy({}), hot({1.0f, 0, 1.0f, 1});
  EXPECT_THROW(hot.sample(l.data(), l.size()), Error);
  std::vector<float> all_nan = {NAN, NAN};
  EXPECT_THROW(greedy.sample(all_nan.data(), all_nan.size()), Error);
}

}  // namespace
}  // namespace nibble
