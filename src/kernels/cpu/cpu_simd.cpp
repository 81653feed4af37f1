// cpu_simd: see cpu_simd.h for the prepared layout and the strategy per M.
//
// This file is compiled once per Highway target (foreach_target.h re-includes it); the code
// between HWY_BEFORE_NAMESPACE and HWY_AFTER_NAMESPACE exists once per target, the HWY_ONCE
// part once, and HWY_DYNAMIC_DISPATCH picks the best target the CPU supports at run time.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/cpu_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/e2m1.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "kernels/cpu/cpu_simd.h"

#ifndef NIBBLE_CPU_SIMD_SHARED
#define NIBBLE_CPU_SIMD_SHARED
namespace nibble::cpu_simd_detail {

constexpr size_t kPanelRows = 16;     // rows per panel (one 16-byte load = 16 rows at one k)
constexpr size_t kPairs = 16;         // element pairs (j, j + 16) per 32-element block
constexpr size_t kScaleOffset = kPairs * kPanelRows;    // 256
constexpr size_t kRecordBytes = kScaleOffset + kPanelRows;  // 272 per (panel, block)
constexpr size_t kGroupRows = 2 * kPanelRows;  // GEMM tile width: two panels (32 rows)
// GEMM k chunk: 128 k x 32 rows x 4 bytes = 16 KB of decoded weights, half of Zen 4's L1D,
// so the micro-kernel's weight loads hit L1 while the packed activations stream from L2.
constexpr size_t kChunkK = 128;
// The largest M served by the GEMV path (decode once, multiply into every row); above it the
// GEMM's decode-to-buffer cost is amortised over enough rows. Matches the registry's buckets.
constexpr size_t kGemvMaxM = 8;

// One call of the kernel, as every target sees it.
struct Problem {
  const uint8_t* records = nullptr;  // the prepared layout
  size_t panels = 0;                 // even: the layout pads to whole 32-row groups
  size_t blocks = 0;                 // blocks per row (ceil(K / 32))
  size_t n = 0, m = 0;
  // GEMV: activations as F32 rows of blocks * 32 values (zero padded), row stride x_stride.
  const float* x = nullptr;
  size_t x_stride = 0;
  // GEMM: the raw activations, [m, k] row-major, packed per tile inside the kernel.
  const void* act = nullptr;
  ActivationFormat act_format = ActivationFormat::f32;
  size_t k = 0;
  const float* bias = nullptr;  // null: no bias
  void* out = nullptr;
  OutputFormat out_format = OutputFormat::f32;
};

inline void store_output(const Problem& p, size_t index, float value) {
  if (p.out_format == OutputFormat::f32)
    static_cast<float*>(p.out)[index] = value;
  else
    static_cast<uint16_t*>(p.out)[index] = f32_to_bf16(value);
}

inline float load_activation(const Problem& p, size_t index) {
  if (p.act_format == ActivationFormat::f32) return static_cast<const float*>(p.act)[index];
  return bf16_to_f32(static_cast<const uint16_t*>(p.act)[index]);
}

}  // namespace nibble::cpu_simd_detail
#endif  // NIBBLE_CPU_SIMD_SHARED

HWY_BEFORE_NAMESPACE();
namespace nibble {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using namespace cpu_simd_detail;

// Lanes per vector. SVE vectors have a length known only at run time; a fixed 128-bit view
// is valid on all of them. Elsewhere: the full vector, at most 16 lanes (one panel).
#if HWY_TARGET == HWY_SVE || HWY_TARGET == HWY_SVE2 || HWY_TARGET == HWY_SVE_256 || \
    HWY_TARGET == HWY_SVE2_128
constexpr size_t kN = 4;
#else
constexpr size_t kN = HWY_MIN(16, HWY_LANES(float));
#endif
using DF = hn::FixedTag<float, kN>;
using DU = hn::RebindToUnsigned<DF>;
using VF = hn::Vec<DF>;
constexpr size_t kV = kPanelRows / kN;  // vectors per panel row

// How E2M1 codes become floats on this target:
//   16: one 16-lane permute of the 16 values (vpermps on AVX-512);
//    8: an 8-lane permute of the magnitudes, the sign bit moved in with a shift (AVX2);
//    0: a scalar table lookup through a small buffer (128-bit and scalar targets).
constexpr int kTableLanes =
    (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL) ? 16 : (HWY_TARGET == HWY_AVX2 ? 8 : 0);

struct Decoder {
  DF df;
  DU du;
  VF table;

  Decoder() : table(hn::LoadU(df, kE2M1Values)) {}

  // The E2M1 values of kN rows at one k: the low (kHigh = false) or high nibbles of kN code
  // bytes.
  template <bool kHigh>
  HWY_INLINE VF decode(const uint8_t* codes) const {
    if constexpr (kTableLanes >= 8) {
      auto c = hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint8_t, DU>(), codes));
      c = kHigh ? hn::ShiftRight<4>(c) : hn::And(c, hn::Set(du, 15u));
      if constexpr (kTableLanes == 16) {
        return hn::TableLookupLanes(table, hn::IndicesFromVec(df, c));
      } else {
        const VF magnitude = hn::TableLookupLanes(table, hn::IndicesFromVec(df, hn::And(c, hn::Set(du, 7u))));
        const auto sign = hn::ShiftLeft<28>(hn::And(c, hn::Set(du, 8u)));
        return hn::BitCast(df, hn::Or(hn::BitCast(du, magnitude), sign));
      }
    } else {
      HWY_ALIGN float values[kN];
      for (size_t i = 0; i < kN; ++i) values[i] = kE2M1Values[(kHigh ? codes[i] >> 4 : codes[i]) & 15];
      return hn::Load(df, values);
    }
  }

  // 2^(s - 127) for kN E8M0 codes, exactly as e8m0_decode: 0 -> 2^-127 (subnormal), 255 -> NaN.
  HWY_INLINE VF scales(const uint8_t* codes) const {
    const auto s = hn::PromoteTo(du, hn::LoadU(hn::Rebind<uint8_t, DU>(), codes));
    auto bits = hn::ShiftLeft<23>(s);
    bits = hn::IfThenElse(hn::Eq(s, hn::Zero(du)), hn::Set(du, 0x00400000u), bits);
    bits = hn::IfThenElse(hn::Eq(s, hn::Set(du, 255u)), hn::Set(du, 0x7fc00000u), bits);
    return hn::BitCast(df, bits);
  }
};

// ---- GEMV: M = 1..8 ---------------------------------------------------------------------------
// P panels (16 P rows) at once against all M activation rows. Per block, two partial sums per
// (row, panel, vector) (pairs' low and high halves: two dependency chains), scaled once at the
// block's end. Writes tile[m][16 P] (F32, unbiased).
template <size_t M, size_t P>
HWY_NOINLINE void gemv_tile(const Problem& pr, size_t first_panel, float* tile) {
  const DF df;
  const Decoder dec;
  VF acc[M][P][kV], lo[M][P][kV], hi[M][P][kV];
  for (size_t m = 0; m < M; ++m)
    for (size_t p = 0; p < P; ++p)
      for (size_t v = 0; v < kV; ++v) acc[m][p][v] = hn::Zero(df);
  const uint8_t* rec[P];
  for (size_t p = 0; p < P; ++p) rec[p] = pr.records + (first_panel + p) * pr.blocks * kRecordBytes;

  for (size_t b = 0; b < pr.blocks; ++b) {
    for (size_t m = 0; m < M; ++m)
      for (size_t p = 0; p < P; ++p)
        for (size_t v = 0; v < kV; ++v) lo[m][p][v] = hi[m][p][v] = hn::Zero(df);
    const float* x[M];
    for (size_t m = 0; m < M; ++m) x[m] = pr.x + m * pr.x_stride + b * kMxfp4BlockSize;
    for (size_t j = 0; j < kPairs; ++j) {
      for (size_t p = 0; p < P; ++p)
        for (size_t v = 0; v < kV; ++v) {
          const uint8_t* codes = rec[p] + b * kRecordBytes + j * kPanelRows + v * kN;
          const VF w_lo = dec.decode<false>(codes), w_hi = dec.decode<true>(codes);
          for (size_t m = 0; m < M; ++m) {
            lo[m][p][v] = hn::MulAdd(w_lo, hn::Set(df, x[m][j]), lo[m][p][v]);
            hi[m][p][v] = hn::MulAdd(w_hi, hn::Set(df, x[m][j + kPairs]), hi[m][p][v]);
          }
        }
    }
    for (size_t p = 0; p < P; ++p)
      for (size_t v = 0; v < kV; ++v) {
        const VF scale = dec.scales(rec[p] + b * kRecordBytes + kScaleOffset + v * kN);
        for (size_t m = 0; m < M; ++m)
          acc[m][p][v] = hn::MulAdd(hn::Add(lo[m][p][v], hi[m][p][v]), scale, acc[m][p][v]);
      }
  }
  for (size_t m = 0; m < M; ++m)
    for (size_t p = 0; p < P; ++p)
      for (size_t v = 0; v < kV; ++v)
        hn::StoreU(acc[m][p][v], df, tile + m * P * kPanelRows + p * kPanelRows + v * kN);
}

// Bias, format and the ragged last panel: rows [first_row, first_row + rows) of the tile.
inline void write_rows(const Problem& pr, const float* tile, size_t tile_stride, size_t m_count,
                       size_t first_row, size_t rows) {
  for (size_t m = 0; m < m_count; ++m)
    for (size_t r = 0; r < rows; ++r) {
      const size_t n = first_row + r;
      const float value = tile[m * tile_stride + r] + (pr.bias ? pr.bias[n] : 0.0f);
      store_output(pr, m * pr.n + n, value);
    }
}

template <size_t M>
void gemv(const Problem& pr) {
  // Two panels at a time for M <= 2 (four dependency chains hide the FMA latency), one above
  // (2 M chains per vector suffice and the accumulators fill the register file).
  constexpr size_t P = M <= 2 ? 2 : 1;
  const size_t units = pr.panels / P;  // panels is even
  ThreadPool::global().parallel_for(units, 1, [&](size_t begin, size_t end, size_t) {
    HWY_ALIGN float tile[M * P * kPanelRows];
    for (size_t u = begin; u < end; ++u) {
      const size_t first_row = u * P * kPanelRows;
      if (first_row >= pr.n) break;
      gemv_tile<M, P>(pr, u * P, tile);
      write_rows(pr, tile, P * kPanelRows, M, first_row, std::min(P * kPanelRows, pr.n - first_row));
    }
  });
}

// ---- GEMM: M >= 9 ----------------------------------------------------------------------------
// Register tile: MR activation rows x 2 vectors of weight rows, MR chosen to fill the register
// file with accumulators (AVX-512: 32 registers, 24 accumulators; AVX2 and 128-bit: 16, 12 or 8).
constexpr size_t kMR = kN >= 16 ? 12 : (kN == 8 ? 6 : 4);
constexpr size_t kSubTiles = kGroupRows / (2 * kN);  // 2-vector column tiles per 32-row group

// c[MR][ldc] (+)= apack[kc][MR] x wbuf[kc][32]^T over the 32 columns of one group.
HWY_NOINLINE void micro_kernel(const float* HWY_RESTRICT apack, const float* HWY_RESTRICT wbuf,
                               size_t kc, float* HWY_RESTRICT c, size_t ldc, bool first) {
  const DF df;
  for (size_t s = 0; s < kSubTiles; ++s) {
    const size_t col = s * 2 * kN;
    VF acc[kMR][2];
    for (size_t m = 0; m < kMR; ++m) {
      acc[m][0] = first ? hn::Zero(df) : hn::LoadU(df, c + m * ldc + col);
      acc[m][1] = first ? hn::Zero(df) : hn::LoadU(df, c + m * ldc + col + kN);
    }
    for (size_t k = 0; k < kc; ++k) {
      const VF w0 = hn::LoadU(df, wbuf + k * kGroupRows + col);
      const VF w1 = hn::LoadU(df, wbuf + k * kGroupRows + col + kN);
      const float* a = apack + k * kMR;
      for (size_t m = 0; m < kMR; ++m) {
        const VF am = hn::Set(df, a[m]);
        acc[m][0] = hn::MulAdd(am, w0, acc[m][0]);
        acc[m][1] = hn::MulAdd(am, w1, acc[m][1]);
      }
    }
    for (size_t m = 0; m < kMR; ++m) {
      hn::StoreU(acc[m][0], df, c + m * ldc + col);
      hn::StoreU(acc[m][1], df, c + m * ldc + col + kN);
    }
  }
}

// Decodes blocks [b0, b0 + nb) of group g (two panels) to scaled F32: wbuf[k][32].
HWY_INLINE void decode_chunk(const Problem& pr, size_t g, size_t b0, size_t nb, float* wbuf) {
  const DF df;
  const Decoder dec;
  for (size_t half = 0; half < 2; ++half) {
    const uint8_t* panel = pr.records + (2 * g + half) * pr.blocks * kRecordBytes;
    for (size_t b = 0; b < nb; ++b) {
      const uint8_t* rec = panel + (b0 + b) * kRecordBytes;
      for (size_t v = 0; v < kV; ++v) {
        const VF scale = dec.scales(rec + kScaleOffset + v * kN);
        float* out = wbuf + b * kMxfp4BlockSize * kGroupRows + half * kPanelRows + v * kN;
        for (size_t j = 0; j < kPairs; ++j) {
          const uint8_t* codes = rec + j * kPanelRows + v * kN;
          hn::StoreU(hn::Mul(dec.decode<false>(codes), scale), df, out + j * kGroupRows);
          hn::StoreU(hn::Mul(dec.decode<true>(codes), scale), df, out + (j + kPairs) * kGroupRows);
        }
      }
    }
  }
}

void gemm(const Problem& pr) {
  ThreadPool& pool = ThreadPool::global();
  const size_t kp = pr.blocks * kMxfp4BlockSize;  // K padded to whole blocks
  const size_t tiles = (pr.m + kMR - 1) / kMR;
  const size_t groups = pr.panels / 2;
  const size_t ldc = groups * kGroupRows;

  // Activations packed per row tile, k-major: apack[tile][k][MR], zero past K and past M.
  std::vector<float> apack(tiles * kp * kMR);
  pool.parallel_for(tiles, 1, [&](size_t begin, size_t end, size_t) {
    for (size_t t = begin; t < end; ++t) {
      float* dst = apack.data() + t * kp * kMR;
      for (size_t r = 0; r < kMR; ++r) {
        const size_t m = t * kMR + r;
        for (size_t k = 0; k < kp; ++k)
          dst[k * kMR + r] = m < pr.m && k < pr.k ? load_activation(pr, m * pr.k + k) : 0.0f;
      }
    }
  });

  // F32 accumulators for the whole output, [tiles * MR][ldc].
  std::vector<float> c(tiles * kMR * ldc);
  pool.parallel_for(groups, 1, [&](size_t begin, size_t end, size_t) {
    std::vector<float> wbuf(kChunkK * kGroupRows);
    // k chunks outside: the activations of one chunk (M x 128 floats) stay in L2 while every
    // group of this thread passes over them.
    for (size_t k0 = 0; k0 < kp; k0 += kChunkK) {
      const size_t kc = std::min(kChunkK, kp - k0);
      for (size_t g = begin; g < end; ++g) {
        decode_chunk(pr, g, k0 / kMxfp4BlockSize, kc / kMxfp4BlockSize, wbuf.data());
        for (size_t t = 0; t < tiles; ++t)
          micro_kernel(apack.data() + (t * kp + k0) * kMR, wbuf.data(), kc,
                       c.data() + t * kMR * ldc + g * kGroupRows, ldc, k0 == 0);
      }
    }
    for (size_t g = begin; g < end; ++g) {
      const size_t first_row = g * kGroupRows;
      if (first_row >= pr.n) break;
      write_rows(pr, c.data() + first_row, ldc, pr.m, first_row,
                 std::min(kGroupRows, pr.n - first_row));
    }
  });
}

void apply(const Problem& pr) {
  switch (pr.m) {
    case 1: return gemv<1>(pr);
    case 2: return gemv<2>(pr);
    case 3: return gemv<3>(pr);
    case 4: return gemv<4>(pr);
    case 5: return gemv<5>(pr);
    case 6: return gemv<6>(pr);
    case 7: return gemv<7>(pr);
    case 8: return gemv<8>(pr);
    default: return gemm(pr);
  }
}

const char* target_name() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace nibble
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble {

HWY_EXPORT(apply);
HWY_EXPORT(target_name);

namespace {

using namespace cpu_simd_detail;

struct CpuSimdWeights final : PreparedWeights {
  size_t n = 0, k = 0, panels = 0, blocks = 0;
  std::vector<uint8_t> records;
  std::vector<float> bias;
  size_t bytes() const override { return records.size() + bias.size() * sizeof(float); }
};

class CpuSimdKernel final : public LinearKernel {
 public:
  std::string_view name() const override { return "cpu_simd"; }
  DeviceKind device_kind() const override { return DeviceKind::cpu; }
  std::string_view layout_id() const override { return "mxfp4_panel16"; }

  Check is_supported(const DeviceInfo& device) const override {
    if (device.kind != DeviceKind::cpu)
      return Check::no(fmt::format("runs on the CPU, not on {}", device_kind_name(device.kind)));
    return Check::yes();
  }

  // Any N, any K (padded to whole blocks), any M, F32 or BF16 in and out, with or without bias.
  Check can_implement(const LinearDesc&) const override { return Check::yes(); }

  std::unique_ptr<PreparedWeights> prepare(const LinearDesc& layer, const Mxfp4HostWeights& w,
                                           const float* bias) const override {
    auto prepared = std::make_unique<CpuSimdWeights>();
    prepared->n = layer.n;
    prepared->k = layer.k;
    prepared->blocks = mxfp4_blocks_per_row(layer.k);
    // Whole 32-row groups: the GEMM's tile and the GEMV's two-panel steps never need a tail.
    prepared->panels = 2 * ((layer.n + kGroupRows - 1) / kGroupRows);
    prepared->records.assign(prepared->panels * prepared->blocks * kRecordBytes, 0);
    const size_t blocks = prepared->blocks;
    ThreadPool::global().parallel_for(prepared->panels, 1, [&](size_t begin, size_t end, size_t) {
      for (size_t p = begin; p < end; ++p)
        for (size_t r = 0; r < kPanelRows; ++r) {
          const size_t row = p * kPanelRows + r;
          if (row >= layer.n) break;  // padding rows stay zero codes (their sums are 0)
          for (size_t b = 0; b < blocks; ++b) {
            uint8_t* rec = &prepared->records[(p * blocks + b) * kRecordBytes];
            const uint8_t* src = w.blocks + (row * blocks + b) * kMxfp4BlockBytes;
            for (size_t j = 0; j < kPairs; ++j) {
              // Element j is the low nibble of source byte j/2 when j is even, else the high.
              const auto code = [&](size_t e) -> uint8_t {
                return e % 2 == 0 ? src[e / 2] & 0xf : src[e / 2] >> 4;
              };
              rec[j * kPanelRows + r] = uint8_t(code(j) | code(j + kPairs) << 4);
            }
            rec[kScaleOffset + r] = w.scales[row * blocks + b];
          }
        }
    });
    if (layer.has_bias) prepared->bias.assign(bias, bias + layer.n);
    return prepared;
  }

  void apply(const LinearDesc& layer, const PreparedWeights& prepared, const ActivationView& act,
             const OutputView& out, void*) const override {
    const auto& w = static_cast<const CpuSimdWeights&>(prepared);
    if (act.m == 0 || layer.n == 0) return;
    Problem pr;
    pr.records = w.records.data();
    pr.panels = w.panels;
    pr.blocks = w.blocks;
    pr.n = layer.n;
    pr.m = act.m;
    pr.act = act.data;
    pr.act_format = act.format;
    pr.k = layer.k;
    pr.bias = w.bias.empty() ? nullptr : w.bias.data();
    pr.out = out.data;
    pr.out_format = out.format;
    if (layer.k == 0) {  // an empty sum: the bias alone
      for (size_t m = 0; m < act.m; ++m)
        for (size_t n = 0; n < layer.n; ++n) store_output(pr, m * layer.n + n, pr.bias ? pr.bias[n] : 0.0f);
      return;
    }
    std::vector<float> x;  // GEMV activations as padded F32 rows, when they are not already
    if (act.m <= kGemvMaxM) {
      const size_t kp = w.blocks * kMxfp4BlockSize;
      if (act.format == ActivationFormat::f32 && kp == layer.k) {
        pr.x = static_cast<const float*>(act.data);
      } else {
        x.assign(act.m * kp, 0.0f);
        for (size_t m = 0; m < act.m; ++m)
          for (size_t k = 0; k < layer.k; ++k) x[m * kp + k] = load_activation(pr, m * layer.k + k);
        pr.x = x.data();
      }
      pr.x_stride = kp;
    }
    HWY_DYNAMIC_DISPATCH(apply)(pr);
  }
};

}  // namespace

std::unique_ptr<LinearKernel> make_cpu_simd_kernel() { return std::make_unique<CpuSimdKernel>(); }

std::string cpu_simd_kernel_target() { return HWY_DYNAMIC_DISPATCH(target_name)(); }

}  // namespace nibble
#endif  // HWY_ONCE
