// BF16 and FP16 <-> F32 conversions, bit-exact and portable (no compiler half types needed).
// F32 -> 16-bit rounds to nearest, ties to even; NaN stays NaN (quiet), Inf stays Inf.
#pragma once

#include <bit>
#include <cstdint>

namespace nibble {

inline float bf16_to_f32(uint16_t bits) { return std::bit_cast<float>(uint32_t(bits) << 16); }

inline uint16_t f32_to_bf16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x0040u);  // quiet NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t((bits + rounding) >> 16);
}

float fp16_to_f32(uint16_t bits);
uint16_t f32_to_fp16(float value);

}  // namespace nibble
