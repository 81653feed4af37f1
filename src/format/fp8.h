// FP8 codecs (OCP 8-bit floating point): E4M3FN and E5M2.
//   E4M3FN: bias 7, no Inf, NaN = S.1111.111, max 448, min subnormal 2^-9.
//   E5M2:   bias 15, IEEE-like: Inf = S.11111.00, NaN = S.11111.xx (xx != 0), max 57344,
//           min subnormal 2^-16.
// Encoding rounds to nearest, ties to even. Out-of-range finite values: E4M3FN saturates to
// +-448 (the convention of activation quantizers; there is no Inf to go to); E5M2 saturates
// to +-57344 when `saturate` is true, else becomes +-Inf as IEEE rounding would (from 61440,
// the midpoint to the next power of two, up). Infinite inputs: E4M3FN gives +-448 (like CUDA's
// __NV_SATFINITE), E5M2 keeps +-Inf (it is representable). NaN stays NaN with its sign
// (E4M3FN S.1111.111, E5M2 S.11111.10). Signed zero is kept (-0 -> 0x80).
//
// Where other implementations differ (tests/format/golden_test.cpp checks the in-range values
// against ml_dtypes and PyTorch): ml_dtypes and PyTorch's float8_e4m3fn cast turn values past
// 464 and Inf into NaN, and their E5M2 cast never saturates; in range all agree bit for bit.
#pragma once

#include <cstdint>

namespace nibble {

float fp8_e4m3_decode(uint8_t code);
uint8_t fp8_e4m3_encode(float value);
float fp8_e5m2_decode(uint8_t code);
uint8_t fp8_e5m2_encode(float value, bool saturate = true);

}  // namespace nibble
