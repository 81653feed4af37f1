// MXFP4: OCP Microscaling FP4. Blocks of 32 E2M1 elements (e2m1.h) share one E8M0 scale
// (e8m0.h): element i of a block decodes to e2m1(code_i) * 2^(scale - 127).
//
// Packed layout of a [rows, K] matrix (the published gpt-oss checkpoints' layout; K runs along
// a row, blocks never cross rows):
//
//   blocks [rows, ceil(K/32), 16] U8        scales [rows, ceil(K/32)] U8 (E8M0)
//
//   one block, 16 bytes:   byte j = (code of element 2j+1) << 4 | (code of element 2j)
//   +--------+--------+-     -+--------+
//   | e1  e0 | e3  e2 |  ...  |e31 e30 |      low nibble = even element
//   +--------+--------+-     -+--------+
//
// K not a multiple of 32: the last block of each row is padded with +0 elements (code 0),
// so the product with any activation is exact if the activation's padding is read as zero;
// a checkpoint writer that must stay readable by other tools keeps such layers unquantized
// (src/quant does).
//
// Scale rules (the shared exponent e, with amax the largest magnitude in the block):
//   ocp     e = floor(log2(amax)) - 2 (OCP MX v1.0, section 6.3). amax/2^e lies in [4, 8), so
//           elements above 6*2^e saturate to 6: the largest element may lose up to 25% (7.99 ->
//           6) but every other element keeps the finest grid that fits the block.
//   ceil    e = ceil(log2(amax / 6)): the smallest scale that never clips. The largest
//           element loses at most half a step, but when amax/2^floor sits in (6, 8) the whole
//           block moves to a twice coarser grid, so small elements lose more. Lower max error,
//           often higher mean error; docs/quality.md measures both.
//   Either e is clamped to [-127, 127].
//
// Special inputs, defined:
//   - all-zero block: scale code 0 (2^-127), elements keep their sign (+0 / -0).
//   - subnormal inputs: handled like any value; once e clamps at -127 they may round to 0.
//   - +-Inf or NaN anywhere in a block: the block's scale becomes 0xFF (NaN) and its
//     elements 0, so every element decodes to NaN, as the OCP spec defines a NaN scale.
//     With `strict`, quantization instead throws an Error naming tensor, row and block.
//   - the top of the F32 range: with the ceil rule, |x| >= 3.5 * 2^126 (about 2.98e38, only
//     the largest BF16/F32 values) rounds to 4 * 2^126 = 2^128, which decodes to +-Inf in F32
//     and BF16. The OCP rule never does (it saturates such a block's maximum to 6 * 2^125).
//
// Decoding (F32 or BF16 output), for every scale code and element code:
//   - element = e2m1 * 2^(scale - 127) in F32. The products have at most two significant bits,
//     so each one from 2^-128 (0.5 under scale code 0, an F32 and BF16 subnormal) up to
//     1.5 * 2^127 is exact in F32 and in BF16; zeros keep their sign.
//   - products of 2^128 and more overflow to +-Inf: scale code 254 (2^127) with |e2m1| >= 2
//     (e.g. 6 * 2^127), scale code 253 (2^126) with |e2m1| >= 4. From finite input the
//     quantizer writes scale codes up to 252 with the OCP rule and 253 with the ceil rule (whose
//     only overflow is the 2^128 case above); the other overflowing pairs come only from
//     checkpoints written elsewhere.
//   - scale code 255 (NaN) decodes every element of its block to NaN, whatever its code.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "format/dtype.h"

namespace nibble {

class ThreadPool;

inline constexpr size_t kMxfp4BlockSize = 32;    // elements per block
inline constexpr size_t kMxfp4BlockBytes = 16;   // packed bytes per block

enum class ScaleRule : uint8_t { ocp, ceil };
const char* scale_rule_name(ScaleRule rule);
// Accepts "ocp" or "ceil"; throws an Error naming the valid ones otherwise.
ScaleRule scale_rule_from_name(const std::string& name);

inline size_t mxfp4_blocks_per_row(size_t k) { return (k + kMxfp4BlockSize - 1) / kMxfp4BlockSize; }

// The shared exponent of one block from its largest finite magnitude.
int mxfp4_shared_exponent(float amax, ScaleRule rule);

// Quantizes `count` (<= 32) values into one packed block (16 bytes, padding with +0) and
// returns the E8M0 scale code. Non-finite input gives the NaN block described above.
uint8_t mxfp4_quantize_block(const float* values, size_t count, ScaleRule rule, uint8_t* packed);
// Decodes one block into 32 floats.
void mxfp4_dequantize_block(const uint8_t* packed, uint8_t scale, float* out);

struct Mxfp4QuantizeOptions {
  ScaleRule rule = ScaleRule::ocp;
  bool strict = false;          // non-finite input throws instead of making a NaN block
  std::string tensor_name;      // named in errors
  ThreadPool* pool = nullptr;   // nullptr: ThreadPool::global()
};

// Quantizes a row-major [rows, k] matrix of F32, BF16 or F16 into the packed layout above.
// `blocks` holds rows * blocks_per_row(k) * 16 bytes, `scales` rows * blocks_per_row(k).
// Vectorised (Highway, the best target this CPU runs: mxfp4_simd_target()) and split over
// rows on the pool; bit-exact with mxfp4_quantize_scalar. With `strict`, the error names the
// first non-finite block in row-major order (after the whole tensor was processed).
void mxfp4_quantize(const void* source, DType source_dtype, size_t rows, size_t k,
                    uint8_t* blocks, uint8_t* scales, const Mxfp4QuantizeOptions& options = {});

// Dequantizes into a row-major [rows, k] matrix of F32 or BF16 (padding dropped). Vectorised
// and multi-threaded like mxfp4_quantize; bit-exact with mxfp4_dequantize_scalar.
void mxfp4_dequantize(const uint8_t* blocks, const uint8_t* scales, size_t rows, size_t k,
                      void* out, DType out_dtype, ThreadPool* pool = nullptr);

// The readable reference: one thread, block by block through mxfp4_quantize_block /
// mxfp4_dequantize_block (options.pool is ignored). The oracle of the vectorised path.
void mxfp4_quantize_scalar(const void* source, DType source_dtype, size_t rows, size_t k,
                           uint8_t* blocks, uint8_t* scales, const Mxfp4QuantizeOptions& options = {});
void mxfp4_dequantize_scalar(const uint8_t* blocks, const uint8_t* scales, size_t rows, size_t k,
                             void* out, DType out_dtype);

// The Highway target the tensor codec dispatches to on this CPU ("AVX3", "AVX2", ...).
std::string mxfp4_simd_target();

// Quantization error of `approx` against `reference` (n values):
//   nmse = sum((a - r)^2) / sum(r^2), sqnr_db = -10 log10(nmse), max_abs = max |a - r|.
// NaN anywhere makes nmse NaN, so comparisons against a bound fail.
struct QuantError {
  double nmse = 0, sqnr_db = 0, max_abs = 0;
};
QuantError quant_error(const float* reference, const float* approx, size_t n);

}  // namespace nibble
