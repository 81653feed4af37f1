// MXFP4 block and tensor codec against an independent double-precision implementation written
// here: exhaustive over E8M0 codes and all 65,536 BF16 bit patterns, both scale rules, the
// special blocks, padding, source dtypes and threading.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/e2m1.h"
#include "format/e8m0.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "test_seed.h"

namespace nibble {
namespace {

const double kGrid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};

// BF16 is the top half of an F32: decoded here with bit_cast, not with the library's
// bf16_to_f32 (which is under test through the BF16 source and output paths).
float ref_bf16_value(uint16_t bits) { return std::bit_cast<float>(uint32_t(bits) << 16); }

// ---- the independent reference (double precision, no code shared with src/format) --------

struct RefBlock {
  uint8_t scale = 0;
  uint8_t codes[32] = {};
  bool nan = false;
  int exponent = 0;
};

// Shared exponent by search rather than frexp/log2: the OCP rule takes the e with
// 2^(e+2) <= amax < 2^(e+3); the ceil rule the smallest e with amax <= 6 * 2^e.
int ref_exponent(double amax, ScaleRule rule) {
  if (amax == 0) return -127;
  int e = -300;
  if (rule == ScaleRule::ocp) {
    while (std::ldexp(1.0, e + 3) <= amax) ++e;
  } else {
    while (amax > 6 * std::ldexp(1.0, e)) ++e;
  }
  return std::clamp(e, -127, 127);
}

uint8_t ref_e2m1(double y) {
  const double a = std::fabs(y);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double d = std::fabs(kGrid[c] - a), db = std::fabs(kGrid[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return uint8_t((std::signbit(y) ? 8 : 0) | best);
}

RefBlock ref_quantize_block(const double* x, size_t count, ScaleRule rule) {
  RefBlock b;
  double amax = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!std::isfinite(x[i])) b.nan = true;
    amax = std::max(amax, std::fabs(x[i]));
  }
  if (b.nan) {
    b.scale = 0xff;
    return b;
  }
  b.exponent = ref_exponent(amax, rule);
  b.scale = uint8_t(b.exponent + 127);
  for (size_t i = 0; i < count; ++i) b.codes[i] = ref_e2m1(x[i] / std::ldexp(1.0, b.exponent));
  return b;
}

// The value an element decodes to, in double, then as F32 (what dequantize must write).
float ref_value(const RefBlock& b, size_t i) {
  if (b.nan) return std::numeric_limits<float>::quiet_NaN();
  const double magnitude = kGrid[b.codes[i] & 7] * std::ldexp(1.0, b.exponent);
  return float((b.codes[i] & 8) ? -magnitude : magnitude);
}

// Compares one tensor's quantization and dequantization with the reference, bit for bit,
// through the vectorised path or the scalar one.
void check_path(const std::vector<double>& values, size_t rows, size_t k, ScaleRule rule,
                const void* source, DType dtype, const std::string& label, bool scalar) {
  const size_t rb = mxfp4_blocks_per_row(k);
  std::vector<uint8_t> blocks(rows * rb * 16, 0xa5), scales(rows * rb, 0x5a);  // poisoned
  Mxfp4QuantizeOptions options;
  options.rule = rule;
  std::vector<float> out(rows * k, std::numeric_limits<float>::quiet_NaN());
  std::vector<uint16_t> out_bf16(rows * k, 0x7fc1);
  if (scalar) {
    mxfp4_quantize_scalar(source, dtype, rows, k, blocks.data(), scales.data(), options);
    mxfp4_dequantize_scalar(blocks.data(), scales.data(), rows, k, out.data(), DType::F32);
    mxfp4_dequantize_scalar(blocks.data(), scales.data(), rows, k, out_bf16.data(), DType::BF16);
  } else {
    mxfp4_quantize(source, dtype, rows, k, blocks.data(), scales.data(), options);
    mxfp4_dequantize(blocks.data(), scales.data(), rows, k, out.data(), DType::F32);
    mxfp4_dequantize(blocks.data(), scales.data(), rows, k, out_bf16.data(), DType::BF16);
  }
  size_t mismatches = 0;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t b = 0; b < rb; ++b) {
      const size_t first = b * 32, count = std::min<size_t>(32, k - first);
      const RefBlock ref = ref_quantize_block(&values[r * k + first], count, rule);
      const size_t at = r * rb + b;
      bool ok = scales[at] == ref.scale;
      for (size_t j = 0; j < 16; ++j)
        ok &= blocks[at * 16 + j] == uint8_t(ref.codes[2 * j] | ref.codes[2 * j + 1] << 4);
      for (size_t i = 0; i < count; ++i) {
        const float want = ref_value(ref, i), got = out[r * k + first + i];
        const float got_bf16 = ref_bf16_value(out_bf16[r * k + first + i]);
        if (std::isnan(want)) {
          ok &= std::isnan(got) && std::isnan(got_bf16);
        } else {
          ok &= std::memcmp(&want, &got, 4) == 0;  // bit-exact, the sign of zero included
          ok &= std::memcmp(&want, &got_bf16, 4) == 0;
        }
      }
      if (!ok && ++mismatches <= 5) {
        ADD_FAILURE() << label << (scalar ? " scalar" : " vectorised") << " rule " << scale_rule_name(rule) << ": row " << r << " block "
                      << b << ": scale " << int(scales[at]) << " (want " << int(ref.scale)
                      << "), first value " << values[r * k + first];
      }
    }
  }
  EXPECT_EQ(mismatches, 0u) << label << (scalar ? " (scalar path)" : " (vectorised path)");
}

void check_tensor(const std::vector<double>& values, size_t rows, size_t k, ScaleRule rule,
                  const void* source, DType dtype, const std::string& label) {
  check_path(values, rows, k, rule, source, dtype, label, false);
  check_path(values, rows, k, rule, source, dtype, label, true);
}

// ---- E8M0 ---------------------------------------------------------------------------------

TEST(E8M0, AllCodesDecodeToPowersOfTwo) {
  for (int c = 0; c < 256; ++c) {
    const float got = e8m0_decode(uint8_t(c));
    if (c == 255) {
      EXPECT_TRUE(std::isnan(got));
      continue;
    }
    EXPECT_EQ(double(got), std::ldexp(1.0, c - 127)) << "code " << c;
    EXPECT_EQ(e8m0_encode_exponent(c - 127), c);
  }
}

// ---- every BF16 bit pattern -----------------------------------------------------------------

// All 65,536 patterns in a [rows, k] tensor: `shuffled` mixes magnitudes within blocks (most
// elements flush to zero next to a large one); `sorted` puts neighbours in magnitude together
// so that every pattern is quantized against a block maximum close to it.
std::vector<uint16_t> all_bf16_patterns(bool sorted, std::mt19937& rng) {
  std::vector<uint16_t> bits(65536);
  std::iota(bits.begin(), bits.end(), 0);
  std::shuffle(bits.begin(), bits.end(), rng);
  if (sorted) {
    std::stable_sort(bits.begin(), bits.end(),
                     [](uint16_t a, uint16_t b) { return (a & 0x7fff) < (b & 0x7fff); });
  }
  return bits;
}

TEST(Mxfp4, AllBf16PatternsMatchTheReference) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng(seed);
  for (bool sorted : {false, true}) {
    const auto bits = all_bf16_patterns(sorted, rng);
    std::vector<double> values(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) values[i] = ref_bf16_value(bits[i]);
    for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil})
      check_tensor(values, 64, 1024, rule, bits.data(), DType::BF16,
                   sorted ? "all BF16, sorted" : "all BF16, shuffled");
  }
}

// ---- special blocks -------------------------------------------------------------------------

TEST(Mxfp4, AllZeroBlockKeepsSignedZeros) {
  float values[32];
  for (int i = 0; i < 32; ++i) values[i] = (i % 3 == 0) ? -0.0f : 0.0f;
  uint8_t packed[16];
  for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) {
    EXPECT_EQ(mxfp4_quantize_block(values, 32, rule, packed), 0);
    float out[32];
    mxfp4_dequantize_block(packed, 0, out);
    for (int i = 0; i < 32; ++i) {
      EXPECT_EQ(out[i], 0.0f);
      EXPECT_EQ(std::signbit(out[i]), i % 3 == 0) << i;
    }
  }
}

TEST(Mxfp4, SubnormalBlocksFollowTheClampedScale) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng(seed);
  std::uniform_int_distribution<uint32_t> mantissa(1, 0x7fffff);
  std::vector<double> values(32 * 8);
  std::vector<float> source(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    // F32 subnormals, each block scaled into a different part of the subnormal range.
    const uint32_t bits = (mantissa(rng) >> (i / 32 % 8)) | (rng() & 1 ? 0x80000000u : 0);
    std::memcpy(&source[i], &bits, 4);
    values[i] = source[i];
  }
  for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil})
    check_tensor(values, 8, 32, rule, source.data(), DType::F32, "F32 subnormals");
  // With the scale clamped at 2^-127, subnormals below 2^-129 (a quarter of 2^-127) flush to 0.
  float tiny[32] = {std::ldexp(1.0f, -130)};
  uint8_t packed[16];
  EXPECT_EQ(mxfp4_quantize_block(tiny, 32, ScaleRule::ocp, packed), 0);
  EXPECT_EQ(packed[0], 0);
}

// Both paths: the vectorised mxfp4_quantize and the scalar reference mxfp4_quantize_scalar
// (which has its own strict check).
TEST(Mxfp4, InfOrNaNMakesANaNBlockAndStrictNamesTheBlock) {
  const float specials[] = {std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()};
  for (const bool scalar : {false, true}) {
    const auto quantize = scalar ? mxfp4_quantize_scalar : mxfp4_quantize;
    const auto dequantize = [scalar](const uint8_t* b, const uint8_t* s, size_t rows, size_t k,
                                     float* out) {
      if (scalar) mxfp4_dequantize_scalar(b, s, rows, k, out, DType::F32);
      else mxfp4_dequantize(b, s, rows, k, out, DType::F32);
    };
    for (float special : specials) {
      SCOPED_TRACE(std::string(scalar ? "scalar" : "vectorised") + " path, special " +
                   std::to_string(special));
      const size_t rows = 4, k = 80;  // 3 blocks per row, the last one padded
      std::vector<float> source(rows * k, 1.5f);
      source[3 * k + 40] = special;  // row 3, block 1
      source[3 * k + 70] = special;  // row 3, block 2 (the padded one): a later block
      std::vector<uint8_t> blocks(rows * 3 * 16), scales(rows * 3);
      Mxfp4QuantizeOptions options;
      options.tensor_name = "model.layers.7.mlp.down_proj.weight";
      quantize(source.data(), DType::F32, rows, k, blocks.data(), scales.data(), options);
      std::vector<float> out(rows * k);
      dequantize(blocks.data(), scales.data(), rows, k, out.data());
      for (size_t i = 0; i < out.size(); ++i) {
        const bool in_nan_block = i >= 3 * k + 32;
        EXPECT_EQ(std::isnan(out[i]), in_nan_block) << "element " << i;
      }
      EXPECT_EQ(scales[3 * 3 + 1], 0xff);
      EXPECT_EQ(scales[3 * 3 + 2], 0xff);

      options.strict = true;
      try {
        quantize(source.data(), DType::F32, rows, k, blocks.data(), scales.data(), options);
        ADD_FAILURE() << "strict quantization accepted " << special;
      } catch (const Error& e) {
        EXPECT_NE(e.message().find("tensor 'model.layers.7.mlp.down_proj.weight': row 3, block 1 "
                                   "(columns 32..63)"),
                  std::string::npos) << e.message();
      }
    }
  }
}

// ---- shapes and sources ---------------------------------------------------------------------

TEST(Mxfp4, KNotAMultipleOf32IsZeroPadded) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (size_t k : {1, 31, 33, 45, 95, 100}) {
    const size_t rows = 5, rb = mxfp4_blocks_per_row(k);
    std::vector<float> source(rows * k);
    std::vector<double> values(rows * k);
    for (size_t i = 0; i < source.size(); ++i) values[i] = source[i] = normal(rng) * 3;
    for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil})
      check_tensor(values, rows, k, rule, source.data(), DType::F32, "k = " + std::to_string(k));
    std::vector<uint8_t> blocks(rows * rb * 16, 0xff), scales(rows * rb);
    mxfp4_quantize(source.data(), DType::F32, rows, k, blocks.data(), scales.data());
    for (size_t r = 0; r < rows; ++r)
      for (size_t e = k; e < rb * 32; ++e) {
        const uint8_t byte = blocks[(r * rb + e / 32) * 16 + (e % 32) / 2];
        EXPECT_EQ(e % 2 ? byte >> 4 : byte & 0xf, 0) << "k " << k << " row " << r << " pad " << e;
      }
  }
}

TEST(Mxfp4, Bf16F16AndF32SourcesAgree) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng(seed);
  const size_t rows = 16, k = 96;
  std::vector<uint16_t> f16(rows * k), bf16(rows * k);
  std::vector<float> from_f16(rows * k), from_bf16(rows * k);
  std::vector<double> values_f16(rows * k), values_bf16(rows * k);
  for (size_t i = 0; i < rows * k; ++i) {
    do f16[i] = uint16_t(rng()); while ((f16[i] & 0x7c00) == 0x7c00);   // finite F16
    do bf16[i] = uint16_t(rng()); while ((bf16[i] & 0x7f80) == 0x7f80); // finite BF16
    values_f16[i] = from_f16[i] = fp16_to_f32(f16[i]);
    values_bf16[i] = from_bf16[i] = ref_bf16_value(bf16[i]);
  }
  for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) {
    check_tensor(values_f16, rows, k, rule, f16.data(), DType::F16, "F16 source");
    check_tensor(values_f16, rows, k, rule, from_f16.data(), DType::F32, "F32 of F16 values");
    check_tensor(values_bf16, rows, k, rule, bf16.data(), DType::BF16, "BF16 source");
    check_tensor(values_bf16, rows, k, rule, from_bf16.data(), DType::F32, "F32 of BF16 values");
  }
}

TEST(Mxfp4, ThreadCountDoesNotChangeTheResult) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const size_t rows = 37, k = 200, rb = mxfp4_blocks_per_row(k);
  std::vector<float> source(rows * k);
  for (auto& v : source) v = normal(rng);
  ThreadPool one(1), three(3);
  std::vector<uint8_t> b1(rows * rb * 16), s1(rows * rb), b3(rows * rb * 16, 1), s3(rows * rb, 1);
  Mxfp4QuantizeOptions options;
  options.pool = &one;
  mxfp4_quantize(source.data(), DType::F32, rows, k, b1.data(), s1.data(), options);
  options.pool = &three;
  mxfp4_quantize(source.data(), DType::F32, rows, k, b3.data(), s3.data(), options);
  EXPECT_EQ(b1, b3);
  EXPECT_EQ(s1, s3);
  std::vector<float> o1(rows * k), o3(rows * k, 1.0f);
  mxfp4_dequantize(b1.data(), s1.data(), rows, k, o1.data(), DType::F32, &one);
  mxfp4_dequantize(b1.data(), s1.data(), rows, k, o3.data(), DType::F32, &three);
  EXPECT_EQ(o1, o3);
  const QuantError err = quant_error(source.data(), o1.data(), source.size());
  EXPECT_GT(err.sqnr_db, 15.0);  // MXFP4 on Gaussian data: about 17-18 dB with the OCP rule
  EXPECT_LT(err.sqnr_db, 25.0);
}

TEST(Mxfp4, RefusesOtherDtypesNamingTheTensor) {
  std::vector<uint8_t> blocks(16), scales(1), source(64);
  Mxfp4QuantizeOptions options;
  options.tensor_name = "lm_head.weight";
  try {
    mxfp4_quantize(source.data(), DType::I8, 1, 32, blocks.data(), scales.data(), options);
    ADD_FAILURE() << "I8 source accepted";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("lm_head.weight"), std::string::npos) << e.message();
    EXPECT_NE(e.message().find("I8"), std::string::npos) << e.message();
  }
  std::vector<float> out(32);
  EXPECT_THROW(mxfp4_dequantize(blocks.data(), scales.data(), 1, 32, out.data(), DType::F64), Error);
  EXPECT_THROW(scale_rule_from_name("floor"), Error);
  EXPECT_EQ(scale_rule_from_name("ceil"), ScaleRule::ceil);
}

TEST(QuantError, KnownValuesAndNaN) {
  const float ref[4] = {1, -1, 2, 0}, approx[4] = {1, -1, 2, 0.5f};
  const QuantError e = quant_error(ref, approx, 4);
  EXPECT_DOUBLE_EQ(e.nmse, 0.25 / 6.0);
  EXPECT_DOUBLE_EQ(e.max_abs, 0.5);
  EXPECT_NEAR(e.sqnr_db, -10 * std::log10(0.25 / 6.0), 1e-12);
  const float with_nan[4] = {1, std::numeric_limits<float>::quiet_NaN(), 2, 0};
  EXPECT_TRUE(std::isnan(quant_error(ref, with_nan, 4).nmse));
  EXPECT_FALSE(quant_error(ref, with_nan, 4).nmse < 1.0);  // a NaN never passes a bound
}

}  // namespace
}  // namespace nibble
