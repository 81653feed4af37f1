#include "format/mxfp4.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/e2m1.h"
#include "format/e8m0.h"
#include "format/float16.h"
#include "format/mxfp4_rows.h"

namespace nibble {

const char* scale_rule_name(ScaleRule rule) { return rule == ScaleRule::ocp ? "ocp" : "ceil"; }

ScaleRule scale_rule_from_name(const std::string& name) {
  if (name == "ocp") return ScaleRule::ocp;
  if (name == "ceil") return ScaleRule::ceil;
  NIBBLE_THROW("unknown scale rule '{}': valid rules are 'ocp' (OCP MX v1.0, may clip the "
               "largest element) and 'ceil' (never clips)", name);
}

int mxfp4_shared_exponent(float amax, ScaleRule rule) {
  if (amax == 0.0f) return kE8M0MinExponent;
  int binade;
  std::frexp(amax, &binade);  // amax = m * 2^binade, m in [0.5, 1)
  int exponent = (binade - 1) - kE2M1MaxExponent;
  // amax / 2^exponent is in [4, 8): above 6 it would clip, so `ceil` takes the next scale.
  if (rule == ScaleRule::ceil && std::ldexp(amax, -exponent) > kE2M1Max) ++exponent;
  return std::clamp(exponent, kE8M0MinExponent, kE8M0MaxExponent);
}

uint8_t mxfp4_quantize_block(const float* values, size_t count, ScaleRule rule, uint8_t* packed) {
  float amax = 0.0f;
  bool finite = true;
  for (size_t i = 0; i < count; ++i) {
    finite &= std::isfinite(values[i]);
    amax = std::max(amax, std::fabs(values[i]));
  }
  if (!finite) {
    std::fill(packed, packed + kMxfp4BlockBytes, uint8_t(0));
    return kE8M0NaN;
  }
  const int exponent = mxfp4_shared_exponent(amax, rule);
  uint8_t codes[kMxfp4BlockSize] = {};
  for (size_t i = 0; i < count; ++i)
    codes[i] = e2m1_encode(std::ldexp(values[i], -exponent));  // exact: a power of two
  for (size_t j = 0; j < kMxfp4BlockBytes; ++j)
    packed[j] = uint8_t(codes[2 * j] | (codes[2 * j + 1] << 4));
  return e8m0_encode_exponent(exponent);
}

void mxfp4_dequantize_block(const uint8_t* packed, uint8_t scale, float* out) {
  const float factor = e8m0_decode(scale);
  for (size_t j = 0; j < kMxfp4BlockBytes; ++j) {
    out[2 * j] = e2m1_decode(packed[j] & 0xf) * factor;
    out[2 * j + 1] = e2m1_decode(packed[j] >> 4) * factor;
  }
}

namespace {

void load_as_f32(const void* source, DType dtype, size_t offset, size_t n, float* out) {
  switch (dtype) {
    case DType::F32:
      std::copy_n(static_cast<const float*>(source) + offset, n, out);
      return;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(static_cast<const uint16_t*>(source)[offset + i]);
      return;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = fp16_to_f32(static_cast<const uint16_t*>(source)[offset + i]);
      return;
    default:
      NIBBLE_THROW("MXFP4 quantization takes F32, BF16 or F16 input, not {}", dtype_name(dtype));
  }
}

}  // namespace

void mxfp4_check_source_dtype(DType dtype, const std::string& tensor_name) {
  NIBBLE_CHECK(dtype == DType::F32 || dtype == DType::BF16 || dtype == DType::F16,
               "tensor '{}': MXFP4 quantization takes F32, BF16 or F16 input, not {}", tensor_name,
               dtype_name(dtype));
}

void mxfp4_check_out_dtype(DType dtype) {
  NIBBLE_CHECK(dtype == DType::F32 || dtype == DType::BF16,
               "MXFP4 dequantization writes F32 or BF16, not {}", dtype_name(dtype));
}

void mxfp4_throw_non_finite(const std::string& tensor_name, size_t row, size_t block, size_t k) {
  const size_t first = block * kMxfp4BlockSize, last = std::min(k, first + kMxfp4BlockSize) - 1;
  NIBBLE_THROW("tensor '{}': row {}, block {} (columns {}..{}) holds Inf or NaN", tensor_name, row,
               block, first, last);
}

size_t mxfp4_quantize_rows_scalar(const void* source, DType dtype, size_t row_begin, size_t row_end,
                                  size_t k, ScaleRule rule, uint8_t* blocks, uint8_t* scales) {
  const size_t row_blocks = mxfp4_blocks_per_row(k);
  size_t first_nan = kMxfp4NoBlock;
  std::vector<float> row(k);
  for (size_t r = row_begin; r < row_end; ++r) {
    load_as_f32(source, dtype, r * k, k, row.data());
    for (size_t b = 0; b < row_blocks; ++b) {
      const size_t first = b * kMxfp4BlockSize, count = std::min(kMxfp4BlockSize, k - first);
      const size_t at = r * row_blocks + b;
      scales[at] = mxfp4_quantize_block(row.data() + first, count, rule, blocks + at * kMxfp4BlockBytes);
      if (scales[at] == kE8M0NaN && first_nan == kMxfp4NoBlock) first_nan = at;
    }
  }
  return first_nan;
}

void mxfp4_dequantize_rows_scalar(const uint8_t* blocks, const uint8_t* scales, size_t row_begin,
                                  size_t row_end, size_t k, void* out, DType out_dtype) {
  const size_t row_blocks = mxfp4_blocks_per_row(k);
  float block[kMxfp4BlockSize];
  for (size_t r = row_begin; r < row_end; ++r) {
    for (size_t b = 0; b < row_blocks; ++b) {
      mxfp4_dequantize_block(blocks + (r * row_blocks + b) * kMxfp4BlockBytes,
                             scales[r * row_blocks + b], block);
      const size_t first = b * kMxfp4BlockSize, count = std::min(kMxfp4BlockSize, k - first);
      if (out_dtype == DType::F32) {
        std::copy_n(block, count, static_cast<float*>(out) + r * k + first);
      } else {
        uint16_t* dst = static_cast<uint16_t*>(out) + r * k + first;
        for (size_t i = 0; i < count; ++i) dst[i] = f32_to_bf16(block[i]);
      }
    }
  }
}

void mxfp4_quantize_scalar(const void* source, DType source_dtype, size_t rows, size_t k,
                           uint8_t* blocks, uint8_t* scales, const Mxfp4QuantizeOptions& options) {
  mxfp4_check_source_dtype(source_dtype, options.tensor_name);
  if (rows == 0 || k == 0) return;
  const size_t at = mxfp4_quantize_rows_scalar(source, source_dtype, 0, rows, k, options.rule,
                                               blocks, scales);
  if (options.strict && at != kMxfp4NoBlock) {
    const size_t row_blocks = mxfp4_blocks_per_row(k);
    mxfp4_throw_non_finite(options.tensor_name, at / row_blocks, at % row_blocks, k);
  }
}

void mxfp4_dequantize_scalar(const uint8_t* blocks, const uint8_t* scales, size_t rows, size_t k,
                             void* out, DType out_dtype) {
  mxfp4_check_out_dtype(out_dtype);
  if (rows == 0 || k == 0) return;
  mxfp4_dequantize_rows_scalar(blocks, scales, 0, rows, k, out, out_dtype);
}

QuantError quant_error(const float* reference, const float* approx, size_t n) {
  double error_energy = 0, signal_energy = 0, max_abs = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(approx[i]) - double(reference[i]);
    error_energy += d * d;
    signal_energy += double(reference[i]) * double(reference[i]);
    max_abs = std::isnan(d) ? d : std::max(max_abs, std::fabs(d));
    if (std::isnan(d)) break;
  }
  QuantError e;
  e.max_abs = max_abs;
  e.nmse = std::isnan(max_abs) ? std::numeric_limits<double>::quiet_NaN()
           : signal_energy > 0 ? error_energy / signal_energy
                               : (error_energy > 0 ? std::numeric_limits<double>::infinity() : 0.0);
  e.sqnr_db = -10.0 * std::log10(e.nmse);
  return e;
}

}  // namespace nibble
