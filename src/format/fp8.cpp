#include "format/fp8.h"

#include <array>
#include <bit>
#include <cmath>
#include <limits>

namespace nibble {

namespace {

// One FP8 layout: 1 sign bit, `kExponentBits`, `kMantissaBits`, exponent bias.
template <int kExponentBits, int kMantissaBits, int kBias>
struct Fp8Layout {
  static constexpr int kMantissaShift = 23 - kMantissaBits;  // F32 mantissa bits dropped
  // Smallest normal exponent is 1 - bias; subnormals are multiples of 2^(1 - bias - mbits).
  static constexpr int kSubnormalScale = kBias - 1 + kMantissaBits;
  static constexpr float kMinNormal = 1.0f / float(1 << (kBias - 1));

  // |value| < min normal: the code is the nearest multiple of the subnormal step, ties to even
  // (nearbyint uses the default rounding mode, round-to-nearest-even). A result of 2^mbits is
  // exactly the code of the smallest normal, so the carry needs no special case.
  static uint8_t encode_subnormal(float magnitude) {
    return uint8_t(std::nearbyint(std::ldexp(magnitude, kSubnormalScale)));
  }

  // |value| >= min normal (an F32 normal): round the F32 mantissa to mbits bits, ties to even,
  // letting a carry run into the exponent; then rebias. May exceed the largest finite code
  // (the caller saturates).
  static uint32_t encode_normal(float magnitude) {
    uint32_t bits = std::bit_cast<uint32_t>(magnitude);
    const uint32_t odd = (bits >> kMantissaShift) & 1u;
    bits += (1u << (kMantissaShift - 1)) - 1u + odd;
    bits >>= kMantissaShift;
    return bits - (uint32_t(127 - kBias) << kMantissaBits);
  }

  static float decode_finite(uint8_t code) {
    const int exponent = (code >> kMantissaBits) & ((1 << kExponentBits) - 1);
    const int mantissa = code & ((1 << kMantissaBits) - 1);
    const float magnitude =
        exponent == 0 ? std::ldexp(float(mantissa), -kSubnormalScale)
                      : std::ldexp(float((1 << kMantissaBits) | mantissa), exponent - kBias - kMantissaBits);
    return (code & 0x80) ? -magnitude : magnitude;
  }
};

using E4M3 = Fp8Layout<4, 3, 7>;
using E5M2 = Fp8Layout<5, 2, 15>;

constexpr uint8_t kE4M3MaxCode = 0x7e;   // 448
constexpr uint8_t kE4M3NaNCode = 0x7f;   // S.1111.111
constexpr uint8_t kE5M2MaxCode = 0x7b;   // 57344
constexpr uint8_t kE5M2InfCode = 0x7c;   // S.11111.00
constexpr uint8_t kE5M2NaNCode = 0x7e;   // S.11111.10, the quiet NaN

std::array<float, 256> make_e4m3_table() {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c)
    t[c] = (c & 0x7f) == kE4M3NaNCode ? std::numeric_limits<float>::quiet_NaN()
                                      : E4M3::decode_finite(uint8_t(c));
  return t;
}

std::array<float, 256> make_e5m2_table() {
  std::array<float, 256> t{};
  for (int c = 0; c < 256; ++c) {
    const int magnitude = c & 0x7f;
    if (magnitude == kE5M2InfCode)
      t[c] = (c & 0x80) ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
    else if (magnitude > kE5M2InfCode)
      t[c] = std::numeric_limits<float>::quiet_NaN();
    else
      t[c] = E5M2::decode_finite(uint8_t(c));
  }
  return t;
}

const std::array<float, 256> kE4M3Table = make_e4m3_table();
const std::array<float, 256> kE5M2Table = make_e5m2_table();

}  // namespace

float fp8_e4m3_decode(uint8_t code) { return kE4M3Table[code]; }
float fp8_e5m2_decode(uint8_t code) { return kE5M2Table[code]; }

uint8_t fp8_e4m3_encode(float value) {
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  if (std::isnan(value)) return sign | kE4M3NaNCode;
  const float magnitude = std::fabs(value);
  if (magnitude < E4M3::kMinNormal) return sign | E4M3::encode_subnormal(magnitude);
  if (std::isinf(magnitude)) return sign | kE4M3MaxCode;
  const uint32_t code = E4M3::encode_normal(magnitude);
  return sign | uint8_t(code > kE4M3MaxCode ? kE4M3MaxCode : code);
}

uint8_t fp8_e5m2_encode(float value, bool saturate) {
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  if (std::isnan(value)) return sign | kE5M2NaNCode;
  const float magnitude = std::fabs(value);
  if (magnitude < E5M2::kMinNormal) return sign | E5M2::encode_subnormal(magnitude);
  if (std::isinf(magnitude)) return sign | kE5M2InfCode;
  const uint32_t code = E5M2::encode_normal(magnitude);
  if (code >= kE5M2InfCode) return sign | (saturate ? kE5M2MaxCode : kE5M2InfCode);
  return sign | uint8_t(code);
}

}  // namespace nibble
