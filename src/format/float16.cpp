#include "format/float16.h"

#include <cmath>

namespace nibble {

float fp16_to_f32(uint16_t bits) {
  const uint32_t sign = uint32_t(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu;
  const uint32_t mantissa = bits & 0x3ffu;
  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  // Subnormal (or zero): mantissa * 2^-24, exact in F32.
  const float magnitude = std::ldexp(float(mantissa), -24);
  return sign ? -magnitude : magnitude;
}

uint16_t f32_to_fp16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7e00u;  // quiet NaN
  if (abs_bits >= 0x477ff000u) return sign | 0x7c00u;  // rounds past 65504: Inf
  if (abs_bits >= 0x38800000u) {                       // normal in FP16 (>= 2^-14)
    const uint32_t rounded = abs_bits + 0xfffu + ((abs_bits >> 13) & 1u);
    return sign | uint16_t((rounded - 0x38000000u) >> 13);
  }
  // Subnormal range: round |value| / 2^-24 to the nearest integer, ties to even.
  const float scaled = std::bit_cast<float>(abs_bits) * 16777216.0f;  // exact: power of two
  return sign | uint16_t(std::nearbyint(scaled));
}

}  // namespace nibble
