// E2M1 element codec against an independent double-precision model written here.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "format/e2m1.h"

namespace nibble {
namespace {

// Independent model: the representable magnitudes, nearest by distance, ties to the even code.
uint8_t reference_encode(double x) {
  static const double kMagnitudes[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  const double a = std::fabs(x);
  int best = 0;
  for (int c = 1; c < 8; ++c) {
    const double d = std::fabs(kMagnitudes[c] - a), db = std::fabs(kMagnitudes[best] - a);
    if (d < db || (d == db && c % 2 == 0)) best = c;
  }
  return uint8_t((std::signbit(x) ? 8 : 0) | best);
}

TEST(E2M1, AllSixteenCodesDecodeToTheSpecValues) {
  const double expected[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
  for (int code = 0; code < 16; ++code) {
    const double magnitude = expected[code & 7];
    EXPECT_EQ(e2m1_decode(uint8_t(code)), code & 8 ? -magnitude : magnitude) << "code " << code;
    EXPECT_EQ(std::signbit(e2m1_decode(uint8_t(code))), bool(code & 8)) << "code " << code;
    // Every code round-trips through the encoder.
    EXPECT_EQ(e2m1_encode(e2m1_decode(uint8_t(code))), code) << "code " << code;
  }
}

TEST(E2M1, TiesRoundToEvenCode) {
  EXPECT_EQ(e2m1_encode(0.25f), 0);
  EXPECT_EQ(e2m1_encode(0.75f), 2);
  EXPECT_EQ(e2m1_encode(1.25f), 2);
  EXPECT_EQ(e2m1_encode(1.75f), 4);
  EXPECT_EQ(e2m1_encode(2.5f), 4);
  EXPECT_EQ(e2m1_encode(3.5f), 6);
  EXPECT_EQ(e2m1_encode(5.0f), 6);
  EXPECT_EQ(e2m1_encode(-5.0f), 14);
}

TEST(E2M1, SaturatesAndKeepsSignedZero) {
  EXPECT_EQ(e2m1_encode(6.5f), 7);
  EXPECT_EQ(e2m1_encode(1e30f), 7);
  EXPECT_EQ(e2m1_encode(std::numeric_limits<float>::infinity()), 7);
  EXPECT_EQ(e2m1_encode(-std::numeric_limits<float>::infinity()), 15);
  EXPECT_EQ(e2m1_encode(0.0f), 0);
  EXPECT_EQ(e2m1_encode(-0.0f), 8);
  EXPECT_EQ(e2m1_encode(-1e-30f), 8);
}

TEST(E2M1, DenseSweepMatchesIndependentModel) {
  // Every multiple of 1/256 in [-8, 8], which hits every midpoint exactly.
  for (int i = -2048; i <= 2048; ++i) {
    const float x = float(i) / 256.0f;
    EXPECT_EQ(e2m1_encode(x), reference_encode(x)) << "x = " << x;
  }
}

}  // namespace
}  // namespace nibble
