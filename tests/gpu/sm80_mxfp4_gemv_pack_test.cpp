// The GEMV's packed layout, checked on the host (runs everywhere, CI included): a model of
// the device decode (PRMT table addresses into the lane-replicated byte table,
// sm80_mxfp4_gemv.h) applied to every packed word must give, at every mma fragment position,
// the weight the layout comment promises; every scale byte must be the block scale of its
// row. Catches layout bugs without a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>

#include "format/e2m1.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "kernels/linear_harness.h"

#if NIBBLE_WITH_CUDA
#include "kernels/cuda/sm80_mxfp4_gemv.h"
#endif

namespace nibble {
namespace {

#if NIBBLE_WITH_CUDA

// PTX prmt.b32 (default mode): byte i of the result is byte sel[4i+2:4i] of {b, a}, or that
// byte's sign replicated when sel bit 4i+3 is set.
uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  const uint64_t pool = uint64_t(a) | uint64_t(b) << 32;
  uint32_t d = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t s = (sel >> (4 * i)) & 0xf;
    uint32_t byte = uint32_t(pool >> (8 * (s & 7))) & 0xff;
    if (s & 8) byte = (byte & 0x80) ? 0xff : 0;
    d |= byte << (8 * i);
  }
  return d;
}

// The device's decode_word: per register p, one PRMT gives the table offset, which must be
// row b (a byte value) = offset / 256 at lane offset 4 * lane; the table's row b holds the
// bf16x2 of b's two codes (here from format/'s E2M1 decode, independent of the device's).
void decode_word(uint32_t w, uint32_t lane, uint32_t (&a)[4]) {
  for (uint32_t p = 0; p < 4; ++p) {
    const uint32_t offset = prmt(w, 4 * lane, 0x5504u | (p << 4));
    ASSERT_LT(offset, kGemvLutBytes);
    ASSERT_EQ(offset % 256, 4 * lane) << "a lane must read its own copy of the table";
    const uint32_t b = offset / 256;
    a[p] = uint32_t(f32_to_bf16(e2m1_decode(b & 0xf))) |
           uint32_t(f32_to_bf16(e2m1_decode(b >> 4))) << 16;
  }
}

TEST(Sm80Mxfp4GemvPack, DecodedFragmentsAreTheWeights) {
  for (auto [n, k] : {std::pair<size_t, size_t>{37, 200}, {64, 2880}, {1, 32}, {33, 172}}) {
    const uint64_t seed = test::linear_test_seed();
    SCOPED_TRACE("N=" + std::to_string(n) + " K=" + std::to_string(k) + " seed " +
                 std::to_string(seed));
    const test::RandomLinear r = test::make_random_linear({n, k, 1}, seed);
    const GemvPacked p = mxfp4_gemv_pack(r.weights());
    ASSERT_EQ(p.n_pad % 32, 0u);
    ASSERT_GE(p.n_pad, n);
    ASSERT_EQ(p.k_chunks, (k + 63) / 64);
    const size_t bpr = mxfp4_blocks_per_row(k);
    std::vector<float> w(n * k);
    mxfp4_dequantize(r.blocks.data(), r.scales.data(), n, k, w.data(), DType::F32);
    // Unscaled element value at (row, k), 0 in the padding.
    const auto element = [&](size_t row, size_t kk) -> float {
      if (row >= n || kk >= k) return 0.0f;
      const uint8_t byte = r.blocks[row * bpr * 16 + kk / 2];
      return e2m1_decode(kk % 2 ? byte >> 4 : byte & 0xf);
    };
    size_t bad = 0;
    for (size_t tile = 0; tile < p.n_pad / 16; ++tile)
      for (size_t chunk = 0; chunk < p.k_chunks; ++chunk)
        for (size_t lane = 0; lane < 32; ++lane) {
          const size_t g = lane / 4, t = lane % 4, at = tile * p.k_chunks + chunk;
          for (size_t j = 0; j < 2; ++j) {
            for (size_t h = 0; h < 2; ++h) {
              uint32_t word;
              std::memcpy(&word, &p.weights[(at * 32 + lane) * 16 + 4 * (2 * j + h)], 4);
              uint32_t a[4];
              decode_word(word, uint32_t(lane), a);
              const size_t kb = chunk * 64 + 32 * j + 8 * t + 4 * h;
              const size_t r0 = tile * 16 + g, r1 = r0 + 8;
              const float want[8] = {element(r0, kb),     element(r0, kb + 1), element(r1, kb),
                                     element(r1, kb + 1), element(r0, kb + 2), element(r0, kb + 3),
                                     element(r1, kb + 2), element(r1, kb + 3)};
              for (size_t e = 0; e < 8; ++e) {
                const float got = bf16_to_f32(uint16_t(a[e / 2] >> (16 * (e % 2))));
                // Bit-exact, the sign of zero included.
                if (std::memcmp(&got, &want[e], 4) != 0 && bad++ < 5)
                  ADD_FAILURE() << "tile " << tile << " chunk " << chunk << " lane " << lane
                                << " j " << j << " h " << h << " element " << e << ": decoded "
                                << got << ", weight " << want[e];
              }
            }
            for (size_t half = 0; half < 2; ++half) {  // scale bytes of rows g, g + 8
              const size_t row = tile * 16 + g + 8 * half, block = 2 * chunk + j;
              const uint8_t want = row < n && block < bpr ? r.scales[row * bpr + block] : 127;
              const uint8_t got = p.scales[(at * 8 + g) * 4 + 2 * half + j];
              if (got != want && bad++ < 5)
                ADD_FAILURE() << "scale of row " << row << " block " << block << ": " << int(got)
                              << ", want " << int(want);
            }
          }
        }
    EXPECT_EQ(bad, 0u);
    EXPECT_FALSE(p.special_scales);
  }
}

#else

TEST(Sm80Mxfp4GemvPack, NotBuilt) { GTEST_SKIP() << "built without CUDA (no nvcc found)"; }

#endif

}  // namespace
}  // namespace nibble
