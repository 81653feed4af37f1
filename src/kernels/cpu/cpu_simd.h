// cpu_simd: the MXFP4 linear kernel for CPUs, written with Highway and dispatched at run time
// to the best target compiled in (x86: AVX3 = AVX-512, AVX2, SSE4, SSSE3 and the portable
// fallback; Arm: NEON, SVE, SVE2). Highway 1.0.3 (Debian 12) has no AVX3_ZEN4 target: Zen 4
// runs the AVX3 code. Threads come from ThreadPool::global().
//
// Prepared layout "mxfp4_panel16": the weight rows are regrouped into panels of 16 rows (the
// last panel padded with zero rows), and within a panel the 16 rows of one 32-element block are
// stored together, element pairs (j, j + 16) in one byte, so that one 16-byte load holds the
// codes of 16 rows at one k (low nibbles) and at k + 16 (high nibbles): decoding gives a
// vector along N directly, with no transposition.
//
//   panel p (rows 16p..16p+15), block b (k = 32b..32b+31), one 272-byte record:
//
//     byte  0..15     row 0..15 of pair j=0:  (code[row][32b+16] << 4) | code[row][32b+0]
//     byte 16..31     pair j=1:               (code[row][32b+17] << 4) | code[row][32b+1]
//       ...
//     byte 240..255   pair j=15:              (code[row][32b+31] << 4) | code[row][32b+15]
//     byte 256..271   the 16 rows' E8M0 scales of block b
//
//   records ordered [panel][block]: one panel is one sequential stream.
//
// The same bytes as the checkpoint (17 per 32 weights, plus the padding rows of the last
// panel): every M bucket reads this one layout, so a layer holds one prepared copy.
//
// Products:
//   - M = 1..8 (GEMV / small batch): each 16-byte load is decoded once (E2M1 by a 16-entry
//     in-register table, vpermps on AVX-512) and multiplied into all M activation rows; the
//     power-of-two scale is applied once per block to the block's partial sums (exact). The
//     weights stream once at memory speed whatever M is.
//   - M >= 9 (GEMM, prefill): a chunk of 128 k x 32 rows is decoded once to scaled F32 in a
//     16 KB buffer (L1), then an MR x 32 register-blocked micro-kernel (MR = 12 on AVX-512)
//     runs over every activation row tile, the activations packed k-major per tile.
//   F32 accumulation throughout, F32 products: no rounding of the activations. BF16
//   activations are widened to F32 once per call.
#pragma once

#include <memory>
#include <string>

#include "kernels/linear_kernel.h"

namespace nibble {

std::unique_ptr<LinearKernel> make_cpu_simd_kernel();

// The Highway target the dispatcher picks for cpu_simd on this CPU ("AVX3", "AVX2", ...).
std::string cpu_simd_kernel_target();

}  // namespace nibble
