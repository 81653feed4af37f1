// FP8 E4M3FN and E5M2 codecs, exhaustively, against an independent double-precision model
// written here: the representable values enumerated from the format's definition, and a
// nearest-value search with ties to the even code.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "format/float16.h"
#include "format/fp8.h"

namespace nibble {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Model {
  int exponent_bits, mantissa_bits, bias;
  bool ieee_specials;  // E5M2: top exponent is Inf/NaN; E4M3FN: only S.1111.111 is NaN

  // The value of a code per the OCP FP8 definition; NaN for NaN codes.
  double value(int code) const {
    const int e = (code >> mantissa_bits) & ((1 << exponent_bits) - 1);
    const int m = code & ((1 << mantissa_bits) - 1);
    const int top = (1 << exponent_bits) - 1;
    const double sign = (code & 0x80) ? -1.0 : 1.0;
    if (ieee_specials && e == top) return m == 0 ? sign * kInf : std::nan("");
    if (!ieee_specials && e == top && m == (1 << mantissa_bits) - 1) return std::nan("");
    double magnitude;
    if (e == 0) {
      magnitude = m;
      for (int i = 0; i < bias - 1 + mantissa_bits; ++i) magnitude /= 2;
    } else {
      magnitude = 1.0 + m / double(1 << mantissa_bits);
      for (int i = 0; i < std::abs(e - bias); ++i) magnitude = e > bias ? magnitude * 2 : magnitude / 2;
    }
    return sign * magnitude;
  }

  // Finite non-negative codes, in increasing value (their values increase with the code).
  std::vector<int> finite_codes() const {
    std::vector<int> codes;
    for (int c = 0; c < 128; ++c)
      if (std::isfinite(value(c))) codes.push_back(c);
    return codes;
  }

  // Nearest finite value, ties to the even code; past the rounding boundary above the largest
  // value, the largest code (saturate) or `infinity_code`.
  int encode(double x, int nan_code, int infinity_code, bool saturate) const {
    const int sign = std::signbit(x) ? 0x80 : 0;
    if (std::isnan(x)) return sign | nan_code;
    const double a = std::fabs(x);
    if (codes_.empty()) {
      codes_ = finite_codes();
      for (int c : codes_) values_.push_back(value(c));
    }
    const int max_code = codes_.back();
    if (std::isinf(a)) return sign | infinity_code;
    const double max = values_.back(), step = max - values_[values_.size() - 2];
    if (a > max + step / 2 || (a == max + step / 2 && max_code % 2 == 1))
      return sign | (saturate ? max_code : infinity_code);
    // The two neighbours of a, by binary search.
    const size_t hi = size_t(std::lower_bound(values_.begin(), values_.end(), a) - values_.begin());
    if (hi == values_.size()) return sign | max_code;
    if (hi == 0 || values_[hi] == a) return sign | codes_[hi];
    const double below = a - values_[hi - 1], above = values_[hi] - a;
    if (below < above) return sign | codes_[hi - 1];
    if (above < below) return sign | codes_[hi];
    return sign | (codes_[hi] % 2 == 0 ? codes_[hi] : codes_[hi - 1]);
  }

  mutable std::vector<int> codes_;
  mutable std::vector<double> values_;
};

const Model kE4M3{4, 3, 7, false, {}, {}};
const Model kE5M2{5, 2, 15, true, {}, {}};

int reference_e4m3(double x) { return kE4M3.encode(x, 0x7f, 0x7e, true); }
int reference_e5m2(double x, bool saturate) { return kE5M2.encode(x, 0x7e, 0x7c, saturate); }

TEST(Fp8, E4M3AllCodesDecode) {
  int nans = 0;
  for (int c = 0; c < 256; ++c) {
    const double expected = kE4M3.value(c);
    const float got = fp8_e4m3_decode(uint8_t(c));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      ++nans;
    } else {
      EXPECT_EQ(double(got), expected) << "code " << c;
      EXPECT_EQ(std::signbit(got), bool(c & 0x80)) << "code " << c;
    }
  }
  EXPECT_EQ(nans, 2);  // 0x7f and 0xff
  EXPECT_EQ(fp8_e4m3_decode(0x7e), 448.0f);
  EXPECT_EQ(fp8_e4m3_decode(0x01), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_e4m3_decode(0x08), std::ldexp(1.0f, -6));
}

TEST(Fp8, E5M2AllCodesDecode) {
  int nans = 0, infs = 0;
  for (int c = 0; c < 256; ++c) {
    const double expected = kE5M2.value(c);
    const float got = fp8_e5m2_decode(uint8_t(c));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << "code " << c;
      ++nans;
    } else {
      infs += std::isinf(got);
      EXPECT_EQ(double(got), expected) << "code " << c;
      EXPECT_EQ(std::signbit(got), bool(c & 0x80)) << "code " << c;
    }
  }
  EXPECT_EQ(nans, 6);
  EXPECT_EQ(infs, 2);
  EXPECT_EQ(fp8_e5m2_decode(0x7b), 57344.0f);
  EXPECT_EQ(fp8_e5m2_decode(0x01), std::ldexp(1.0f, -16));
}

TEST(Fp8, EveryDecodedValueRoundTrips) {
  for (int c = 0; c < 256; ++c) {
    const float e4 = fp8_e4m3_decode(uint8_t(c));
    if (!std::isnan(e4)) { EXPECT_EQ(fp8_e4m3_encode(e4), c) << "E4M3 code " << c; }
    const float e5 = fp8_e5m2_decode(uint8_t(c));
    if (!std::isnan(e5)) {
      EXPECT_EQ(fp8_e5m2_encode(e5, true), c) << "E5M2 code " << c;
      EXPECT_EQ(fp8_e5m2_encode(e5, false), c) << "E5M2 code " << c;
    }
  }
}

// Midpoints between neighbours (ties), and one F32 ulp either side of them.
std::vector<float> tie_probes(const Model& model) {
  std::vector<float> probes;
  const auto codes = model.finite_codes();
  for (size_t i = 1; i < codes.size(); ++i) {
    const float mid = float((model.value(codes[i - 1]) + model.value(codes[i])) / 2);
    EXPECT_EQ(double(mid), (model.value(codes[i - 1]) + model.value(codes[i])) / 2);  // exact
    for (float p : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e30f)}) {
      probes.push_back(p);
      probes.push_back(-p);
    }
  }
  // The overflow boundary: half a step above the largest value.
  const double max = model.value(codes.back()), step = max - model.value(codes[codes.size() - 2]);
  const float edge = float(max + step / 2);
  for (float p : {edge, std::nextafter(edge, 0.0f), std::nextafter(edge, 1e30f)}) {
    probes.push_back(p);
    probes.push_back(-p);
  }
  return probes;
}

TEST(Fp8, TiesRoundToEvenAgainstTheModel) {
  for (float x : tie_probes(kE4M3)) EXPECT_EQ(fp8_e4m3_encode(x), reference_e4m3(x)) << "x = " << x;
  for (float x : tie_probes(kE5M2)) {
    EXPECT_EQ(fp8_e5m2_encode(x, true), reference_e5m2(x, true)) << "x = " << x;
    EXPECT_EQ(fp8_e5m2_encode(x, false), reference_e5m2(x, false)) << "x = " << x;
  }
  // Spot checks a reader can verify by hand.
  EXPECT_EQ(fp8_e4m3_encode(1.0625f), 0x38);   // halfway 1 and 1.125 -> 1 (even mantissa)
  EXPECT_EQ(fp8_e4m3_encode(1.1875f), 0x3a);   // halfway 1.125 and 1.25 -> 1.25
  EXPECT_EQ(fp8_e4m3_encode(464.0f), 0x7e);    // halfway 448 and (NaN slot 480) -> 448
  EXPECT_EQ(fp8_e5m2_encode(61440.0f, false), 0x7c);  // halfway 57344 and 65536 -> Inf
  EXPECT_EQ(fp8_e5m2_encode(61439.0f, false), 0x7b);
}

TEST(Fp8, AllBf16PatternsMatchTheModel) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float x = bf16_to_f32(uint16_t(bits));
    const uint8_t e4 = fp8_e4m3_encode(x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(fp8_e4m3_decode(e4))) << std::hex << bits;
      EXPECT_TRUE(std::isnan(fp8_e5m2_decode(fp8_e5m2_encode(x)))) << std::hex << bits;
      continue;
    }
    ASSERT_EQ(e4, reference_e4m3(x)) << "bf16 0x" << std::hex << bits << " = " << x;
    ASSERT_EQ(fp8_e5m2_encode(x, true), reference_e5m2(x, true)) << "bf16 0x" << std::hex << bits;
    ASSERT_EQ(fp8_e5m2_encode(x, false), reference_e5m2(x, false)) << "bf16 0x" << std::hex << bits;
  }
}

TEST(Fp8, RandomF32MatchTheModel) {
  std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<uint32_t> any;
  for (int i = 0; i < 20000; ++i) {
    // Random F32 bit patterns with exponents concentrated around the FP8 ranges.
    uint32_t bits = any(rng);
    const uint32_t exponent = 127 - 20 + (bits >> 23) % 40;
    bits = (bits & 0x807fffffu) | (exponent << 23);
    const float x = std::bit_cast<float>(bits);
    ASSERT_EQ(fp8_e4m3_encode(x), reference_e4m3(x)) << "x = " << x;
    ASSERT_EQ(fp8_e5m2_encode(x, false), reference_e5m2(x, false)) << "x = " << x;
  }
}

TEST(Fp8, SaturationInfinityNaNAndSignedZero) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(fp8_e4m3_encode(1e30f), 0x7e);
  EXPECT_EQ(fp8_e4m3_encode(-1e30f), 0xfe);
  EXPECT_EQ(fp8_e4m3_encode(inf), 0x7e);
  EXPECT_EQ(fp8_e4m3_encode(-inf), 0xfe);
  EXPECT_EQ(fp8_e4m3_encode(nan), 0x7f);
  EXPECT_EQ(fp8_e4m3_encode(-nan), 0xff);
  EXPECT_EQ(fp8_e4m3_encode(-0.0f), 0x80);
  EXPECT_EQ(fp8_e4m3_encode(std::ldexp(1.0f, -11)), 0x00);  // a quarter of the smallest subnormal
  EXPECT_EQ(fp8_e4m3_encode(-std::ldexp(1.0f, -11)), 0x80);
  EXPECT_EQ(fp8_e5m2_encode(1e30f, true), 0x7b);
  EXPECT_EQ(fp8_e5m2_encode(1e30f, false), 0x7c);
  EXPECT_EQ(fp8_e5m2_encode(-1e30f, false), 0xfc);
  EXPECT_EQ(fp8_e5m2_encode(inf, true), 0x7c);
  EXPECT_EQ(fp8_e5m2_encode(-inf, true), 0xfc);
  EXPECT_TRUE(std::isnan(fp8_e5m2_decode(fp8_e5m2_encode(nan))));
  EXPECT_EQ(fp8_e5m2_encode(-0.0f), 0x80);
  EXPECT_EQ(fp8_e5m2_encode(1e-30f), 0x00);
}

}  // namespace
}  // namespace nibble
