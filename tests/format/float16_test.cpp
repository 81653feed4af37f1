// F16 and BF16 -> F32 decoding, every one of the 65,536 bit patterns, against models written
// here from the IEEE 754 binary16 definition (sign, 5-bit exponent with bias 15, 10-bit
// mantissa) and from BF16 being the top half of an F32; and F32 -> F16/BF16 back is the
// identity on every non-NaN pattern.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

#include "format/float16.h"

namespace nibble {
namespace {

// IEEE binary16, in double: exponent field 0 is zero or subnormal (mantissa * 2^-24), 31 is
// Inf (mantissa 0) or NaN, anything else (1024 + mantissa) * 2^(exponent - 25).
double ref_f16(uint16_t bits) {
  const bool negative = bits & 0x8000;
  const int exponent = (bits >> 10) & 0x1f, mantissa = bits & 0x3ff;
  double magnitude;
  if (exponent == 31) {
    magnitude = mantissa == 0 ? HUGE_VAL : std::numeric_limits<double>::quiet_NaN();
  } else if (exponent == 0) {
    magnitude = std::ldexp(double(mantissa), -24);
  } else {
    magnitude = std::ldexp(double(1024 + mantissa), exponent - 25);
  }
  return negative ? -magnitude : magnitude;
}

TEST(Float16, AllF16PatternsDecodeToTheIeeeModel) {
  size_t nans = 0, infinities = 0, subnormals = 0;
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t bits = uint16_t(b);
    const double want = ref_f16(bits);
    const float got = fp16_to_f32(bits);
    EXPECT_EQ(std::signbit(got), bool(bits & 0x8000)) << "F16 0x" << std::hex << b;
    if (std::isnan(want)) {
      ++nans;
      EXPECT_TRUE(std::isnan(got)) << "F16 0x" << std::hex << b;
      // Back to F16: a quiet NaN of the same sign.
      EXPECT_EQ(f32_to_fp16(got), uint16_t((bits & 0x8000) | 0x7e00)) << "F16 0x" << std::hex << b;
      continue;
    }
    infinities += std::isinf(want);
    subnormals += want != 0 && std::fabs(want) < std::ldexp(1.0, -14);
    // Exact: every F16 is an F32, so the double model must equal the float bit for bit (the
    // sign of zero is checked above).
    EXPECT_EQ(double(got), want) << "F16 0x" << std::hex << b;
    EXPECT_EQ(f32_to_fp16(got), bits) << "F16 0x" << std::hex << b << " does not round-trip";
  }
  EXPECT_EQ(nans, 2u * 1023);       // exponent 31, mantissa != 0, both signs
  EXPECT_EQ(infinities, 2u);
  EXPECT_EQ(subnormals, 2u * 1023);  // exponent 0, mantissa != 0
}

TEST(Float16, AllBf16PatternsDecodeToTheUpperHalfOfAnF32) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const uint16_t bits = uint16_t(b);
    const float want = std::bit_cast<float>(b << 16), got = bf16_to_f32(bits);
    EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(want)) << "BF16 0x" << std::hex << b;
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(got)))) << "BF16 0x" << std::hex << b;
    } else {
      EXPECT_EQ(f32_to_bf16(got), bits) << "BF16 0x" << std::hex << b << " does not round-trip";
    }
  }
}

}  // namespace
}  // namespace nibble
