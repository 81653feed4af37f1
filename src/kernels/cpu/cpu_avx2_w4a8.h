// cpu_avx2_w4a8: MXFP4 weights x int8 activations on x86-64 CPUs with AVX2 (x86-64-v3),
// integer dot products; cpu_vnni_w4a8 and cpu_vnni512_w4a8 are the same kernel with vpdpbusd
// where the CPU has VNNI (below). The fastest CPU kernels where they run; cpu_simd (F32
// arithmetic, no rounding of the activations) stays available by name (--mxfp4-kernel cpu_simd).
//
// Arithmetic. Each call quantizes its activations per 32-element block to int8 with an F32
// scale (amax / 127, round half to even; ActivationRounding::int8_block32 states it to the
// bit): the only rounding this kernel adds. The weights stay
// exact: 2 * E2M1 is an integer in -12..12, stored with +12 so that it is unsigned (vpmaddubsw
// multiplies unsigned by signed bytes); the dot product of a block is exact in int32, the +12
// is taken out with 12 * sum(activation codes), and the two power-of-two-times-F32 scales are
// applied once per block in F32. The error this adds to an output is at most
// sqrt(32) / 254 * |a|_2 * |w|_2 (Cauchy-Schwarz over the blocks); for Gaussian activations
// its standard deviation is about 5e-3 / sqrt(K) of |a|_2 * |w|_2: a small fraction of what MXFP4 weights cost (docs/quality.md).
// A block with a non-finite activation makes its products NaN.
//
// Prepared layout "mxfp4_w4a8_panel8": rows regrouped into panels of 8 (the last padded with
// zero codes, which decode to 0), and per (panel, block) 128 code bytes that one 32-byte load
// at a time turns into two vectors of 8 rows x 4 consecutive k (an int32 lane per row, as
// vpmaddwd sums them):
//
//   panel p (rows 8p..8p+7), block b (k = 32b..32b+31): codes[p][b], 128 bytes
//
//     load j (bytes 32j..32j+31), j = 0..3:   byte 4r + i  (row 8p+r, i = 0..3)
//       low nibble  = code[row][32b + 4j + i]         -> quad j      (k 4j..4j+3)
//       high nibble = code[row][32b + 16 + 4j + i]    -> quad j + 4  (k 16+4j..16+4j+3)
//
//   scales[p][b]: the 8 rows' E8M0 bytes, in a separate stream of 8 bytes per (panel, block).
//
// The same bytes as the checkpoint (17 per 32 weights, plus padding rows): every M reads this
// one layout, so a layer holds one prepared copy.
//
// Work. A panel's 8 rows are accumulated against up to 8 activation rows at once: each
// 32-byte load is decoded once (two vpshufb table lookups) and multiplied into every row
// (per row and block: 8 vpmaddubsw + 6 adds + 2 vpmaddwd with AVX2, 8 vpdpbusd with VNNI).
// M = 1..8 streams the weights once. Larger M runs in chunks of 8 rows over groups of panels
// small enough to stay in L2 (256 KB of codes), so the weights are read from memory once and
// decoded once per chunk, not per row.
#pragma once

#include <memory>

#include "kernels/linear_kernel.h"

namespace nibble {

std::unique_ptr<LinearKernel> make_cpu_avx2_w4a8_kernel();
// The same kernel with vpdpbusd (one instruction per 4 byte products and lane, where AVX2 takes
// vpmaddubsw + vpmaddwd + adds): x86-64 CPUs with AVX-VNNI (the VEX form) or AVX512-VNNI and
// AVX512-VL (the EVEX form on 256-bit registers). Its results are the AVX2 kernel's to the bit;
// the prepared layout is the same. `encoding` picks the form (best: VEX where the CPU has it,
// else EVEX); the registry's kernel takes the best, tests force each one.
// evex512 is cpu_vnni512_w4a8: the EVEX form on 512-bit registers (AVX512-F/BW/VL/VNNI), two
// panels per register, so each vpdpbusd, broadcast, scale and FMA serves 16 weight rows; the
// same bits again (a lone last panel takes the 256-bit EVEX code).
enum class VnniEncoding { best, vex, evex, evex512 };
std::unique_ptr<LinearKernel> make_cpu_vnni_w4a8_kernel(VnniEncoding encoding = VnniEncoding::best);

}  // namespace nibble
