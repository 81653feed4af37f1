// Vectorised, multi-threaded MXFP4 tensor quantize / dequantize (Highway, dynamic dispatch).
// Bit-exact with the scalar reference in mxfp4.cpp (tests/format/mxfp4_simd_test.cpp checks
// it on random data and on every BF16 bit pattern, both rules); the steps below mirror it:
//
//   quantize one block of 32 (N lanes per vector, 32/N vectors):
//     1. widen to F32 (BF16: << 16; F16: F16C from AVX2 up, else the scalar conversion)
//     2. amax as the integer maximum of |bits| (monotonic for non-negative floats): one
//        reduction that also flags Inf/NaN (|bits| >= 0x7f800000) -> NaN block
//     3. shared exponent from amax's bits (scalar, once per block), exactly the reference's
//        frexp-based rule; y = x * 2^-e (a power of two: one rounding, same as ldexp)
//     4. E2M1 code of |y| in [0, 8): below 2, 2|y| rounded to even through |y| + 2^22 (0.25 ->
//        0, 0.75 -> 2 = 1.0, 1.75 -> 4 = 2.0); from 2, round the F32 mantissa to one bit with
//        ties to even and rebias (252 = (127 - 1) << 1); min(code, 7) saturates; sign -> bit 3
//     5. pack lane pairs: as u64 lanes (even | odd << 32), x | x >> 28 puts even | odd << 4 in
//        the low byte of the even u32 lane; concatenate two vectors' even lanes; truncate.
//   dequantize: bytes -> u64 lanes (low nibble | high nibble << 32) -> u32 codes; magnitude
//   bits (m << 22) + (126 << 23) for m >= 2, m / 2 below; sign from bit 3; times 2^(s - 127).
//
// The scalar and EMU128 targets (CPUs without SSSE3) run the scalar reference instead.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "format/mxfp4_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "format/e2m1.h"
#include "format/e8m0.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "format/mxfp4_rows.h"

HWY_BEFORE_NAMESPACE();
namespace nibble {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET != HWY_SCALAR && HWY_TARGET != HWY_EMU128

// Shared exponent from the bits of a finite amax; equals mxfp4_shared_exponent (mxfp4.cpp).
// Branch-free: on real weights the ceil rule's test is a coin flip, and a mispredicted branch
// per block cost 40% of the throughput (docs/perf.md).
HWY_INLINE int SharedExponent(uint32_t amax_bits, bool ceil_rule) {
  // floor(log2(amax)) - 2 for normal amax. Zero and F32 subnormals (field 0) give -129 (-128
  // with ceil), which the clamp turns into the smallest scale, as the reference does.
  int exponent = int(amax_bits >> 23) - 127 - kE2M1MaxExponent;
  // ceil: amax / 2^exponent = 4 * (1.mantissa) > 6  <=>  mantissa > 0.5
  exponent += int(ceil_rule & ((amax_bits & 0x7fffff) > 0x400000));
  return std::min(std::max(exponent, kE8M0MinExponent), kE8M0MaxExponent);
}

// N source elements widened to F32 (kDType: F32, BF16 or F16, fixed at compile time).
template <DType kDType, class D, class Source>
HWY_INLINE hn::Vec<D> LoadF32(D d, const Source* p) {
  if constexpr (kDType == DType::F32) {
    return hn::LoadU(d, p);
  } else if constexpr (kDType == DType::BF16) {
    const hn::RebindToUnsigned<D> du;
    const hn::Rebind<uint16_t, D> du16;
    return hn::BitCast(d, hn::ShiftLeft<16>(hn::PromoteTo(du, hn::LoadU(du16, p))));
  } else {
    const hn::Rebind<hwy::float16_t, D> df16;
    return hn::PromoteTo(d, hn::LoadU(df16, reinterpret_cast<const hwy::float16_t*>(p)));
  }
}

// Encodes and packs one block of 32 source elements, given 2^-e in every lane.
template <DType kDType, class Source, class V>
HWY_INLINE void EncodeBlock(const Source* src, V inverse_scale, uint8_t* packed) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::Repartition<uint64_t, decltype(d)> du64;
  const hn::Rebind<uint8_t, decltype(d)> du8;
  constexpr size_t kMaxVectors = kMxfp4BlockSize / 4;  // 128-bit vectors: 8 per block
  const size_t n = hn::Lanes(d), vectors = kMxfp4BlockSize / n;
  const auto abs_mask = hn::Set(di, 0x7fffffff);
  const auto magic = hn::Set(d, 4194304.0f);  // 2^22: adding it rounds to a multiple of 0.5
  const auto magic_bits = hn::Set(di, 0x4a800000);
  const auto two_bits = hn::Set(di, 0x40000000);  // 2.0f
  const auto rounding = hn::Set(di, (1 << 21) - 1), lsb = hn::Set(di, 1);
  const auto rebias = hn::Set(di, 252), max_code = hn::Set(di, 7);
  hn::Vec<decltype(di)> codes[kMaxVectors];
  for (size_t i = 0; i < vectors; ++i) {
    const auto y = hn::Mul(LoadF32<kDType>(d, src + i * n), inverse_scale);
    const auto bits = hn::BitCast(di, y);
    const auto sign = hn::BitCast(di, hn::ShiftRight<28>(hn::BitCast(du, hn::AndNot(abs_mask, bits))));
    const auto ai = hn::And(bits, abs_mask);
    // |y| < 2: the grid is every 0.5, so the code is 2|y| rounded to even: |y| + 2^22 rounds
    // at 0.5 (ties to even) and leaves 2|y| in the low mantissa bits.
    const auto small = hn::Sub(hn::BitCast(di, hn::Add(hn::BitCast(d, ai), magic)), magic_bits);
    // |y| >= 2 (and >= 1): round the mantissa to one bit, ties to even, carry into the exponent.
    const auto odd = hn::And(hn::ShiftRight<22>(ai), lsb);
    const auto normal = hn::Sub(hn::ShiftRight<22>(hn::Add(ai, hn::Add(rounding, odd))), rebias);
    auto code = hn::IfThenElse(hn::Lt(ai, two_bits), small, normal);
    codes[i] = hn::Or(hn::Min(code, max_code), sign);
  }
  // Pack: in u64 lanes (even | odd << 32), x | x >> 28 leaves even | odd << 4 in the low byte
  // of the even u32 lane; two vectors' even lanes are concatenated, then truncated to bytes.
  for (size_t i = 0; i < vectors; i += 2) {
    const auto p0 = hn::BitCast(du64, codes[i]), p1 = hn::BitCast(du64, codes[i + 1]);
    const auto m0 = hn::BitCast(du, hn::Or(p0, hn::ShiftRight<28>(p0)));
    const auto m1 = hn::BitCast(du, hn::Or(p1, hn::ShiftRight<28>(p1)));
    hn::StoreU(hn::TruncateTo(du8, hn::ConcatEven(du, m1, m0)), du8, packed + i * n / 2);
  }
}

// One block of 32 source elements; returns its scale code (kE8M0NaN for Inf/NaN).
template <DType kDType, class Source>
HWY_INLINE uint8_t QuantizeBlock(const Source* src, ScaleRule rule, uint8_t* packed) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const size_t n = hn::Lanes(d), vectors = kMxfp4BlockSize / n;
  auto amax_bits = hn::Zero(di);
  const auto abs_mask = hn::Set(di, 0x7fffffff);
  for (size_t i = 0; i < vectors; ++i)
    amax_bits = hn::Max(amax_bits, hn::And(hn::BitCast(di, LoadF32<kDType>(d, src + i * n)), abs_mask));
  const uint32_t amax = uint32_t(hn::GetLane(hn::MaxOfLanes(di, amax_bits)));
  if (amax >= 0x7f800000u) {  // Inf or NaN
    std::memset(packed, 0, kMxfp4BlockBytes);
    return kE8M0NaN;
  }
  const int exponent = SharedExponent(amax, rule == ScaleRule::ceil);
  // 2^-e as F32 bits. NOTES: a finite amax < 2^128 gives e <= 126 (125 with ocp), so 127 - e
  // is in [1, 254]: always a normal F32, no branch needed for the 2^-127 subnormal.
  EncodeBlock<kDType>(src, hn::BitCast(d, hn::Set(di, (kE8M0Bias - exponent) << 23)), packed);
  return e8m0_encode_exponent(exponent);
}

// G = Lanes(d) consecutive blocks at once, so that the per-block work outside the encoding
// (the horizontal maximum, the shared exponent, the scale byte) runs in vector lanes, one lane
// per block: each block's N-lane maximum is folded across blocks with ConcatEven/ConcatOdd
// (log2(N) levels, about three operations per block instead of a full reduction each).
// Returns false, writing nothing, when a block holds Inf or NaN (the caller then goes block
// by block).
template <DType kDType, class Source>
HWY_INLINE bool QuantizeGroup(const Source* src, bool ceil_rule, uint8_t* packed, uint8_t* scales) {
  const hn::ScalableTag<float> d;
  const hn::RebindToSigned<decltype(d)> di;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::Rebind<uint8_t, decltype(d)> du8;
  const size_t n = hn::Lanes(d), vectors = kMxfp4BlockSize / n;
  const auto abs_mask = hn::Set(di, 0x7fffffff);
  hn::Vec<decltype(di)> m[HWY_LANES(float)];
  for (size_t g = 0; g < n; ++g) {
    m[g] = hn::Zero(di);
    for (size_t i = 0; i < vectors; ++i)
      m[g] = hn::Max(m[g], hn::And(hn::BitCast(di, LoadF32<kDType>(d, src + g * kMxfp4BlockSize + i * n)),
                                   abs_mask));
  }
  // After the level with `width` inputs, m[j] holds blocks 2j and 2j+1 side by side, each
  // in half as many lanes as before; at the end lane g of m[0] is block g's maximum.
  for (size_t width = n; width > 1; width /= 2)
    for (size_t j = 0; j < width / 2; ++j)
      m[j] = hn::Max(hn::ConcatEven(di, m[2 * j + 1], m[2 * j]), hn::ConcatOdd(di, m[2 * j + 1], m[2 * j]));
  const auto amax = m[0];
  if (!hn::AllFalse(di, hn::Lt(hn::Set(di, 0x7f7fffff), amax))) return false;  // Inf or NaN
  // SharedExponent, lane-wise.
  auto exponent = hn::Sub(hn::ShiftRight<23>(amax), hn::Set(di, 127 + kE2M1MaxExponent));
  if (ceil_rule) {
    const auto clips = hn::Lt(hn::Set(di, 0x400000), hn::And(amax, hn::Set(di, 0x7fffff)));
    exponent = hn::Sub(exponent, hn::VecFromMask(di, clips));  // mask lanes are -1
  }
  exponent = hn::Min(hn::Max(exponent, hn::Set(di, kE8M0MinExponent)), hn::Set(di, kE8M0MaxExponent));
  const auto codes = hn::BitCast(du, hn::Add(exponent, hn::Set(di, kE8M0Bias)));
  hn::StoreU(hn::TruncateTo(du8, codes), du8, scales);
  HWY_ALIGN float inverse[HWY_LANES(float)];
  hn::Store(hn::BitCast(d, hn::ShiftLeft<23>(hn::Sub(hn::Set(di, kE8M0Bias), exponent))), d, inverse);
  for (size_t g = 0; g < n; ++g)
    EncodeBlock<kDType>(src + g * kMxfp4BlockSize, hn::Set(d, inverse[g]), packed + g * kMxfp4BlockBytes);
  return true;
}

// Highway 1.0.3 converts F16 with hardware only from AVX2 (F16C) up; its emulation on older
// targets turns F16 Inf/NaN into finite numbers, so there F16 is widened with the exact scalar
// conversion instead.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
constexpr bool kExactF16Vectors = true;
#else
constexpr bool kExactF16Vectors = false;
#endif

template <DType kDType, class Source>
size_t QuantizeRowsT(const Source* source, size_t row_begin, size_t row_end, size_t k,
                     ScaleRule rule, uint8_t* blocks, uint8_t* scales) {
  const size_t row_blocks = mxfp4_blocks_per_row(k), full = k / kMxfp4BlockSize;
  size_t first_nan = kMxfp4NoBlock;
  constexpr bool kWidenScalar = kDType == DType::F16 && !kExactF16Vectors;
  if (k % kMxfp4BlockSize == 0 && !kWidenScalar) {
    // No padding: the blocks of consecutive rows are contiguous in the source and in both
    // outputs, so the row range is one run of blocks, taken G at a time.
    const size_t group = hn::Lanes(hn::ScalableTag<float>());
    const size_t end = row_end * row_blocks;
    size_t at = row_begin * row_blocks;
    const auto one_block = [&](size_t i) {
      scales[i] = QuantizeBlock<kDType>(source + i * kMxfp4BlockSize, rule, blocks + i * kMxfp4BlockBytes);
      if (scales[i] == kE8M0NaN && first_nan == kMxfp4NoBlock) first_nan = i;
    };
    for (; at + group <= end; at += group) {
      if (!QuantizeGroup<kDType>(source + at * kMxfp4BlockSize, rule == ScaleRule::ceil,
                                 blocks + at * kMxfp4BlockBytes, scales + at)) {
        for (size_t i = at; i < at + group; ++i) one_block(i);
      }
    }
    for (; at < end; ++at) one_block(at);
    return first_nan;
  }
  for (size_t r = row_begin; r < row_end; ++r) {
    const Source* row = source + r * k;
    for (size_t b = 0; b < row_blocks; ++b) {
      const size_t at = r * row_blocks + b;
      uint8_t scale;
      if (b < full && !kWidenScalar) {
        scale = QuantizeBlock<kDType>(row + b * kMxfp4BlockSize, rule, blocks + at * kMxfp4BlockBytes);
      } else {  // the padded last block (or scalar widening): a zero-filled F32 buffer
        float tail[kMxfp4BlockSize] = {};
        const size_t first = b * kMxfp4BlockSize;
        for (size_t i = first; i < std::min(k, first + kMxfp4BlockSize); ++i) {
          if constexpr (kDType == DType::F32) {
            tail[i - first] = row[i];
          } else {
            tail[i - first] = kDType == DType::BF16 ? bf16_to_f32(row[i]) : fp16_to_f32(row[i]);
          }
        }
        scale = QuantizeBlock<DType::F32>(tail, rule, blocks + at * kMxfp4BlockBytes);
      }
      scales[at] = scale;
      if (scale == kE8M0NaN && first_nan == kMxfp4NoBlock) first_nan = at;
    }
  }
  return first_nan;
}

size_t QuantizeRows(const void* source, DType dtype, size_t row_begin, size_t row_end, size_t k,
                    ScaleRule rule, uint8_t* blocks, uint8_t* scales) {
  const auto* half = static_cast<const uint16_t*>(source);
  switch (dtype) {
    case DType::F32:
      return QuantizeRowsT<DType::F32>(static_cast<const float*>(source), row_begin, row_end, k,
                                       rule, blocks, scales);
    case DType::BF16:
      return QuantizeRowsT<DType::BF16>(half, row_begin, row_end, k, rule, blocks, scales);
    default:  // F16 (the caller checked the dtype)
      return QuantizeRowsT<DType::F16>(half, row_begin, row_end, k, rule, blocks, scales);
  }
}

// 32 decoded values of one block, stored as F32 or as BF16 (the decoded values have at most two
// significant bits, so dropping the low 16 bits is exact; NaN stays the same quiet NaN).
HWY_INLINE void DequantizeBlock(const uint8_t* packed, uint8_t scale, void* out, DType out_dtype) {
  const hn::ScalableTag<float> d;
  const hn::RebindToUnsigned<decltype(d)> du;
  const hn::RebindToSigned<decltype(d)> di;
  const hn::Repartition<uint64_t, decltype(d)> du64;
  const hn::Rebind<uint32_t, decltype(du64)> du32_half;
  const hn::Rebind<uint8_t, decltype(du64)> du8;
  const hn::Rebind<uint16_t, decltype(d)> du16;
  const size_t n = hn::Lanes(d), vectors = kMxfp4BlockSize / n;
  const auto factor = hn::Set(d, e8m0_decode(scale));
  const auto low_nibble = hn::Set(du64, 0xf);
  const auto seven = hn::Set(du, 7), eight = hn::Set(du, 8);
  const auto normal_bias = hn::Set(du, 126u << 23), two = hn::Set(du, 2);
  const auto half = hn::Set(d, 0.5f);
  for (size_t i = 0; i < vectors; ++i) {
    const auto bytes = hn::PromoteTo(du64, hn::PromoteTo(du32_half, hn::LoadU(du8, packed + i * n / 2)));
    const auto codes = hn::BitCast(du, hn::Or(hn::And(bytes, low_nibble),
                                              hn::ShiftLeft<32>(hn::ShiftRight<4>(bytes))));
    const auto m = hn::And(codes, seven);
    const auto normal = hn::BitCast(d, hn::Add(hn::ShiftLeft<22>(m), normal_bias));
    const auto small = hn::Mul(hn::ConvertTo(d, hn::BitCast(di, m)), half);
    const auto magnitude = hn::IfThenElse(hn::RebindMask(d, hn::Lt(m, two)), small, normal);
    const auto sign = hn::ShiftLeft<28>(hn::And(codes, eight));
    const auto value = hn::Mul(hn::Or(magnitude, hn::BitCast(d, sign)), factor);
    if (out_dtype == DType::F32) {
      hn::StoreU(value, d, static_cast<float*>(out) + i * n);
    } else {
      const auto upper = hn::ShiftRight<16>(hn::BitCast(du, value));
      hn::StoreU(hn::TruncateTo(du16, upper), du16, static_cast<uint16_t*>(out) + i * n);
    }
  }
}

void DequantizeRows(const uint8_t* blocks, const uint8_t* scales, size_t row_begin, size_t row_end,
                    size_t k, void* out, DType out_dtype) {
  const size_t row_blocks = mxfp4_blocks_per_row(k), full = k / kMxfp4BlockSize;
  const size_t element_size = out_dtype == DType::F32 ? 4 : 2;
  for (size_t r = row_begin; r < row_end; ++r) {
    uint8_t* row = static_cast<uint8_t*>(out) + r * k * element_size;
    for (size_t b = 0; b < row_blocks; ++b) {
      const size_t at = r * row_blocks + b;
      uint8_t* dst = row + b * kMxfp4BlockSize * element_size;
      if (b < full) {
        DequantizeBlock(blocks + at * kMxfp4BlockBytes, scales[at], dst, out_dtype);
      } else {
        alignas(64) float tail[kMxfp4BlockSize];
        DequantizeBlock(blocks + at * kMxfp4BlockBytes, scales[at], tail, out_dtype);
        std::memcpy(dst, tail, (k - b * kMxfp4BlockSize) * element_size);
      }
    }
  }
}

#else  // scalar targets: the reference

size_t QuantizeRows(const void* source, DType dtype, size_t row_begin, size_t row_end, size_t k,
                    ScaleRule rule, uint8_t* blocks, uint8_t* scales) {
  return mxfp4_quantize_rows_scalar(source, dtype, row_begin, row_end, k, rule, blocks, scales);
}

void DequantizeRows(const uint8_t* blocks, const uint8_t* scales, size_t row_begin, size_t row_end,
                    size_t k, void* out, DType out_dtype) {
  mxfp4_dequantize_rows_scalar(blocks, scales, row_begin, row_end, k, out, out_dtype);
}

#endif

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace nibble
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "base/error.h"
#include "base/thread_pool.h"

namespace nibble {

HWY_EXPORT(QuantizeRows);
HWY_EXPORT(DequantizeRows);
HWY_EXPORT(TargetName);

namespace {
// Rows per task: at least ~64 K elements, so that small tensors do not pay for threads.
size_t row_grain(size_t k) { return std::max<size_t>(1, (size_t(1) << 16) / std::max<size_t>(k, 1)); }
}  // namespace

std::string mxfp4_simd_target() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

void mxfp4_quantize(const void* source, DType source_dtype, size_t rows, size_t k,
                    uint8_t* blocks, uint8_t* scales, const Mxfp4QuantizeOptions& options) {
  mxfp4_check_source_dtype(source_dtype, options.tensor_name);
  if (rows == 0 || k == 0) return;
  ThreadPool& pool = options.pool ? *options.pool : ThreadPool::global();
  const size_t row_blocks = mxfp4_blocks_per_row(k);
  std::vector<size_t> first_nan(pool.size(), kMxfp4NoBlock);
  pool.parallel_for(rows, row_grain(k), [&](size_t begin, size_t end, size_t thread) {
    first_nan[thread] = HWY_DYNAMIC_DISPATCH(QuantizeRows)(source, source_dtype, begin, end, k,
                                                           options.rule, blocks, scales);
  });
  if (options.strict) {
    const size_t at = *std::min_element(first_nan.begin(), first_nan.end());
    if (at != kMxfp4NoBlock) mxfp4_throw_non_finite(options.tensor_name, at / row_blocks, at % row_blocks, k);
  }
}

void mxfp4_dequantize(const uint8_t* blocks, const uint8_t* scales, size_t rows, size_t k,
                      void* out, DType out_dtype, ThreadPool* pool) {
  mxfp4_check_out_dtype(out_dtype);
  if (rows == 0 || k == 0) return;
  ThreadPool& threads = pool ? *pool : ThreadPool::global();
  threads.parallel_for(rows, row_grain(k), [&](size_t begin, size_t end, size_t) {
    HWY_DYNAMIC_DISPATCH(DequantizeRows)(blocks, scales, begin, end, k, out, out_dtype);
  });
}

}  // namespace nibble
#endif  // HWY_ONCE
