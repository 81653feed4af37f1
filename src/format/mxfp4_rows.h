// Row-range building blocks of the MXFP4 tensor codec, shared by the scalar reference
// (mxfp4.cpp) and the vectorised path (mxfp4_simd.cpp). Not for use outside src/format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "format/dtype.h"
#include "format/mxfp4.h"

namespace nibble {

// "No block held Inf or NaN".
inline constexpr size_t kMxfp4NoBlock = ~size_t(0);

// Quantizes rows [row_begin, row_end) of a [rows, k] F32/BF16/F16 matrix; returns the index
// (row * blocks_per_row + block) of the first block that held Inf or NaN, or kMxfp4NoBlock.
size_t mxfp4_quantize_rows_scalar(const void* source, DType dtype, size_t row_begin, size_t row_end,
                                  size_t k, ScaleRule rule, uint8_t* blocks, uint8_t* scales);
void mxfp4_dequantize_rows_scalar(const uint8_t* blocks, const uint8_t* scales, size_t row_begin,
                                  size_t row_end, size_t k, void* out, DType out_dtype);

void mxfp4_check_source_dtype(DType dtype, const std::string& tensor_name);
void mxfp4_check_out_dtype(DType dtype);
// The strict-mode error: names the tensor, the row, the block and its columns.
[[noreturn]] void mxfp4_throw_non_finite(const std::string& tensor_name, size_t row, size_t block,
                                         size_t k);

}  // namespace nibble
