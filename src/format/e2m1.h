// E2M1 (FP4) element codec of OCP Microscaling Formats v1.0.
//
//   bit  3    2 1    0
//       [s] [e e]  [m]      exponent bias 1, no Inf, no NaN
//
//   code : 0   1    2    3    4    5    6    7     (8..15: the same, negative)
//   value: 0  0.5  1.0  1.5  2.0  3.0  4.0  6.0
//
// Encoding rounds to nearest, ties to even code (e.g. 0.25 -> 0, 0.75 -> 1.0, 5.0 -> 4.0),
// saturates to +-6 (Inf too), and keeps the sign of zero (-0.0 -> code 8). NaN has no code:
// the block codec (mxfp4.h) marks the whole block NaN through its scale instead. ml_dtypes'
// float4_e2m1fn rounds and saturates the same way, Inf included (tests/format/golden_test.cpp).
#pragma once

#include <cmath>
#include <cstdint>

namespace nibble {

inline constexpr float kE2M1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                          -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};
inline constexpr float kE2M1Max = 6.0f;
// log2 of the largest power of two the element format holds (4.0): the OCP "emax_elem".
inline constexpr int kE2M1MaxExponent = 2;

inline float e2m1_decode(uint8_t code) { return kE2M1Values[code & 0xf]; }

// Caller guarantees value is not NaN.
inline uint8_t e2m1_encode(float value) {
  const uint8_t sign = std::signbit(value) ? 8 : 0;
  const float a = std::fabs(value);
  // Midpoints between neighbouring magnitudes; at a tie the even code wins, which is why
  // some comparisons are <= and others <.
  uint8_t code;
  if (a <= 0.25f) code = 0;
  else if (a < 0.75f) code = 1;
  else if (a <= 1.25f) code = 2;
  else if (a < 1.75f) code = 3;
  else if (a <= 2.5f) code = 4;
  else if (a < 3.5f) code = 5;
  else if (a <= 5.0f) code = 6;
  else code = 7;
  return sign | code;
}

}  // namespace nibble
