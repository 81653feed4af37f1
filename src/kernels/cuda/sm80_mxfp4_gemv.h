// sm80_mxfp4_gemv: MXFP4 weights x BF16/F32 activations for decode, M = 1..8, on the tensor
// cores' legacy mma.sync path (valid from sm_80 up to sm_90a, sm_100 and sm_120).
//
//   out[m, n] = sum_k act[m, k] * W[n, k] (+ bias[n])     FP32 accumulation, F32/BF16 output
//
// Why tensor cores at M = 1..8: at M = 8 a CUDA-core kernel needs 8 FFMA per weight plus the
// decode, about 16 us of FP32 issue on an H100 for 4096x14336 against a 10.7 us memory floor.
// One mma.sync.m16n8k16 (bf16 in, f32 accumulate) does 16 rows x 16 k x 8 activation rows, so
// the only per-weight work left on the CUDA cores is the E2M1 decode, and M = 1..8 cost the
// same (activation rows >= M are zero columns of B).
//
// ---- E2M1 decode: a byte-permute table, in registers ---------------------------------------
// Every E2M1 value is exact in BF16. Its magnitude (3 bits) picks the BF16 high byte and low
// byte from two 8-entry tables held in 2+2 registers (PRMT selects 4 bytes out of 8 per
// instruction); the sign bit is ORed into the high byte. Per 8 weights: 1 mask, 1 shift,
// 4 table PRMTs, 3 sign ops, 4 PRMTs to interleave high/low bytes into bf16x2 = 13 integer
// instructions, no float work, no shared memory. A bit trick into BF16 would produce
// subnormals for codes 0/1 (needs an extra multiply), and a 256-entry shared-memory table
// suffers random bank conflicts at the ~20 weights/clock/SM the memory floor requires.
//
//   magnitude code   0      1      2      3      4      5      6      7
//   value            0      0.5    1      1.5    2      3      4      6
//   bf16 high byte   0x00   0x3f   0x3f   0x3f   0x40   0x40   0x40   0x40
//   bf16 low byte    0x00   0x00   0x80   0xc0   0x00   0x40   0x80   0xc0
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
//   mma half h (0, 1); with kb = chunk * 64 + 32 j + 8 t + 4 h the word holds 8 elements:
//
//     E0 = W[g][kb+0]   E1 = W[g][kb+1]   E2 = W[g+8][kb+0]   E3 = W[g+8][kb+1]
//     E4 = W[g][kb+2]   E5 = W[g][kb+3]   E6 = W[g+8][kb+2]   E7 = W[g+8][kb+3]
//
//     bit   31   28 27   24 23   20 19   16 15   12 11    8 7     4 3     0
//          +-------+-------+-------+-------+-------+-------+-------+-------+
//          |s3|m7  |s7|m6  |s2|m5  |s6|m4  |s1|m3  |s5|m2  |s0|m1  |s4|m0  |
//          +-------+-------+-------+-------+-------+-------+-------+-------+
//     m_p = magnitude (3 bits) of E_p, s_p = its sign. The low half-word selects E0..E3 and
//     the high half E4..E7; the signs sit where the decoder ORs them into the high bytes
//     (bits 7/15/23/31 for E0..E3, bits 3/11/19/27 shifted by 4 for E4..E7).
//   scale word of group g: bytes [S(g, block 0), S(g, block 1), S(g+8, block 0), S(g+8, 1)].
//
// Why this k order: mma slot (2t, 2t+1, 2t+8, 2t+9) of half h maps to k = kb + (0, 1, 2, 3),
// so lane t needs activations kb .. kb+3 for h = 0 and kb+4 .. kb+7 for h = 1: one 16-byte
// load of 8 consecutive BF16 (two of F32) per block, while each mma stays inside one MX block
// (its 16 slots cover 32 j + 8 t + 4 h + 0..3 over t = 0..3), so the scale applies per mma pair.
// The A fragment registers are (E0,E1) (E2,E3) (E4,E5) (E6,E7): a0a1, a2a3, a4a5, a6a7 of PTX's
// m16n8k16 layout; B's column is the activation row g, C's columns are rows 2t and 2t+1.
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

struct GemvPacked {
  size_t n_pad = 0, k_chunks = 0;
  std::vector<uint8_t> weights;  // n_pad / 16 * k_chunks * 512 bytes
  std::vector<uint8_t> scales;   // n_pad / 16 * k_chunks * 32 bytes
  bool special_scales = false;   // any scale code 0 or 255: the kernel's exact slow path
};

// The reference pack (host) producing the layout above from the checkpoint layout
// (format/mxfp4.h). Runs on ThreadPool::global().
GemvPacked mxfp4_gemv_pack(const Mxfp4HostWeights& weights);

// One launch, device pointers. tiles_per_cta (1 or 2) and warps (1..16, splitting K) choose
// among the instantiated configurations; 0 picks the default for the shape and device.
struct GemvLaunch {
  const void* weights = nullptr;  // packed, device
  const void* scales = nullptr;   // packed, device
  const void* act = nullptr;      // [m, k] F32 or BF16, device
  const float* bias = nullptr;    // [n] or null, device
  void* out = nullptr;            // [m, n] F32 or BF16, device
  size_t n = 0, k = 0, m = 0, n_pad = 0, k_chunks = 0;
  ActivationFormat activation = ActivationFormat::bf16;
  OutputFormat output = OutputFormat::f32;
  bool special_scales = false;
  int tiles_per_cta = 0, warps = 0;
  // The cp.async-pipelined variant (BF16 activations, 16-byte aligned rows, K % 8 == 0):
  // -1 where it applies (the default), 0 never, 1 always (invalid where it cannot apply).
  int pipelined = -1;
  int multiprocessors = 132;     // of the device, for the default choice
};

// Launches on `stream`; returns the launch's status (the caller checks it).
int mxfp4_gemv_launch(const GemvLaunch& launch, void* stream);
// The configuration a launch with tiles_per_cta = warps = 0 uses.
void mxfp4_gemv_default_config(const GemvLaunch& launch, int* tiles_per_cta, int* warps);
// Compute capability of the kernel image the runtime would load on the current device, or a
// negative cudaError_t when none loads (e.g. not compiled for this GPU).
int mxfp4_gemv_binary_version();

std::unique_ptr<LinearKernel> make_sm80_mxfp4_gemv_kernel();

}  // namespace nibble
