// E8M0 shared-scale codec of OCP Microscaling Formats v1.0: an unsigned biased exponent.
//   code 0..254 -> 2^(code - 127)   (2^-127 .. 2^127, every one exact in F32 as a subnormal
//                                    or normal number)
//   code 255    -> NaN
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace nibble {

inline constexpr int kE8M0Bias = 127;
inline constexpr uint8_t kE8M0NaN = 0xff;
inline constexpr int kE8M0MinExponent = -127;
inline constexpr int kE8M0MaxExponent = 127;

inline float e8m0_decode(uint8_t code) {
  if (code == kE8M0NaN) return std::numeric_limits<float>::quiet_NaN();
  if (code == 0) return std::bit_cast<float>(0x00400000u);  // 2^-127, an F32 subnormal
  return std::bit_cast<float>(uint32_t(code) << 23);
}

// exponent must lie in [kE8M0MinExponent, kE8M0MaxExponent].
inline uint8_t e8m0_encode_exponent(int exponent) { return uint8_t(exponent + kE8M0Bias); }

}  // namespace nibble
