// The quantizer's fused block loop against the format codec (the reference): bit-identical
// packed bytes and scale on every BF16 bit pattern and on random, tie, subnormal, saturating
// and special blocks, both rules; its error sums against a double computation from the codec's
// own decode.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "format/mxfp4.h"
#include "quant/block_quantizer.h"
#include "test_seed.h"

namespace nibble {
namespace {

void expect_same_as_codec(const float* v, ScaleRule rule, const char* what) {
  uint8_t ours[16], ref[16];
  std::memset(ours, 0xAB, 16);  // poisoned
  std::memset(ref, 0xCD, 16);
  BlockError err;
  const uint8_t s_ours = quantize_block_measured(v, rule, ours, err);
  const uint8_t s_ref = mxfp4_quantize_block(v, 32, rule, ref);
  ASSERT_EQ(s_ours, s_ref) << what << " rule " << scale_rule_name(rule);
  ASSERT_EQ(0, std::memcmp(ours, ref, 16)) << what << " rule " << scale_rule_name(rule);
  if (s_ref == kE8M0NaN) return;
  float decoded[32];
  mxfp4_dequantize_block(ref, s_ref, decoded);
  double e = 0, s = 0, m = 0;
  for (int i = 0; i < 32; ++i) {
    const double d = double(decoded[i]) - double(v[i]);
    e += d * d;
    s += double(v[i]) * v[i];
    m = std::max(m, std::fabs(d));
  }
  // Values far below the block's largest may underflow when scaled (a loss far under 1e-30 of
  // the block's energy): hence the tiny absolute slack relative to the largest value.
  const double floor = 1e-30 * s;
  ASSERT_NEAR(err.error, e, 1e-5 * e + floor) << what;
  ASSERT_NEAR(err.signal, s, 1e-5 * s + floor) << what;
  ASSERT_NEAR(err.max_abs, m, 1e-6 * m + std::sqrt(floor)) << what;
}

// All 65,536 BF16 patterns in 2,048 blocks, twice: shuffled (small values beside large ones,
// Inf and NaN scattered) and sorted by magnitude (each pattern quantized against a block
// maximum close to it, so every tie and the top of the range are reached).
TEST(BlockQuantizer, AllBf16PatternsMatchTheCodecBitExactly) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 gen(seed);
  std::vector<uint16_t> bits(65536);
  std::iota(bits.begin(), bits.end(), 0);
  std::shuffle(bits.begin(), bits.end(), gen);
  for (const bool sorted : {false, true}) {
    if (sorted) {
      std::stable_sort(bits.begin(), bits.end(),
                       [](uint16_t a, uint16_t b) { return (a & 0x7fff) < (b & 0x7fff); });
    }
    for (size_t block = 0; block < bits.size() / 32; ++block) {
      float v[32];
      for (size_t i = 0; i < 32; ++i) v[i] = std::bit_cast<float>(uint32_t(bits[block * 32 + i]) << 16);
      const std::string what = std::string(sorted ? "sorted" : "shuffled") + " BF16 block " + std::to_string(block);
      for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) {
        expect_same_as_codec(v, rule, what.c_str());
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(BlockQuantizer, RandomBlocksMatchTheCodecBitExactly) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> exp_dist(-140, 120);
  float v[32];
  for (int trial = 0; trial < 20000; ++trial) {
    const float scale = std::ldexp(1.0f, exp_dist(gen));  // includes subnormal-scale blocks
    for (float& x : v) x = normal(gen) * scale;
    for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) expect_same_as_codec(v, rule, "random");
  }
}

TEST(BlockQuantizer, TiesSaturationZerosAndSpecials) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 gen(seed);
  // Every midpoint and grid value, scaled by a random power of two: the even-code tie rule.
  const float grid[] = {0, 0.25f, 0.5f, 0.75f, 1, 1.25f, 1.5f, 1.75f, 2, 2.5f, 3, 3.5f, 4, 5, 6, 7, 7.99f};
  std::uniform_int_distribution<int> pick(0, 16), exp_dist(-130, 120), sign(0, 1);
  float v[32];
  for (int trial = 0; trial < 20000; ++trial) {
    const int e = exp_dist(gen);
    for (float& x : v) x = std::ldexp(grid[pick(gen)], e) * (sign(gen) ? -1.0f : 1.0f);
    for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) expect_same_as_codec(v, rule, "grid");
  }
  for (float& x : v) x = -0.0f;
  for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) expect_same_as_codec(v, rule, "negative zeros");
  for (float& x : v) x = std::numeric_limits<float>::denorm_min();
  for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) expect_same_as_codec(v, rule, "denorm_min");
  for (float& x : v) x = std::numeric_limits<float>::max();
  v[3] = -std::numeric_limits<float>::max();
  for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) expect_same_as_codec(v, rule, "float max");
  for (const float special : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                              std::numeric_limits<float>::quiet_NaN()}) {
    for (float& x : v) x = 1.0f;
    v[17] = special;
    for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) expect_same_as_codec(v, rule, "special");
    uint8_t packed[16];
    BlockError err;
    EXPECT_EQ(quantize_block_measured(v, ScaleRule::ocp, packed, err), kE8M0NaN);
  }
}

}  // namespace
}  // namespace nibble
