// The quantizer's inner loop: one MXFP4 block quantized, decoded and measured in one pass.
// Bit-identical to the format codec (mxfp4_quantize_block, which stays the reference; the unit
// test compares them on every tie, subnormal and saturating case), but written so that the
// compiler vectorizes it: the E2M1 code is a count of thresholds passed instead of a branch
// chain, and the division by the shared scale is a multiplication by an exact power of two
// (both round once, so the results are the same as ldexp's).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "format/e2m1.h"
#include "format/e8m0.h"
#include "format/mxfp4.h"

namespace nibble {

struct BlockError {
  double error = 0, signal = 0, max_abs = 0;  // sum (deq - x)^2, sum x^2, max |deq - x|
};

// Quantizes 32 finite-or-not values into `packed` (16 bytes) and returns the scale code;
// kE8M0NaN (and zeroed elements) when a value is Inf or NaN, as the codec does. Adds the
// block's error to `err` (not for a NaN block).
inline uint8_t quantize_block_measured(const float* values, ScaleRule rule, uint8_t* packed, BlockError& err) {
  constexpr size_t n = kMxfp4BlockSize;
  float amax = 0.0f;
  bool finite = true;
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(values[i]);
    finite &= a <= 3.4028235e38f;  // false for Inf and NaN
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    std::memset(packed, 0, kMxfp4BlockBytes);
    return kE8M0NaN;
  }
  const int exponent = mxfp4_shared_exponent(amax, rule);
  const float inverse = std::ldexp(1.0f, -exponent);  // exact: 2^-127 .. 2^127 are all floats
  uint8_t codes[n];
  // The error is measured in units of the block scale (a = |x| / 2^e lies in [0, 8), so the
  // float sums can neither overflow nor underflow), then scaled back in double.
  float e = 0, s = 0, m = 0;
  for (size_t i = 0; i < n; ++i) {
    const float a = std::fabs(values[i]) * inverse;
    // Thresholds are the midpoints of e2m1.h; <= / < choose the even code at a tie.
    const uint8_t magnitude = uint8_t((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) +
                                      (a >= 3.5f) + (a > 5.0f));
    codes[i] = uint8_t(magnitude | (std::signbit(values[i]) ? 8 : 0));
    const float d = kE2M1Values[magnitude] - a;
    e += d * d;
    s += a * a;
    m = std::fabs(d) > m ? std::fabs(d) : m;
  }
  for (size_t j = 0; j < kMxfp4BlockBytes; ++j) packed[j] = uint8_t(codes[2 * j] | (codes[2 * j + 1] << 4));
  const double unit = std::ldexp(1.0, exponent);
  err.error += double(e) * unit * unit;
  err.signal += double(s) * unit * unit;
  err.max_abs = std::max(err.max_abs, double(m) * unit);
  return e8m0_encode_exponent(exponent);
}

}  // namespace nibble
