// The vectorised, multi-threaded tensor codec is bit-exact with the scalar reference, on every
// Highway target this CPU can run (each forced in turn), on random data of every source dtype,
// both scale rules, shapes with and without padding, and blocks with Inf/NaN; and every E8M0
// scale code times every E2M1 code dequantizes, on every target and the scalar path, to a
// double-precision reference written here.
#include <gtest/gtest.h>
#include <hwy/highway.h>
#include <hwy/targets.h>

#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "test_seed.h"

namespace nibble {
namespace {

// Random source data: Gaussian rows of very different scales, some raw bit patterns (any
// magnitude, subnormals included), exact ties of the E2M1 grid, and a few Inf/NaN.
std::vector<float> random_values(std::mt19937& rng, size_t n, bool specials) {
  std::vector<float> v(n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 99), exponent(-140, 120);
  const float ties[] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f, 7.0f, 6.0f, 0.0f, -0.0f};
  float scale = 1;
  for (size_t i = 0; i < n; ++i) {
    if (i % 32 == 0) scale = std::ldexp(1.0f, exponent(rng));
    const int k = kind(rng);
    if (k < 70) {
      v[i] = normal(rng) * scale;
    } else if (k < 85) {
      v[i] = ties[rng() % std::size(ties)] * (rng() & 1 ? -scale : scale);
    } else {
      const uint32_t bits = uint32_t(rng());
      std::memcpy(&v[i], &bits, 4);
      if (!std::isfinite(v[i])) v[i] = 0.0f;
    }
    if (specials && kind(rng) == 0) {
      const float s[] = {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                         std::numeric_limits<float>::quiet_NaN()};
      v[i] = s[rng() % 3];
    }
  }
  return v;
}

struct Source {
  DType dtype;
  std::vector<uint8_t> bytes;
};

Source make_source(const std::vector<float>& values, DType dtype) {
  Source s{dtype, {}};
  s.bytes.resize(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&s.bytes[i * 4], &values[i], 4);
    } else {
      const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(values[i]) : f32_to_fp16(values[i]);
      std::memcpy(&s.bytes[i * 2], &h, 2);
    }
  }
  return s;
}

// Vectorised vs scalar on one tensor, quantize and both dequantize outputs, bit for bit.
void compare_paths(const Source& source, size_t rows, size_t k, ScaleRule rule, ThreadPool& pool,
                   const std::string& label) {
  const size_t rb = mxfp4_blocks_per_row(k);
  std::vector<uint8_t> blocks(rows * rb * 16, 0xcd), scales(rows * rb, 0xcd);
  std::vector<uint8_t> ref_blocks(rows * rb * 16, 0x11), ref_scales(rows * rb, 0x11);
  Mxfp4QuantizeOptions options;
  options.rule = rule;
  options.pool = &pool;
  mxfp4_quantize(source.bytes.data(), source.dtype, rows, k, blocks.data(), scales.data(), options);
  mxfp4_quantize_scalar(source.bytes.data(), source.dtype, rows, k, ref_blocks.data(),
                        ref_scales.data(), options);
  for (size_t i = 0; i < scales.size(); ++i)
    ASSERT_EQ(int(scales[i]), int(ref_scales[i])) << label << ": scale of block " << i;
  for (size_t i = 0; i < blocks.size(); ++i)
    ASSERT_EQ(int(blocks[i]), int(ref_blocks[i])) << label << ": byte " << i % 16 << " of block " << i / 16;

  for (DType out_dtype : {DType::F32, DType::BF16}) {
    const size_t bytes = rows * k * dtype_size(out_dtype);
    std::vector<uint8_t> out(bytes + 64, 0xee), ref(bytes + 64, 0xee);  // guard bytes past the end
    mxfp4_dequantize(blocks.data(), scales.data(), rows, k, out.data(), out_dtype, &pool);
    mxfp4_dequantize_scalar(blocks.data(), scales.data(), rows, k, ref.data(), out_dtype);
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_EQ(int(out[i]), int(ref[i])) << label << ": dequantized " << dtype_name(out_dtype)
                                          << " byte " << i << " of " << bytes;
  }
}

void compare_on_random_tensors(ThreadPool& pool, const std::string& target, uint64_t seed) {
  std::mt19937 rng(seed);  // the same data on every target
  const size_t shapes[][2] = {{1, 32}, {3, 64}, {17, 96}, {5, 1000}, {64, 256}, {2, 31}, {7, 45},
                              {4, 2880}, {33, 129}};
  for (const auto& shape : shapes) {
    const size_t rows = shape[0], k = shape[1];
    const auto values = random_values(rng, rows * k, rng() % 2 == 0);
    for (DType dtype : {DType::BF16, DType::F16, DType::F32}) {
      const Source source = make_source(values, dtype);
      for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil}) {
        compare_paths(source, rows, k, rule, pool,
                      fmt::format("{} {} {}x{} {}", target, dtype_name(dtype), rows, k,
                                  scale_rule_name(rule)));
        if (testing::Test::HasFatalFailure()) return;
      }
    }
  }
  // Every BF16 bit pattern, in one tensor.
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::shuffle(all.begin(), all.end(), rng);
  Source source{DType::BF16, std::vector<uint8_t>(all.size() * 2)};
  std::memcpy(source.bytes.data(), all.data(), source.bytes.size());
  for (ScaleRule rule : {ScaleRule::ocp, ScaleRule::ceil})
    compare_paths(source, 256, 256, rule, pool, target + " all BF16 patterns");
}

// Runs check(target name) once per Highway target that this CPU supports and this build
// compiled, each forced in turn (on an AVX2-only x86: AVX2, SSE4, SSSE3, SCALAR; AVX3 joins on
// an AVX-512 machine), then restores the normal dispatch.
template <class Check>
void for_each_target(const Check& check) {
  const auto targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    hwy::GetChosenTarget().Update(hwy::SupportedTargets());
    const std::string name = hwy::TargetName(target);
    std::printf("[   info   ] checking target %s\n", name.c_str());
    EXPECT_EQ(mxfp4_simd_target(), name);
    check(name);
    if (testing::Test::HasFatalFailure()) break;
  }
  hwy::SetSupportedTargetsForTest(0);
  hwy::GetChosenTarget().Update(hwy::SupportedTargets());
}

TEST(Mxfp4Simd, BitExactWithScalarOnEveryTarget) {
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  ThreadPool pool(2);
  for_each_target([&](const std::string& name) { compare_on_random_tensors(pool, name, seed); });
}

// ---- every E8M0 scale code x every E2M1 code, through the tensor dequantizer -----------------

// What element code `code` under scale code `scale` decodes to, from the OCP MX definitions
// alone: (-1)^sign * {0, 0.5, 1, 1.5, 2, 3, 4, 6}[code & 7] * 2^(scale - 127) in double, NaN for
// scale 255, then as F32. The products have at most two significant bits, so every one below
// 2^128 is an F32 (and a BF16) exactly, and the ones from 2^128 up round to +-Inf (mxfp4.h).
float ref_decoded(uint8_t scale, uint8_t code) {
  if (scale == 255) return std::numeric_limits<float>::quiet_NaN();
  const double grid[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double magnitude = grid[code & 7] * std::ldexp(1.0, int(scale) - 127);
  const double value = code & 8 ? -magnitude : magnitude;
  if (magnitude >= std::ldexp(1.0, 128)) return float(code & 8 ? -HUGE_VAL : HUGE_VAL);
  return float(value);
}

TEST(Mxfp4Simd, EveryScaleCodeTimesEveryElementCodeDequantizesToTheReference) {
  // 256 blocks in a [16, 512] tensor: block b has scale code b, and byte j holds code j (even
  // element) and code 15 - j (odd element), so every element code sits at both parities.
  const size_t rows = 16, k = 512, n = rows * k;
  std::vector<uint8_t> blocks(256 * 16), scales(256);
  for (size_t b = 0; b < 256; ++b) {
    scales[b] = uint8_t(b);
    for (size_t j = 0; j < 16; ++j) blocks[b * 16 + j] = uint8_t((15 - j) << 4 | j);
  }
  const auto code_of = [](size_t i) {
    const size_t j = i % 32 / 2;
    return uint8_t(i % 2 ? 15 - j : j);
  };
  // The reference itself: exact below 2^128 and the Inf pairs mxfp4.h names.
  size_t infinities = 0;
  for (size_t i = 0; i < 512; ++i) infinities += std::isinf(ref_decoded(uint8_t(i / 32 + 240), code_of(i)));
  // Scale 253: +-4, +-6 (4 codes); scale 254: +-2, +-3, +-4, +-6 (8 codes); each at 2 elements.
  ASSERT_EQ(infinities, 2u * (4 + 8));
  ASSERT_EQ(ref_decoded(254, 3), std::ldexp(1.5f, 127));  // the largest finite product
  ASSERT_EQ(ref_decoded(252, 7), std::ldexp(1.5f, 127));
  ASSERT_EQ(ref_decoded(0, 9), -std::ldexp(1.0f, -128));  // the smallest: an F32 subnormal

  const auto check = [&](const std::string& path, const auto& dequantize) {
    std::vector<float> f32(n, 1.0f);
    std::vector<uint16_t> bf16(n, 0x3f80);  // poisoned with 1.0
    dequantize(f32.data(), DType::F32);
    dequantize(bf16.data(), DType::BF16);
    size_t mismatches = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t scale = uint8_t(i / 32), code = code_of(i);
      const float want = ref_decoded(scale, code);
      const float got[2] = {f32[i], std::bit_cast<float>(uint32_t(bf16[i]) << 16)};
      for (int o = 0; o < 2; ++o) {
        const bool ok = std::isnan(want) ? std::isnan(got[o])
                                         : std::bit_cast<uint32_t>(want) == std::bit_cast<uint32_t>(got[o]);
        if (!ok && ++mismatches <= 8)
          ADD_FAILURE() << path << (o ? ", BF16 out" : ", F32 out") << ": scale code " << int(scale)
                        << " x E2M1 code " << int(code) << " gave " << got[o] << ", want " << want;
      }
    }
    EXPECT_EQ(mismatches, 0u) << path;
  };
  check("mxfp4_dequantize_scalar", [&](void* out, DType dtype) {
    mxfp4_dequantize_scalar(blocks.data(), scales.data(), rows, k, out, dtype);
  });
  ThreadPool pool(2);
  for_each_target([&](const std::string& target) {
    check("mxfp4_dequantize on " + target, [&](void* out, DType dtype) {
      mxfp4_dequantize(blocks.data(), scales.data(), rows, k, out, dtype, &pool);
    });
  });
}

TEST(Mxfp4Simd, ReportsTheBestTarget) {
  const std::string target = mxfp4_simd_target();
  EXPECT_FALSE(target.empty());
  EXPECT_EQ(target, hwy::TargetName(hwy::SupportedAndGeneratedTargets().front()));
}

TEST(Mxfp4Simd, StrictNamesTheFirstNonFiniteBlockAcrossThreads) {
  ThreadPool pool(2);
  const size_t rows = 64, k = 2048;
  std::vector<float> values(rows * k, 0.5f);
  values[40 * k + 100] = std::numeric_limits<float>::quiet_NaN();  // row 40, block 3
  values[50 * k + 5] = std::numeric_limits<float>::infinity();     // a later one
  std::vector<uint8_t> blocks(rows * k / 2), scales(rows * k / 32);
  Mxfp4QuantizeOptions options;
  options.strict = true;
  options.pool = &pool;
  options.tensor_name = "experts.gate_up";
  try {
    mxfp4_quantize(values.data(), DType::F32, rows, k, blocks.data(), scales.data(), options);
    ADD_FAILURE() << "strict quantization accepted NaN";
  } catch (const Error& e) {
    EXPECT_NE(e.message().find("tensor 'experts.gate_up': row 40, block 3 (columns 96..127)"),
              std::string::npos) << e.message();
  }
}

}  // namespace
}  // namespace nibble
