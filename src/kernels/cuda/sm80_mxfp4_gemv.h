// sm80_mxfp4_gemv: MXFP4 weights x BF16/F32 activations for decode, M = 1..8, on the tensor
// cores' legacy mma.sync path (valid from sm_80 up to sm_90a, sm_100 and sm_120).
//
//   out[m, n] = sum_k act[m, k] * W[n, k] (+ bias[n])     FP32 accumulation, F32/BF16 output
//
// Why tensor cores at M = 1..8: at M = 8 a CUDA-core kernel needs 8 FFMA per weight plus the
// decode, about 16 us of FP32 issue on an H100 for 4096x14336 against a 10.7 us memory floor.
// One mma.sync.m16n8k16 (bf16 in, f32 accumulate) does 16 rows x 16 k x 8 activation rows, so
// the only per-weight work left on the CUDA cores is the E2M1 decode, and M = 1..8 cost the
// same (B's columns >= M repeat row M - 1 and are never stored).
//
// ---- E2M1 decode: a byte table in shared memory ----------------------------------------------
// Every E2M1 value is exact in BF16, and each packed byte holds two consecutive codes of one row
// (low nibble first, as in the checkpoint): exactly one bf16x2 A-fragment register. So the
// decode is one lookup per register in a 256-entry table of bf16x2. The table is replicated 32
// times, one copy per lane (row b of 256 bytes holds the 32 copies of entry b), so a warp's
// 32 lookups hit 32 distinct banks whatever the bytes; the row stride is 256, and the table
// 64 KB-aligned in the shared window, because then one PRMT builds the whole address from the
// weight byte (byte 1) and the lane's entry of row 0 (bytes 0, 2, 3). Per 8 weights:
// 4 PRMT + 4 LDS. It replaced a register table (PRMT byte tables, 13 integer instructions per
// 8 weights) under which the kernel was bound by Hopper's half-rate integer pipe at 50 % of the
// memory floor (docs/perf.md); bit tricks into BF16 cost as much (the sign needs its own shift,
// and no shift-and-mask pattern covers a 32-bit word with four bf16x2 registers).
// Each CTA builds the 64 KB table while its first loads are in flight; the grid is persistent
// (as many CTAs as fit on the SMs, looping over tile groups), so that happens once per CTA.
//
// The E8M0 scale is applied exactly, once per 32-block: the two mmas of one block accumulate
// from zero, and the block's partial sums are multiplied by 2^(e-127) in FP32 and added to
// the accumulators (scale codes 0 and 255 take an exact slow path: 2^-127 and NaN).
//
// ---- Packed layout (prepare) ----------------------------------------------------------------
// N is padded to a multiple of 32 rows (kRowsPerTile * 2, the largest tile group a CTA takes),
// K to a multiple of 64 (two MX blocks, one "chunk"); padding weights are +0, padding scales
// 1.0, and activations past K are read as zero, so any K works (K = 172 too).
//
//   weights: [N/16 tiles][K/64 chunks][32 lanes][16 bytes]      one warp-wide 512-byte load
//   scales:  [N/16 tiles][K/64 chunks][8 groups][4 bytes]
//
//   lane = 4 * g + t  (g = lane / 4: rows g and g + 8 of the tile; t = lane % 4)
//   the lane's 16 bytes = 4 words, word (j, h) = j * 2 + h: block j (0, 1) of the chunk,
//   mma half h (0, 1); with kb = chunk * 64 + 32 j + 8 t + 4 h the word's bytes are
//
//     byte 0: W[g][kb], W[g][kb+1]       byte 1: W[g+8][kb], W[g+8][kb+1]
//     byte 2: W[g][kb+2], W[g][kb+3]     byte 3: W[g+8][kb+2], W[g+8][kb+3]
//
//   (low nibble the first), the A fragment registers a0a1, a2a3, a4a5, a6a7 of PTX's m16n8k16
//   layout in that order. Scale word of group g: bytes [S(g, block 0), S(g, block 1),
//   S(g+8, block 0), S(g+8, 1)].
//
// With the SwiGLU epilogue (LinearEpilogue::swiglu) the rows are paired: tile T's rows g and
// g + 8 (g < 8) hold gate row 8T + g and up row 8T + g (source rows 8T + g and n/2 + 8T + g),
// so one lane's registers hold both terms of an output; the pairs pad to a multiple of 16.
//
// Why this k order: mma slot (2t, 2t+1, 2t+8, 2t+9) of half h maps to k = kb + (0, 1, 2, 3),
// so lane t needs activations kb .. kb+3 for h = 0 and kb+4 .. kb+7 for h = 1: one 16-byte
// load of 8 consecutive BF16 (two of F32) per block, while each mma stays inside one MX block
// (its 16 slots cover 32 j + 8 t + 4 h + 0..3 over t = 0..3), so the scale applies per mma pair.
// B's column is the activation row g, C's columns are rows 2t and 2t+1.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/linear_kernel.h"

namespace nibble {

inline constexpr size_t kGemvRowsPerTile = 16;   // mma M
inline constexpr size_t kGemvRowPad = 32;        // N pads to 2 tiles (tiles_per_cta <= 2)
inline constexpr size_t kGemvChunkK = 64;        // two MX blocks per 16-byte lane load
inline constexpr size_t kGemvMaxM = 8;           // mma N: activation rows per product
inline constexpr size_t kGemvMaxWarps = 16;      // per CTA
inline constexpr size_t kGemvLutBytes = 256 * 256;  // the decode table, per CTA

struct GemvPacked {
  size_t n_pad = 0, k_chunks = 0;
  std::vector<uint8_t> weights;  // n_pad / 16 * k_chunks * 512 bytes
  std::vector<uint8_t> scales;   // n_pad / 16 * k_chunks * 32 bytes
  bool special_scales = false;   // any scale code 0 or 255: the kernel's exact slow path
};

// The reference pack (host) producing the layout above from the checkpoint layout
// (format/mxfp4.h), rows paired for the SwiGLU epilogue (weights.n even). Runs on
// ThreadPool::global().
GemvPacked mxfp4_gemv_pack(const Mxfp4HostWeights& weights,
                           LinearEpilogue epilogue = LinearEpilogue::none);

// One launch, device pointers. tiles_per_cta (1 or 2), warps (per CTA, 1..kGemvMaxWarps) and
// team (warps per tile group, splitting K; a divisor of warps) choose the configuration; 0
// picks the default for the shape.
struct GemvLaunch {
  const void* weights = nullptr;  // packed, device
  const void* scales = nullptr;   // packed, device
  const void* act = nullptr;      // [m, k] F32 or BF16, device
  const float* bias = nullptr;    // [n] or null, device
  void* out = nullptr;            // [m, n] (swiglu: [m, n / 2]) F32 or BF16, device
  size_t n = 0, k = 0, m = 0, n_pad = 0, k_chunks = 0;
  ActivationFormat activation = ActivationFormat::bf16;
  OutputFormat output = OutputFormat::f32;
  bool special_scales = false;
  LinearEpilogue epilogue = LinearEpilogue::none;  // swiglu: weights packed for it, 2 tiles
  int tiles_per_cta = 0, warps = 0, team = 0;
  // Activations in 16-byte loads (rows 16-byte aligned, K x element size a multiple of 16):
  // -1 where that applies (the default), 0 never (element loads), 1 always (invalid where
  // it cannot).
  int act_vector = -1;
  int multiprocessors = 132;  // of the device: the persistent grid's size
  // Launched chained (cuda_launch.cuh): the first weight loads and the decode table overlap
  // the kernel before it on the stream (LinearDesc::chained; the benchmark times it alone).
  bool chained = false;
  // Folded norms (FoldedNorm, linear_kernel.h): act_norm's rows scaled before the bias;
  // out_norm (plain products, out_norm.n == n) takes the product into its residual and `out`
  // receives the norm's output.
  FoldedNorm act_norm, out_norm;
};

// Launches on `stream`; returns the launch's status (the caller checks it).
int mxfp4_gemv_launch(const GemvLaunch& launch, void* stream);
// The configuration a launch with tiles_per_cta = warps = team = 0 uses.
void mxfp4_gemv_default_config(const GemvLaunch& launch, int* tiles_per_cta, int* warps,
                               int* team);
// Compute capability of the kernel image the runtime would load on the current device, or a
// negative cudaError_t when none loads (e.g. not compiled for this GPU).
int mxfp4_gemv_binary_version();

std::unique_ptr<LinearKernel> make_sm80_mxfp4_gemv_kernel();

}  // namespace nibble
