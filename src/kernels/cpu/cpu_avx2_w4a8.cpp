// cpu_avx2_w4a8 and cpu_vnni_w4a8: see cpu_avx2_w4a8.h for the arithmetic, the prepared layout
// and the work split.
//
// Only the functions marked NIBBLE_AVX2 use AVX2 instructions (and vpdpbusd, in inline assembly,
// where the kernel is cpu_vnni_w4a8); everything else is baseline x86-64, so both kernel
// objects can be registered and asked is_supported() on any x86 CPU.
#include "kernels/cpu/cpu_avx2_w4a8.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/e2m1.h"
#include "format/float16.h"
#include "format/mxfp4.h"

#if defined(__x86_64__)
// GCC 12's AVX-512 intrinsics start from _mm512_undefined_*() and warn where they are inlined
// (GCC bug 105593, fixed in 13): the warning is the header's, not this file's.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#define NIBBLE_AVX2 __attribute__((target("avx2,fma")))
#define NIBBLE_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

namespace nibble {
namespace {

constexpr size_t kPanelRows = 8;     // one int32 lane per row in a 256-bit vector
constexpr size_t kCodeBytes = 128;   // per (panel, block): 8 rows x 32 codes
constexpr size_t kChunkRows = 8;     // activation rows multiplied per decoded load
constexpr int kWeightOffset = 12;    // 2 * E2M1 + 12 is unsigned: 0..24
// Codes of the panels a group works on while every chunk of 8 activation rows passes over
// them: half of a Zen 3 / Zen 4 / Skylake-SP L2 (512 KB - 2 MB), so they are read from
// memory once.
constexpr size_t kGroupCodeBytes = 256 * 1024;
// Software prefetch distance in blocks of a panel (128 code bytes each): 2 KB ahead.
constexpr size_t kPrefetchBlocks = 16;

// 2 * E2M1(code) + 12 for the 16 codes: the vpshufb table of the decode.
constexpr uint8_t offset_code(size_t code) { return uint8_t(int(2 * kE2M1Values[code]) + kWeightOffset); }
// Those 16 bytes, as every vpshufb lane of the decode reads them.
alignas(16) constexpr uint8_t kOffsetCodes[16] = {
    offset_code(0),  offset_code(1),  offset_code(2),  offset_code(3),
    offset_code(4),  offset_code(5),  offset_code(6),  offset_code(7),
    offset_code(8),  offset_code(9),  offset_code(10), offset_code(11),
    offset_code(12), offset_code(13), offset_code(14), offset_code(15)};

struct W4a8Weights final : PreparedWeights {
  size_t n = 0, k = 0, panels = 0, blocks = 0;
  std::vector<uint8_t> code_storage;  // codes [panel][block][128] from the first 64-byte boundary
  uint8_t* codes = nullptr;
  std::vector<uint8_t> scales;  // [panel][block][8]
  std::vector<float> bias;
  size_t bytes() const override {
    return code_storage.size() + scales.size() + bias.size() * sizeof(float);
  }
};

// One call, as the AVX2 code sees it.
struct Problem {
  const uint8_t* codes = nullptr;
  const uint8_t* scales = nullptr;
  size_t panels = 0, blocks = 0, n = 0, m = 0;
  const int8_t* act_codes = nullptr;  // [m][blocks * 32], zero past K
  const float* act_scales = nullptr;  // [m][blocks]: amax / 127 / 2 (the 2 of 2 * E2M1)
  const int32_t* act_offsets = nullptr;  // [m][blocks]: 12 * sum of the block's codes
  const float* bias = nullptr;
  void* out = nullptr;
  OutputFormat out_format = OutputFormat::f32;
};

void store_output(const Problem& p, size_t index, float value) {
  if (p.out_format == OutputFormat::f32)
    static_cast<float*>(p.out)[index] = value;
  else
    static_cast<uint16_t*>(p.out)[index] = f32_to_bf16(value);
}

#if defined(__x86_64__)

// 2^(s - 127) for 8 E8M0 codes, exactly as e8m0_decode: 0 -> 2^-127 (subnormal), 255 -> NaN.
NIBBLE_AVX2 inline __m256 decode_scales(const uint8_t* codes) {
  const __m256i s = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes)));
  __m256i bits = _mm256_slli_epi32(s, 23);
  bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x00400000),
                            _mm256_cmpeq_epi32(s, _mm256_setzero_si256()));
  bits = _mm256_blendv_epi8(bits, _mm256_set1_epi32(0x7fc00000),
                            _mm256_cmpeq_epi32(s, _mm256_set1_epi32(255)));
  return _mm256_castsi256_ps(bits);
}

NIBBLE_AVX2 inline __m256i broadcast_quad(const int8_t* p) {
  int32_t quad;
  std::memcpy(&quad, p, sizeof quad);
  return _mm256_set1_epi32(quad);
}

// How a block's 8 x 32 byte products are summed into int32 lanes: vpmaddubsw + vpmaddwd
// (AVX2), or vpdpbusd, one instruction per 4 bytes a lane (AVX-VNNI's VEX form, or AVX512-VNNI's
// EVEX form on 256-bit registers). Both sums are exact, so the kernels agree to the bit.
enum class DotInstr { maddubs, vpdpbusd_vex, vpdpbusd_evex };

// acc + the 4-byte dot products of u8 (unsigned) and s8 (signed), per int32 lane. Inline
// assembly, so that this file needs no VNNI target: the kernel calls it only where the CPU has it.
template <DotInstr kDot>
NIBBLE_AVX2 inline __m256i dpbusd(__m256i acc, __m256i u8, __m256i s8) {
  if constexpr (kDot == DotInstr::vpdpbusd_vex)
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u8), "x"(s8));
  else
    asm("vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(u8), "x"(s8));
  return acc;
}

// The exact int32 dot products of a block's 8 rows (lo[j]: quad j, hi[j]: quad j + 4, offset
// codes) with the activation codes a[0..31].
template <DotInstr kDot>
NIBBLE_AVX2 inline __m256i block_dot(const __m256i* lo, const __m256i* hi, const int8_t* a) {
  if constexpr (kDot == DotInstr::maddubs) {
    const __m256i ones = _mm256_set1_epi16(1);
    // Four quads per 16-bit sum: |4 * 2 * 24 * 127| = 24384 < 32767, no saturation.
    __m256i s0 = _mm256_maddubs_epi16(lo[0], broadcast_quad(a + 0));
    s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(lo[1], broadcast_quad(a + 4)));
    s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(lo[2], broadcast_quad(a + 8)));
    s0 = _mm256_add_epi16(s0, _mm256_maddubs_epi16(lo[3], broadcast_quad(a + 12)));
    __m256i s1 = _mm256_maddubs_epi16(hi[0], broadcast_quad(a + 16));
    s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(hi[1], broadcast_quad(a + 20)));
    s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(hi[2], broadcast_quad(a + 24)));
    s1 = _mm256_add_epi16(s1, _mm256_maddubs_epi16(hi[3], broadcast_quad(a + 28)));
    return _mm256_add_epi32(_mm256_madd_epi16(s0, ones), _mm256_madd_epi16(s1, ones));
  } else {
    // Four chains, so that a row's 8 vpdpbusd are 2 deep (5 cycles each).
    __m256i s[4];
    for (size_t j = 0; j < 4; ++j) s[j] = dpbusd<kDot>(_mm256_setzero_si256(), lo[j], broadcast_quad(a + 4 * j));
    for (size_t j = 0; j < 4; ++j) s[j] = dpbusd<kDot>(s[j], hi[j], broadcast_quad(a + 16 + 4 * j));
    return _mm256_add_epi32(_mm256_add_epi32(s[0], s[1]), _mm256_add_epi32(s[2], s[3]));
  }
}

// acc[m] = the F32 sums of panel `panel`'s 8 rows against activation rows m0 .. m0 + MM - 1.
template <size_t MM, DotInstr kDot>
NIBBLE_AVX2 void panel_dot(const Problem& p, size_t panel, size_t m0, __m256* acc) {
  const __m256i table =
      _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(kOffsetCodes)));
  const __m256i low_nibbles = _mm256_set1_epi8(0x0f);
  const uint8_t* codes = p.codes + panel * p.blocks * kCodeBytes;
  const uint8_t* scales = p.scales + panel * p.blocks * kPanelRows;
  const size_t stride = p.blocks * kMxfp4BlockSize;
  for (size_t m = 0; m < MM; ++m) acc[m] = _mm256_setzero_ps();

  for (size_t b = 0; b < p.blocks; ++b) {
    // The hardware prefetcher alone leaves the loads exposed once a block's math takes as
    // long as its memory time (docs/perf.md: 20-30 % at M = 1..8, cold); past the panel's
    // end this reaches into the next panel, which follows in memory.
    _mm_prefetch(reinterpret_cast<const char*>(codes + (b + kPrefetchBlocks) * kCodeBytes), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(codes + (b + kPrefetchBlocks) * kCodeBytes + 64), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(scales + (b + kPrefetchBlocks) * kPanelRows), _MM_HINT_T0);
    __m256i lo[4], hi[4];  // lo[j]: quad j, hi[j]: quad j + 4, as offset bytes
    for (size_t j = 0; j < 4; ++j) {
      const __m256i x = _mm256_load_si256(reinterpret_cast<const __m256i*>(codes + b * kCodeBytes + 32 * j));
      lo[j] = _mm256_shuffle_epi8(table, _mm256_and_si256(x, low_nibbles));
      hi[j] = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(x, 4), low_nibbles));
    }
    const __m256 w_scale = decode_scales(scales + b * kPanelRows);
    for (size_t m = 0; m < MM; ++m) {
      const size_t row = m0 + m;
      const int8_t* a = p.act_codes + row * stride + b * kMxfp4BlockSize;
      const __m256i dot = _mm256_sub_epi32(block_dot<kDot>(lo, hi, a),
                                           _mm256_set1_epi32(p.act_offsets[row * p.blocks + b]));
      const __m256 scale = _mm256_mul_ps(w_scale, _mm256_set1_ps(p.act_scales[row * p.blocks + b]));
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), scale, acc[m]);
    }
  }
}

// The 512-bit form (cpu_vnni512_w4a8): two panels per register, rows 8 p .. 8 p + 15, each
// panel's 32-byte load in one half; one vpdpbusd then does the work of two 256-bit ones, and
// the activation broadcasts, the offset, the scale and the FMA per row are shared by 16 rows.
// Per lane the same integer sums and the same F32 operations: the 256-bit kernels' bits.
NIBBLE_AVX512 inline __m512i load_panel_pair(const uint8_t* first, const uint8_t* second) {
  return _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_load_si256(reinterpret_cast<const __m256i*>(first))),
      _mm256_load_si256(reinterpret_cast<const __m256i*>(second)), 1);
}

// decode_scales for 16 E8M0 codes, 8 of each panel.
NIBBLE_AVX512 inline __m512 decode_scales_pair(const uint8_t* first, const uint8_t* second) {
  const __m128i codes = _mm_unpacklo_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(first)),
                                           _mm_loadl_epi64(reinterpret_cast<const __m128i*>(second)));
  const __m512i s = _mm512_cvtepu8_epi32(codes);
  __m512i bits = _mm512_slli_epi32(s, 23);
  bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(s, _mm512_setzero_si512()),
                               _mm512_set1_epi32(0x00400000));
  bits = _mm512_mask_mov_epi32(bits, _mm512_cmpeq_epi32_mask(s, _mm512_set1_epi32(255)),
                               _mm512_set1_epi32(0x7fc00000));
  return _mm512_castsi512_ps(bits);
}

NIBBLE_AVX512 inline __m512i broadcast_quad512(const int8_t* p) {
  int32_t quad;
  std::memcpy(&quad, p, sizeof quad);
  return _mm512_set1_epi32(quad);
}

// acc[m] = the F32 sums of panels `panel` and `panel` + 1 (16 rows) against activation rows
// m0 .. m0 + MM - 1; block_dot's four chains.
template <size_t MM>
NIBBLE_AVX512 void panel_pair_dot(const Problem& p, size_t panel, size_t m0, __m512* acc) {
  const __m512i table =
      _mm512_broadcast_i32x4(_mm_load_si128(reinterpret_cast<const __m128i*>(kOffsetCodes)));
  const __m512i low_nibbles = _mm512_set1_epi8(0x0f);
  const uint8_t* codes = p.codes + panel * p.blocks * kCodeBytes;
  const uint8_t* codes2 = codes + p.blocks * kCodeBytes;
  const uint8_t* scales = p.scales + panel * p.blocks * kPanelRows;
  const uint8_t* scales2 = scales + p.blocks * kPanelRows;
  const size_t stride = p.blocks * kMxfp4BlockSize;
  for (size_t m = 0; m < MM; ++m) acc[m] = _mm512_setzero_ps();

  for (size_t b = 0; b < p.blocks; ++b) {
    // Two streams, each running into the next pair near its end: the second panel's into panel
    // + 2 (the next pair's first), the first panel's jumped to panel + 3 (the next pair's
    // second), so that both streams of the next pair start prefetched.
    const size_t ahead = b + kPrefetchBlocks, jump = ahead < p.blocks ? 0 : 2 * p.blocks;
    for (const uint8_t* c : {codes + jump * kCodeBytes, codes2}) {
      _mm_prefetch(reinterpret_cast<const char*>(c + ahead * kCodeBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + ahead * kCodeBytes + 64), _MM_HINT_T0);
    }
    _mm_prefetch(reinterpret_cast<const char*>(scales + (jump + ahead) * kPanelRows), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(scales2 + ahead * kPanelRows), _MM_HINT_T0);
    __m512i lo[4], hi[4];
    for (size_t j = 0; j < 4; ++j) {
      const __m512i x = load_panel_pair(codes + b * kCodeBytes + 32 * j, codes2 + b * kCodeBytes + 32 * j);
      lo[j] = _mm512_shuffle_epi8(table, _mm512_and_si512(x, low_nibbles));
      hi[j] = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(x, 4), low_nibbles));
    }
    const __m512 w_scale = decode_scales_pair(scales + b * kPanelRows, scales2 + b * kPanelRows);
    for (size_t m = 0; m < MM; ++m) {
      const size_t row = m0 + m;
      const int8_t* a = p.act_codes + row * stride + b * kMxfp4BlockSize;
      __m512i s[4];
      for (size_t j = 0; j < 4; ++j)
        s[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo[j], broadcast_quad512(a + 4 * j));
      for (size_t j = 0; j < 4; ++j) s[j] = _mm512_dpbusd_epi32(s[j], hi[j], broadcast_quad512(a + 16 + 4 * j));
      const __m512i sum = _mm512_add_epi32(_mm512_add_epi32(s[0], s[1]), _mm512_add_epi32(s[2], s[3]));
      const __m512i dot = _mm512_sub_epi32(sum, _mm512_set1_epi32(p.act_offsets[row * p.blocks + b]));
      const __m512 scale = _mm512_mul_ps(w_scale, _mm512_set1_ps(p.act_scales[row * p.blocks + b]));
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[m]);
    }
  }
}

// Bias, output format and the ragged last panel.
NIBBLE_AVX2 void write_panel(const Problem& p, size_t panel, size_t m0, size_t mm, const __m256* acc) {
  const size_t first = panel * kPanelRows;
  const size_t rows = std::min(kPanelRows, p.n - first);
  alignas(32) float sums[kPanelRows];
  for (size_t m = 0; m < mm; ++m) {
    _mm256_store_ps(sums, acc[m]);
    for (size_t r = 0; r < rows; ++r)
      store_output(p, (m0 + m) * p.n + first + r, sums[r] + (p.bias ? p.bias[first + r] : 0.0f));
  }
}

template <size_t MM, DotInstr kDot>
NIBBLE_AVX2 void panels_times_chunk(const Problem& p, size_t first_panel, size_t end_panel, size_t m0) {
  __m256 acc[MM];
  for (size_t panel = first_panel; panel < end_panel; ++panel) {
    if (panel * kPanelRows >= p.n) break;
    panel_dot<MM, kDot>(p, panel, m0, acc);
    write_panel(p, panel, m0, MM, acc);
  }
}

// Panel pairs where the range has two panels left, the 256-bit EVEX form for a lone last one.
template <size_t MM>
NIBBLE_AVX512 void panel_pairs_times_chunk(const Problem& p, size_t first_panel, size_t end_panel,
                                           size_t m0) {
  size_t panel = first_panel;
  for (; panel + 1 < end_panel; panel += 2) {  // end_panel <= panels: both panels hold rows
    __m512 acc[MM];
    panel_pair_dot<MM>(p, panel, m0, acc);
    __m256 halves[MM];
    for (size_t m = 0; m < MM; ++m) halves[m] = _mm512_castps512_ps256(acc[m]);
    write_panel(p, panel, m0, MM, halves);
    for (size_t m = 0; m < MM; ++m)
      halves[m] = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc[m]), 1));
    write_panel(p, panel + 1, m0, MM, halves);
  }
  if (panel < end_panel) panels_times_chunk<MM, DotInstr::vpdpbusd_evex>(p, panel, panel + 1, m0);
}

// One chunk of MM activation rows over panels [first_panel, end_panel): the 512-bit form for
// kWide, else the 256-bit kernel of kDot.
template <size_t MM, DotInstr kDot, bool kWide>
void chunk_over_panels(const Problem& p, size_t first_panel, size_t end_panel, size_t m0) {
  if constexpr (kWide)
    panel_pairs_times_chunk<MM>(p, first_panel, end_panel, m0);
  else
    panels_times_chunk<MM, kDot>(p, first_panel, end_panel, m0);
}

// Units [begin, end) of (panel group, chunk of 8 activation rows), group-major: consecutive
// units of one thread reuse the group's codes from L2.
template <DotInstr kDot, bool kWide>
void run_units(const Problem& p, size_t group_panels, size_t chunks, size_t begin, size_t end) {
  for (size_t u = begin; u < end; ++u) {
    const size_t first_panel = u / chunks * group_panels;
    const size_t end_panel = std::min(p.panels, first_panel + group_panels);
    const size_t m0 = u % chunks * kChunkRows;
    switch (std::min(kChunkRows, p.m - m0)) {
      case 1: chunk_over_panels<1, kDot, kWide>(p, first_panel, end_panel, m0); break;
      case 2: chunk_over_panels<2, kDot, kWide>(p, first_panel, end_panel, m0); break;
      case 3: chunk_over_panels<3, kDot, kWide>(p, first_panel, end_panel, m0); break;
      case 4: chunk_over_panels<4, kDot, kWide>(p, first_panel, end_panel, m0); break;
      case 5: chunk_over_panels<5, kDot, kWide>(p, first_panel, end_panel, m0); break;
      case 6: chunk_over_panels<6, kDot, kWide>(p, first_panel, end_panel, m0); break;
      case 7: chunk_over_panels<7, kDot, kWide>(p, first_panel, end_panel, m0); break;
      default: chunk_over_panels<8, kDot, kWide>(p, first_panel, end_panel, m0); break;
    }
  }
}

// Activation rows [begin, end) to int8 codes per block (see the header), zero past K.
NIBBLE_AVX2 void quantize_activations(const void* act, ActivationFormat format, size_t k,
                                      size_t blocks, size_t begin, size_t end, int8_t* codes,
                                      float* scales, int32_t* offsets) {
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 infinity = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  const __m256i pack_order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  // Blocks whose largest magnitude is below 2^-100 are scaled up by 2^100 first (exact), so
  // that 127 / amax stays finite down to the smallest subnormals.
  constexpr float kTiny = 0x1p-100f, kLift = 0x1p100f;
  alignas(32) float values[kMxfp4BlockSize];
  for (size_t row = begin; row < end; ++row) {
    for (size_t b = 0; b < blocks; ++b) {
      const size_t k0 = b * kMxfp4BlockSize, count = std::min(kMxfp4BlockSize, k - k0);
      __m256 v[4];
      if (format == ActivationFormat::f32 && count == kMxfp4BlockSize) {
        const float* src = static_cast<const float*>(act) + row * k + k0;
        for (size_t i = 0; i < 4; ++i) v[i] = _mm256_loadu_ps(src + 8 * i);
      } else if (format == ActivationFormat::bf16 && count == kMxfp4BlockSize) {
        const uint16_t* src = static_cast<const uint16_t*>(act) + row * k + k0;
        for (size_t i = 0; i < 4; ++i) {
          const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 8 * i));
          v[i] = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
        }
      } else {
        for (size_t i = 0; i < kMxfp4BlockSize; ++i)
          values[i] = i >= count ? 0.0f
                      : format == ActivationFormat::f32
                          ? static_cast<const float*>(act)[row * k + k0 + i]
                          : bf16_to_f32(static_cast<const uint16_t*>(act)[row * k + k0 + i]);
        for (size_t i = 0; i < 4; ++i) v[i] = _mm256_load_ps(values + 8 * i);
      }
      __m256 amax8 = _mm256_setzero_ps();
      int non_finite = 0;
      for (size_t i = 0; i < 4; ++i) {
        const __m256 a = _mm256_and_ps(v[i], magnitude_mask);
        non_finite |= _mm256_movemask_ps(_mm256_cmp_ps(a, infinity, _CMP_NLT_UQ));  // Inf or NaN
        amax8 = _mm256_max_ps(amax8, a);
      }
      __m128 amax4 = _mm_max_ps(_mm256_castps256_ps128(amax8), _mm256_extractf128_ps(amax8, 1));
      amax4 = _mm_max_ps(amax4, _mm_movehl_ps(amax4, amax4));
      amax4 = _mm_max_ss(amax4, _mm_shuffle_ps(amax4, amax4, 1));
      float amax = _mm_cvtss_f32(amax4);

      const size_t at = row * blocks + b;
      int8_t* dst = codes + at * kMxfp4BlockSize;
      if (non_finite || amax == 0.0f) {
        std::memset(dst, 0, kMxfp4BlockSize);
        scales[at] = non_finite ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
        offsets[at] = 0;
        continue;
      }
      float unscale = 1.0f;
      if (amax < kTiny) {
        for (size_t i = 0; i < 4; ++i) v[i] = _mm256_mul_ps(v[i], _mm256_set1_ps(kLift));
        amax *= kLift;
        unscale = kTiny;
      }
      const __m256 inverse = _mm256_set1_ps(127.0f / amax);
      __m256i q[4];
      for (size_t i = 0; i < 4; ++i) q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(v[i], inverse));  // half to even
      const __m256i packed = _mm256_permutevar8x32_epi32(
          _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3])), pack_order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), packed);
      const __m256i sum8 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
      __m128i sum4 = _mm_add_epi32(_mm256_castsi256_si128(sum8), _mm256_extracti128_si256(sum8, 1));
      sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0x4e));
      sum4 = _mm_add_epi32(sum4, _mm_shuffle_epi32(sum4, 0xb1));
      offsets[at] = kWeightOffset * _mm_cvtsi128_si32(sum4);
      scales[at] = amax / 127.0f * 0.5f * unscale;
    }
  }
}

bool cpu_has_avx2_fma() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

bool cpu_has_avx512_vnni() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}

// The vpdpbusd form `encoding` asks for, if this CPU runs it (evex512: the EVEX instruction on
// 512-bit registers, the caller's two-panel code; the others on 256-bit registers).
std::optional<DotInstr> cpu_vpdpbusd(VnniEncoding encoding) {
  const bool vex = __builtin_cpu_supports("avxvnni");
  const bool evex = cpu_has_avx512_vnni();
  if (!cpu_has_avx2_fma()) return std::nullopt;
  if (encoding == VnniEncoding::evex512) return evex ? std::optional(DotInstr::vpdpbusd_evex) : std::nullopt;
  if (vex && encoding != VnniEncoding::evex) return DotInstr::vpdpbusd_vex;
  if (evex && encoding != VnniEncoding::vex) return DotInstr::vpdpbusd_evex;
  return std::nullopt;
}

#endif  // __x86_64__

// Per-thread scratch for the quantized activations, grown as needed and kept between calls.
struct ActivationScratch {
  std::vector<int8_t> codes;
  std::vector<float> scales;
  std::vector<int32_t> offsets;
};

// One class for the three kernels: the same layout, quantization and work split; a VNNI
// encoding picks vpdpbusd (cpu_vnni_w4a8, cpu_vnni512_w4a8 for evex512) over the AVX2 pair
// (cpu_avx2_w4a8, vnni_ empty).
class CpuW4a8Kernel final : public LinearKernel {
 public:
  explicit CpuW4a8Kernel(std::optional<VnniEncoding> vnni) : vnni_(vnni) {}
  std::string_view name() const override {
    return !vnni_ ? "cpu_avx2_w4a8" : *vnni_ == VnniEncoding::evex512 ? "cpu_vnni512_w4a8" : "cpu_vnni_w4a8";
  }
  DeviceKind device_kind() const override { return DeviceKind::cpu; }
  std::string_view layout_id() const override { return "mxfp4_w4a8_panel8"; }
  ActivationRounding activation_rounding() const override { return ActivationRounding::int8_block32; }

  Check is_supported(const DeviceInfo& device) const override {
    if (device.kind != DeviceKind::cpu)
      return Check::no(fmt::format("runs on the CPU, not on {}", device_kind_name(device.kind)));
#if defined(__x86_64__)
    if (!cpu_has_avx2_fma()) return Check::no("needs an x86-64 CPU with AVX2 and FMA (x86-64-v3); this one has neither");
    if (vnni_ && !cpu_vpdpbusd(*vnni_))
      return Check::no(*vnni_ == VnniEncoding::vex    ? "needs an x86-64 CPU with AVX-VNNI (vpdpbusd, VEX form)"
                       : *vnni_ == VnniEncoding::evex ? "needs an x86-64 CPU with AVX512-VNNI and AVX512-VL (vpdpbusd, EVEX form)"
                       : *vnni_ == VnniEncoding::evex512
                           ? "needs an x86-64 CPU with AVX512-F, -BW, -VL and -VNNI (vpdpbusd on 512-bit registers)"
                           : "needs an x86-64 CPU with AVX-VNNI, or AVX512-VNNI and AVX512-VL (vpdpbusd); this one has neither");
    return Check::yes();
#else
    return Check::no(fmt::format("needs an x86-64 CPU with AVX2{}; this build is not for x86-64",
                                 vnni_ ? " and VNNI" : ""));
#endif
  }

  // Any N, any K (padded to whole blocks), any M, F32 or BF16 in and out, with or without bias.
  Check can_implement(const LinearDesc&) const override { return Check::yes(); }

  std::unique_ptr<PreparedWeights> prepare(const LinearDesc& layer, const Mxfp4HostWeights& w,
                                           const float* bias) const override {
    auto prepared = std::make_unique<W4a8Weights>();
    prepared->n = layer.n;
    prepared->k = layer.k;
    prepared->blocks = mxfp4_blocks_per_row(layer.k);
    prepared->panels = (layer.n + kPanelRows - 1) / kPanelRows;
    const size_t blocks = prepared->blocks;
    // 64-byte aligned codes: no 32-byte load of a record crosses a cache line.
    prepared->code_storage.assign(prepared->panels * blocks * kCodeBytes + 63, 0);
    const auto address = reinterpret_cast<uintptr_t>(prepared->code_storage.data());
    prepared->codes = prepared->code_storage.data() + (64 - address % 64) % 64;
    prepared->scales.assign(prepared->panels * blocks * kPanelRows, 0);
    ThreadPool::global().parallel_for(prepared->panels, 1, [&](size_t begin, size_t end, size_t) {
      for (size_t p = begin; p < end; ++p)
        for (size_t r = 0; r < kPanelRows && p * kPanelRows + r < layer.n; ++r) {
          const size_t row = p * kPanelRows + r;
          for (size_t b = 0; b < blocks; ++b) {
            const uint8_t* src = w.blocks + (row * blocks + b) * kMxfp4BlockBytes;
            uint8_t* dst = prepared->codes + (p * blocks + b) * kCodeBytes;
            for (size_t e = 0; e < kMxfp4BlockSize; ++e) {
              // Element e is the low nibble of source byte e / 2 when e is even, else the high.
              const uint8_t code = e % 2 == 0 ? src[e / 2] & 0xf : src[e / 2] >> 4;
              const size_t within = e % 16;  // quad within / 4, byte within % 4
              dst[within / 4 * 32 + 4 * r + within % 4] |= e < 16 ? code : uint8_t(code << 4);
            }
            prepared->scales[(p * blocks + b) * kPanelRows + r] = w.scales[row * blocks + b];
          }
        }
    });
    if (layer.has_bias) prepared->bias.assign(bias, bias + layer.n);
    return prepared;
  }

  void apply(const LinearDesc& layer, const PreparedWeights& prepared, const ActivationView& act,
             const OutputView& out, void*) const override {
    const auto& w = static_cast<const W4a8Weights&>(prepared);
    if (act.m == 0 || layer.n == 0) return;
    Problem p;
    p.codes = w.codes;
    p.scales = w.scales.data();
    p.panels = w.panels;
    p.blocks = w.blocks;
    p.n = layer.n;
    p.m = act.m;
    p.bias = w.bias.empty() ? nullptr : w.bias.data();
    p.out = out.data;
    p.out_format = out.format;
    if (layer.k == 0) {  // an empty sum: the bias alone
      for (size_t i = 0; i < act.m * layer.n; ++i) store_output(p, i, p.bias ? p.bias[i % layer.n] : 0.0f);
      return;
    }
#if defined(__x86_64__)
    NIBBLE_CHECK(cpu_has_avx2_fma(), "{} called on a CPU without AVX2 and FMA", name());
    const std::optional<DotInstr> dot = vnni_ ? cpu_vpdpbusd(*vnni_) : DotInstr::maddubs;
    NIBBLE_CHECK(dot.has_value(), "{} called on a CPU without VNNI", name());
    thread_local ActivationScratch scratch;
    scratch.codes.resize(act.m * w.blocks * kMxfp4BlockSize);
    scratch.scales.resize(act.m * w.blocks);
    scratch.offsets.resize(act.m * w.blocks);
    // The caller's scratch, by pointer: inside the workers' lambdas `scratch` would name theirs.
    int8_t* codes = scratch.codes.data();
    float* scales = scratch.scales.data();
    int32_t* offsets = scratch.offsets.data();
    ThreadPool& pool = ThreadPool::global();
    // Quantizing a row costs about what multiplying it by 8 weight rows does: worth threads
    // only for many rows.
    pool.parallel_for(act.m, 16, [&](size_t begin, size_t end, size_t) {
      quantize_activations(act.data, act.format, layer.k, w.blocks, begin, end, codes, scales, offsets);
    });
    p.act_codes = codes;
    p.act_scales = scales;
    p.act_offsets = offsets;

    const size_t chunks = (act.m + kChunkRows - 1) / kChunkRows;
    const bool wide = vnni_ == VnniEncoding::evex512;
    size_t group_panels =
        chunks == 1 ? 1 : std::max<size_t>(1, kGroupCodeBytes / (w.blocks * (kCodeBytes + kPanelRows)));
    if (wide) group_panels = (group_panels + 1) / 2 * 2;  // whole pairs
    const size_t groups = (w.panels + group_panels - 1) / group_panels;
    const auto units = wide                             ? run_units<DotInstr::vpdpbusd_evex, true>
                       : *dot == DotInstr::maddubs      ? run_units<DotInstr::maddubs, false>
                       : *dot == DotInstr::vpdpbusd_vex ? run_units<DotInstr::vpdpbusd_vex, false>
                                                        : run_units<DotInstr::vpdpbusd_evex, false>;
    pool.parallel_for(groups * chunks, 1, [&](size_t begin, size_t end, size_t) {
      units(p, group_panels, chunks, begin, end);
    });
#else
    NIBBLE_THROW("{} is not built for this CPU architecture", name());
#endif
  }

 private:
  std::optional<VnniEncoding> vnni_;
};

}  // namespace

std::unique_ptr<LinearKernel> make_cpu_avx2_w4a8_kernel() { return std::make_unique<CpuW4a8Kernel>(std::nullopt); }
std::unique_ptr<LinearKernel> make_cpu_vnni_w4a8_kernel(VnniEncoding encoding) {
  return std::make_unique<CpuW4a8Kernel>(encoding);
}

}  // namespace nibble
