// The op kernels of the GPU model executor (src/kernels/cuda/cuda_{norm,rope,attention,
// elementwise}) against CPU references written here, as the CPU model computes each op
// (src/model/llama/llama_model.cpp): fresh random data, NaN-poisoned outputs, a max-error limit
// relative to the largest reference value and an NMSE limit per case; NaN never passes.
// Without a CUDA device every case is a visible skip; without CUDA compiled in, one skip says so.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "format/float16.h"
#include "model/sampler.h"
#include "test_seed.h"

#if NIBBLE_WITH_CUDA
#include <cuda_runtime.h>

#include "base/error.h"
#include "kernels/cuda/cuda_argmax.h"
#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_elementwise.h"
#include "kernels/cuda/cuda_norm.h"
#include "gpu/cuda_test_support.h"
#endif

namespace nibble {
namespace {

#if NIBBLE_WITH_CUDA

constexpr float kNan = std::numeric_limits<float>::quiet_NaN();

using test::DeviceVector;

std::vector<float> random_vector(std::mt19937& rng, size_t n, float mean = 0, float sd = 1) {
  std::normal_distribution<float> dist(mean, sd);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> bf16_to_f32_vector(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
  return out;
}

// max |got - want| / max |want| <= max_rel and NMSE = sum (got - want)^2 / sum want^2 <= nmse.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double max_rel,
                  double nmse, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_diff = 0, max_ref = 0, err = 0, ref = 0;
  size_t worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_FALSE(std::isnan(got[i])) << what << ": NaN at " << i << " (want " << want[i] << ")";
    const double d = std::abs(double(got[i]) - double(want[i]));
    if (d > max_diff) max_diff = d, worst = i;
    max_ref = std::max(max_ref, std::abs(double(want[i])));
    err += d * d;
    ref += double(want[i]) * want[i];
  }
  const double rel = max_ref > 0 ? max_diff / max_ref : max_diff;
  const double e = ref > 0 ? err / ref : err;
  EXPECT_LE(rel, max_rel) << what << ": worst at " << worst << ": got " << got[worst] << ", want "
                          << want[worst];
  EXPECT_LE(e, nmse) << what << ": NMSE";
}

// F32 output limits: tree reductions and cosf/expf against the CPU's sequential sums and libm.
constexpr double kF32MaxRel = 2e-5, kF32Nmse = 1e-10;
// BF16 output: one rounding of each value (2^-9 relative), against the F32 reference.
constexpr double kBf16MaxRel = 1.0 / 128, kBf16Nmse = 1e-5;

// ---- RMSNorm ---------------------------------------------------------------------------------

// The CPU model's formula, with the sum of squares in double: the oracle is the exact value,
// so that the GPU's tree sum and the CPU's sequential F32 sum (relative error up to ~n x 2^-24
// on 14336 values) are both held to it.
void rms_norm_ref(const float* x, const float* w, size_t n, float eps, float* out) {
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += double(x[i]) * x[i];
  const float scale = float(1.0 / std::sqrt(ss / double(n) + eps));
  for (size_t i = 0; i < n; ++i) out[i] = w[i] * (scale * x[i]);
}

struct NormCase {
  size_t rows, n;
  bool delta, bf16_out, in_place;
};

class CudaRmsNorm : public ::testing::TestWithParam<NormCase> {};

TEST_P(CudaRmsNorm, MatchesCpuReference) {
  NIBBLE_REQUIRE_CUDA();
  const NormCase c = GetParam();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  const std::vector<float> x = random_vector(rng, c.rows * c.n, 0.3f, 2.0f);
  const std::vector<float> delta = random_vector(rng, c.rows * c.n);
  const std::vector<float> w = random_vector(rng, c.n, 1.0f, 0.1f);
  const float eps = 1e-6f;

  std::vector<float> x_ref = x, want(c.rows * c.n);
  if (c.delta)
    for (size_t i = 0; i < x_ref.size(); ++i) x_ref[i] += delta[i];
  for (size_t r = 0; r < c.rows; ++r)
    rms_norm_ref(&x_ref[r * c.n], w.data(), c.n, eps, &want[r * c.n]);

  DeviceVector<float> d_x(x), d_delta(delta), d_w(w);
  DeviceVector<float> d_out32(std::vector<float>(c.rows * c.n, kNan));
  DeviceVector<uint16_t> d_out16(std::vector<uint16_t>(c.rows * c.n, 0x7fc0));  // NaN
  RmsNormLaunch l;
  l.x = d_x.get();
  l.delta = c.delta ? d_delta.get() : nullptr;
  l.weight = d_w.get();
  l.out = c.in_place ? static_cast<void*>(d_x.get())
                     : c.bf16_out ? static_cast<void*>(d_out16.get()) : d_out32.get();
  l.out_format = c.bf16_out ? OutputFormat::bf16 : OutputFormat::f32;
  l.rows = c.rows, l.n = c.n, l.eps = eps;
  NIBBLE_CUDA_CHECK(cuda_rms_norm(l, nullptr));
  const std::string what = std::to_string(c.rows) + "x" + std::to_string(c.n);
  if (c.in_place) {
    expect_close(d_x.to_host(), want, kF32MaxRel, kF32Nmse, what + " in place");
    return;
  }
  if (c.bf16_out)
    expect_close(bf16_to_f32_vector(d_out16.to_host()), want, kBf16MaxRel, kBf16Nmse, what);
  else
    expect_close(d_out32.to_host(), want, kF32MaxRel, kF32Nmse, what);
  if (c.delta) expect_close(d_x.to_host(), x_ref, 0, 0, what + ": x += delta");
}

// Rows of the residual stream (hidden 64 of stories260K, 4096, 14336) and of q/k heads (8, 64,
// 128); with and without the fused residual add; F32, BF16 and in-place outputs.
INSTANTIATE_TEST_SUITE_P(
    Cases, CudaRmsNorm,
    ::testing::Values(NormCase{1, 64, false, false, false}, NormCase{3, 4096, true, false, false},
                      NormCase{8, 4096, true, true, false}, NormCase{2, 14336, false, true, false},
                      NormCase{40, 8, false, false, true}, NormCase{32, 128, false, false, true},
                      NormCase{5, 64, true, false, false}, NormCase{7, 1000, true, true, false}),
    [](const auto& info) {
      const NormCase& c = info.param;
      return fmt::format("R{}_N{}{}{}{}", c.rows, c.n, c.delta ? "_add" : "",
                         c.bf16_out ? "_bf16" : "_f32", c.in_place ? "_inplace" : "");
    });

// ---- attention with the q/k norms, RoPE and the cache store ---------------------------------

void rope_ref(float* x, size_t count, size_t start, size_t heads, size_t d,
              const std::vector<float>& inv_freq, bool interleaved) {
  const size_t half = d / 2;
  for (size_t t = 0; t < count; ++t) {
    const float pos = float(start + t);
    for (size_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
      for (size_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * d;
        float* a = interleaved ? v + 2 * i : v + i;
        float* b = interleaved ? v + 2 * i + 1 : v + i + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
      }
    }
  }
}

// The CPU model's attention over host cache rows k, v [positions, kv_heads * d], with the
// sums in double (the exact oracle).
void attention_ref(const float* q, const float* k, const float* v, size_t count, size_t start,
                   size_t heads, size_t kv_heads, size_t d, size_t window, float* out) {
  const size_t group = heads / kv_heads, kv_width = kv_heads * d;
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<double> s(start + count);
  for (size_t t = 0; t < count; ++t)
    for (size_t h = 0; h < heads; ++h) {
      const size_t kvh = h / group, pos = start + t;
      const size_t first = window && pos + 1 > window ? pos + 1 - window : 0;
      const float* qh = q + (t * heads + h) * d;
      double max = -INFINITY;
      for (size_t j = first; j <= pos; ++j) {
        double dot = 0;
        for (size_t i = 0; i < d; ++i) dot += double(qh[i]) * k[j * kv_width + kvh * d + i];
        s[j] = dot * scale;
        max = std::max(max, s[j]);
      }
      double sum = 0;
      for (size_t j = first; j <= pos; ++j) sum += (s[j] = std::exp(s[j] - max));
      std::vector<double> o(d, 0.0);
      for (size_t j = first; j <= pos; ++j)
        for (size_t i = 0; i < d; ++i) o[i] += s[j] / sum * v[j * kv_width + kvh * d + i];
      for (size_t i = 0; i < d; ++i) out[(t * heads + h) * d + i] = float(o[i]);
    }
}

// A chunk's q|k|v products as LinearGroup lays them out, one fused product (q, k, v of a token
// side by side in each row) or three separate ones, and the launch's offsets and strides.
struct Products {
  std::vector<float> rows;
  size_t offset[3], stride[3];
};
Products lay_out(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                 size_t tokens, bool fused) {
  const size_t qw = q.size() / tokens, kvw = k.size() / tokens, width = qw + 2 * kvw;
  Products p{std::vector<float>(tokens * width), {0, 0, 0}, {0, 0, 0}};
  const std::vector<float>* parts[3] = {&q, &k, &v};
  const size_t widths[3] = {qw, kvw, kvw};
  for (size_t i = 0, at = 0; i < 3; at += (fused ? 1 : tokens) * widths[i], ++i) {
    p.offset[i] = at, p.stride[i] = fused ? width : widths[i];
    for (size_t t = 0; t < tokens; ++t)
      std::copy_n(parts[i]->begin() + t * widths[i], widths[i], p.rows.begin() + at + t * p.stride[i]);
  }
  return p;
}

// The device side of one attention step: the products, the cache (given rows, this chunk's and
// later ones NaN), inv_freq, the position, the merge's scratch, and a launch over them (F32
// output into `out`, no norms, no window).
struct AttentionDevice {
  AttentionDevice(const Products& products, const std::vector<float>& k_cache,
                  const std::vector<float>& v_cache, const std::vector<float>& inv_freq, size_t start,
                  size_t tokens, size_t heads, size_t kv_heads, size_t d, size_t splits)
      : rows(products.rows), k(k_cache), v(v_cache), freq(inv_freq),
        scratch(std::vector<float>(attention_scratch_floats(tokens, heads, splits, d), kNan)),
        counters(std::vector<unsigned>(tokens * heads, 0)),
        position(std::vector<int32_t>{int32_t(start)}),
        out(std::vector<float>(tokens * heads * d, kNan)) {
    l.q = rows.get() + products.offset[0], l.q_stride = products.stride[0];
    l.k = rows.get() + products.offset[1], l.k_stride = products.stride[1];
    l.v = rows.get() + products.offset[2], l.v_stride = products.stride[2];
    l.inv_freq = freq.get(), l.k_cache = k.get(), l.v_cache = v.get();
    l.out = out.get(), l.out_format = OutputFormat::f32, l.position = position.get();
    l.tokens = tokens, l.heads = heads, l.kv_heads = kv_heads, l.head_dim = d;
    l.scale = 1.0f / std::sqrt(float(d));
    l.splits = splits, l.scratch = scratch.get(), l.counters = counters.get();
  }
  DeviceVector<float> rows, k, v, freq, scratch;
  DeviceVector<unsigned> counters;
  DeviceVector<int32_t> position;
  DeviceVector<float> out;
  AttentionLaunch l;
};

// The cache after a step: rows before start as they were, this chunk's rows the keys within
// a few F32 roundings (the rotation's cos/sin against libm's) and the values exact, the rows
// after it untouched (NaN).
void expect_cache_rows(const std::vector<float>& got_k, const std::vector<float>& got_v,
                       const std::vector<float>& want_k, const std::vector<float>& want_v,
                       size_t start, size_t tokens, size_t kv_width) {
  for (size_t i = 0; i < got_k.size(); ++i) {
    const size_t row = i / kv_width;
    if (row >= start + tokens) {
      ASSERT_TRUE(std::isnan(got_k[i]) && std::isnan(got_v[i])) << "cache element " << i << " written";
      continue;
    }
    ASSERT_EQ(got_v[i], want_v[i]) << "value element " << i << " (copied exactly)";
    if (row < start) {
      ASSERT_EQ(got_k[i], want_k[i]) << "key element " << i << " of an earlier row changed";
      continue;
    }
    const float tol = float(kF32MaxRel) * 8 * (1 + std::abs(want_k[i]));
    ASSERT_NEAR(got_k[i], want_k[i], tol) << "key element " << i;
  }
}

struct RopeCase {
  size_t tokens, start, q_heads, kv_heads, head_dim;
  bool interleaved, qk_norm, fused;  // fused: q|k|v side by side per row, else three blocks
};

class CudaAttentionRope : public ::testing::TestWithParam<RopeCase> {};

// The chunk's q and k rows through the norms and RoPE as the CPU model does them: the keys
// stored in the cache, and the attention of the rotated queries over the cache.
TEST_P(CudaAttentionRope, RotatesStoresAndAttendsAsTheCpuModel) {
  NIBBLE_REQUIRE_CUDA();
  const RopeCase c = GetParam();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  const size_t d = c.head_dim, qw = c.q_heads * d, kvw = c.kv_heads * d;
  const size_t capacity = c.start + c.tokens + 2;
  // inv_freq as LlamaConfig::rope_inv_freq computes it for theta = 10000 (no scaling).
  std::vector<float> inv_freq(d / 2);
  for (size_t i = 0; i < inv_freq.size(); ++i)
    inv_freq[i] = float(1.0 / std::pow(10000.0, double(2 * i) / double(d)));
  std::vector<float> q = random_vector(rng, c.tokens * qw), k = random_vector(rng, c.tokens * kvw);
  const std::vector<float> v = random_vector(rng, c.tokens * kvw);
  const Products products = lay_out(q, k, v, c.tokens, c.fused);
  const std::vector<float> q_norm = random_vector(rng, d, 1, 0.3f), k_norm = random_vector(rng, d, 1, 0.3f);
  // The cache: earlier rows given, this chunk's rows and the spare ones NaN.
  std::vector<float> k_cache = random_vector(rng, capacity * kvw), v_cache = random_vector(rng, capacity * kvw);
  std::fill(k_cache.begin() + c.start * kvw, k_cache.end(), kNan);
  std::fill(v_cache.begin() + c.start * kvw, v_cache.end(), kNan);

  // The CPU model's order: per-head RMSNorm, RoPE, the keys and values into the cache rows.
  if (c.qk_norm) {
    for (size_t i = 0; i < c.tokens * c.q_heads; ++i) rms_norm_ref(&q[i * d], q_norm.data(), d, 1e-6f, &q[i * d]);
    for (size_t i = 0; i < c.tokens * c.kv_heads; ++i) rms_norm_ref(&k[i * d], k_norm.data(), d, 1e-6f, &k[i * d]);
  }
  rope_ref(q.data(), c.tokens, c.start, c.q_heads, d, inv_freq, c.interleaved);
  rope_ref(k.data(), c.tokens, c.start, c.kv_heads, d, inv_freq, c.interleaved);
  std::vector<float> want_k = k_cache, want_v = v_cache;
  std::copy(k.begin(), k.end(), want_k.begin() + c.start * kvw);
  std::copy(v.begin(), v.end(), want_v.begin() + c.start * kvw);
  std::vector<float> want(c.tokens * qw);
  attention_ref(q.data(), want_k.data(), want_v.data(), c.tokens, c.start, c.q_heads, c.kv_heads, d, 0,
                want.data());

  AttentionDevice dev(products, k_cache, v_cache, inv_freq, c.start, c.tokens, c.q_heads, c.kv_heads, d, 3);
  DeviceVector<float> d_qn(q_norm), d_kn(k_norm);
  if (c.qk_norm) dev.l.q_norm = d_qn.get(), dev.l.k_norm = d_kn.get();
  dev.l.eps = 1e-6f, dev.l.interleaved = c.interleaved;
  NIBBLE_CUDA_CHECK(cuda_attention(dev.l, nullptr));
  expect_cache_rows(dev.k.to_host(), dev.v.to_host(), want_k, want_v, c.start, c.tokens, kvw);
  expect_close(dev.out.to_host(), want, kF32MaxRel, kF32Nmse, "out");
}

// Decode (1 token) and chunks (3, 5, 8), positions 0 .. 4090; head_dim 8 (stories260K), 64,
// 128, 256; both RoPE conventions; with and without the Qwen3 norms; the fused layout and the
// separate one.
INSTANTIATE_TEST_SUITE_P(
    Cases, CudaAttentionRope,
    ::testing::Values(RopeCase{1, 0, 4, 2, 64, false, false, true},
                      RopeCase{1, 0, 4, 2, 64, true, false, false},
                      RopeCase{5, 37, 8, 2, 128, false, true, true},
                      RopeCase{5, 37, 8, 2, 128, true, true, false},
                      RopeCase{8, 1000, 8, 4, 8, false, false, false},
                      RopeCase{8, 1000, 8, 4, 8, true, true, true},
                      RopeCase{3, 4090, 32, 8, 128, false, false, true},
                      RopeCase{2, 11, 4, 4, 256, false, true, true}),
    [](const auto& info) {
      const RopeCase& c = info.param;
      return fmt::format("T{}_start{}_H{}_KV{}_D{}_{}{}_{}", c.tokens, c.start, c.q_heads,
                         c.kv_heads, c.head_dim, c.interleaved ? "interleaved" : "rotate_half",
                         c.qk_norm ? "_qknorm" : "", c.fused ? "fused" : "separate");
    });

struct AttentionCase {
  size_t tokens, start, heads, kv_heads, head_dim, window;
  bool bf16_out;
};

class CudaAttention : public ::testing::TestWithParam<AttentionCase> {};

// The attention itself, with RoPE at angle 0 (inv_freq zero: the rotation keeps every value
// exactly), over 1 to 64 splits, windows, BF16 output.
TEST_P(CudaAttention, MatchesCpuReference) {
  NIBBLE_REQUIRE_CUDA();
  const AttentionCase c = GetParam();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  const size_t positions = c.start + c.tokens, capacity = positions + 3;
  const size_t kv_width = c.kv_heads * c.head_dim;
  const std::vector<float> q = random_vector(rng, c.tokens * c.heads * c.head_dim);
  std::vector<float> k = random_vector(rng, capacity * kv_width);
  std::vector<float> v = random_vector(rng, capacity * kv_width);
  std::fill(k.begin() + positions * kv_width, k.end(), kNan);
  std::fill(v.begin() + positions * kv_width, v.end(), kNan);
  std::vector<float> want(c.tokens * c.heads * c.head_dim);
  attention_ref(q.data(), k.data(), v.data(), c.tokens, c.start, c.heads, c.kv_heads, c.head_dim,
                c.window, want.data());
  // This chunk's rows come from the products; in the cache they are NaN until written (reading
  // them there, or any row past them, would poison the result).
  const auto chunk = [&](const std::vector<float>& rows) {
    return std::vector<float>(rows.begin() + c.start * kv_width, rows.begin() + positions * kv_width);
  };
  const Products products = lay_out(q, chunk(k), chunk(v), c.tokens, false);
  std::vector<float> k_cache = k, v_cache = v;
  std::fill(k_cache.begin() + c.start * kv_width, k_cache.end(), kNan);
  std::fill(v_cache.begin() + c.start * kv_width, v_cache.end(), kNan);
  const std::vector<float> zero_freq(c.head_dim / 2, 0.0f);

  // One block per (head, token), then split over positions (flash-decoding) into at most 3,
  // 16 or 64 runs: one run below 65 positions (no merge), up to 24 runs at 1500 (merges of
  // more than one load batch).
  for (const size_t splits : {size_t(1), size_t(3), size_t(16), size_t(64)}) {
    SCOPED_TRACE(testing::Message() << splits << " splits");
    AttentionDevice dev(products, k_cache, v_cache, zero_freq, c.start, c.tokens, c.heads, c.kv_heads,
                        c.head_dim, splits);
    DeviceVector<uint16_t> d_out16(std::vector<uint16_t>(want.size(), 0x7fc0));
    if (c.bf16_out) dev.l.out = d_out16.get(), dev.l.out_format = OutputFormat::bf16;
    dev.l.window = c.window;
    for (int launch = 0; launch < 2; ++launch) {  // the second finds the counters reset
      NIBBLE_CUDA_CHECK(cudaMemcpy(dev.k.get(), k_cache.data(), k_cache.size() * 4, cudaMemcpyHostToDevice));
      NIBBLE_CUDA_CHECK(cudaMemcpy(dev.v.get(), v_cache.data(), v_cache.size() * 4, cudaMemcpyHostToDevice));
      NIBBLE_CUDA_CHECK(cudaMemset(dev.l.out, 0xff, want.size() * (c.bf16_out ? 2 : 4)));  // NaN
      NIBBLE_CUDA_CHECK(cuda_attention(dev.l, nullptr));
      if (c.bf16_out)
        expect_close(bf16_to_f32_vector(d_out16.to_host()), want, kBf16MaxRel, kBf16Nmse, "out");
      else
        expect_close(dev.out.to_host(), want, kF32MaxRel, kF32Nmse, "out");
      expect_cache_rows(dev.k.to_host(), dev.v.to_host(), k, v, c.start, c.tokens, kv_width);
      for (unsigned n : dev.counters.to_host()) ASSERT_EQ(n, 0u) << "a merge counter was left set";
    }
  }
}

// Decode (1 token) and prefill chunks (5, 8 tokens) at the start and deep into the cache; GQA
// groups of 1, 2, 4 and 8; head_dim 8 (stories260K), 64, 128, 256; windows longer and shorter
// than the prefix, including windows shorter than a warp's positions per trip (1, 3, 8, 16:
// warps with no position), and a long prefix (many trips per warp).
INSTANTIATE_TEST_SUITE_P(
    Cases, CudaAttention,
    ::testing::Values(
        AttentionCase{1, 0, 4, 2, 64, 0, false}, AttentionCase{5, 0, 4, 2, 64, 0, false},
        AttentionCase{1, 200, 32, 8, 128, 0, false}, AttentionCase{8, 120, 32, 8, 128, 0, true},
        AttentionCase{8, 40, 8, 4, 8, 0, false}, AttentionCase{3, 17, 4, 1, 256, 0, false},
        AttentionCase{8, 30, 4, 2, 64, 8, false}, AttentionCase{1, 50, 4, 2, 64, 3, false},
        AttentionCase{5, 2, 4, 2, 64, 3, false}, AttentionCase{4, 10, 2, 2, 128, 1, false},
        AttentionCase{1, 1000, 16, 2, 64, 100, true}, AttentionCase{8, 3, 4, 4, 64, 16, false},
        AttentionCase{2, 1500, 8, 8, 128, 0, false}, AttentionCase{7, 33, 4, 2, 64, 35, false}),
    [](const auto& info) {
      const AttentionCase& c = info.param;
      return fmt::format("T{}_start{}_H{}_KV{}_D{}_W{}_{}", c.tokens, c.start, c.heads,
                         c.kv_heads, c.head_dim, c.window, c.bf16_out ? "bf16" : "f32");
    });

// Chained (PDL) as in a forward: the kernels just before attention write the q|k|v products
// over NaN, the kernel after it overwrites them with NaN, and this chunk's cache rows are NaN
// until attention writes them; the rows before start were written by "earlier forwards" (here:
// before the stream's work). Attention reads those before its wait and the products after it:
// reading either too early, or the cache rows it writes, shows as NaN or as a difference from
// the reference.
TEST(CudaAttentionChained, ReadsThisChunksProductsAfterTheWait) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  cudaStream_t stream = nullptr;
  NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (const size_t tokens : {size_t(1), size_t(5)}) {
    SCOPED_TRACE(testing::Message() << tokens << " tokens");
    const size_t start = 100, heads = 32, kv_heads = 8, d = 128, splits = 5;
    const size_t positions = start + tokens, kv_width = kv_heads * d;
    const std::vector<float> q = random_vector(rng, tokens * heads * d);
    const std::vector<float> k = random_vector(rng, positions * kv_width);
    const std::vector<float> v = random_vector(rng, positions * kv_width);
    std::vector<float> want(q.size());
    attention_ref(q.data(), k.data(), v.data(), tokens, start, heads, kv_heads, d, 0, want.data());
    const auto chunk = [&](const std::vector<float>& rows) {
      return std::vector<float>(rows.begin() + start * kv_width, rows.end());
    };
    const Products products = lay_out(q, chunk(k), chunk(v), tokens, true);
    std::vector<float> k_cache = k, v_cache = v;
    std::fill(k_cache.begin() + start * kv_width, k_cache.end(), kNan);
    std::fill(v_cache.begin() + start * kv_width, v_cache.end(), kNan);
    AttentionDevice dev(products, k_cache, v_cache, std::vector<float>(d / 2, 0.0f), start, tokens,
                        heads, kv_heads, d, splits);
    DeviceVector<float> d_source(products.rows), d_nan(std::vector<float>(products.rows.size(), kNan));
    const size_t count = products.rows.size(), fresh = tokens * kv_width;
    for (int round = 0; round < 10; ++round) {
      SCOPED_TRACE(testing::Message() << "round " << round);
      NIBBLE_CUDA_CHECK(cudaMemsetAsync(dev.k.get() + start * kv_width, 0xff, fresh * 4, stream));
      NIBBLE_CUDA_CHECK(cudaMemsetAsync(dev.v.get() + start * kv_width, 0xff, fresh * 4, stream));
      NIBBLE_CUDA_CHECK(cudaMemsetAsync(dev.out.get(), 0xff, q.size() * 4, stream));
      NIBBLE_CUDA_CHECK(cuda_combine_rows(d_nan.get(), 1, 1, count, nullptr, dev.rows.get(), stream));
      NIBBLE_CUDA_CHECK(cuda_combine_rows(d_source.get(), 1, 1, count, nullptr, dev.rows.get(), stream));
      NIBBLE_CUDA_CHECK(cuda_attention(dev.l, stream));
      NIBBLE_CUDA_CHECK(cuda_combine_rows(d_nan.get(), 1, 1, count, nullptr, dev.rows.get(), stream));
      NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
      expect_close(dev.out.to_host(), want, kF32MaxRel, kF32Nmse, "out");
      expect_cache_rows(dev.k.to_host(), dev.v.to_host(), k, v, start, tokens, kv_width);
      if (HasFailure()) break;
    }
  }
  NIBBLE_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(CudaAttentionRefusals, ShapesAndPointersAreChecked) {
  AttentionLaunch l;
  float dummy = 0;
  int32_t position = 0;
  l.q = l.k = l.v = l.inv_freq = &dummy;
  l.k_cache = l.v_cache = &dummy;
  l.out = &dummy;
  l.position = &position;
  l.tokens = 1, l.heads = 4, l.kv_heads = 2, l.head_dim = 512;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);  // head_dim > 256
  l.head_dim = 7;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);  // odd head_dim: no RoPE pairs
  l.head_dim = 64, l.kv_heads = 3;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);  // 4 heads, 3 KV heads
  l.kv_heads = 2, l.position = nullptr;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);  // no position
  l.position = &position, l.inv_freq = nullptr;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);  // no RoPE frequencies
  l.inv_freq = &dummy, l.k_cache = nullptr;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);  // no cache
  l.k_cache = &dummy, l.splits = 4;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);  // splits without scratch
  l.splits = 0;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaErrorInvalidValue);
  l.tokens = 0;
  EXPECT_EQ(cuda_attention(l, nullptr), cudaSuccess);  // empty problem
}

// ---- elementwise -----------------------------------------------------------------------------

TEST(CudaSiluMul, MatchesCpuReference) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  struct Shape { size_t rows, cols; bool fused; };
  for (const Shape sh : {Shape{1, 1, true}, Shape{3, 1000, true}, Shape{3, 1000, false},
                         Shape{8, 14336, true}, Shape{8, 14336, false}}) {
    const size_t rows = sh.rows, cols = sh.cols, count = rows * cols;
    const std::string what = fmt::format("{}x{} {}", rows, cols, sh.fused ? "fused" : "separate");
    // A gate|up product: per row [gate | up] (fused), or the gate block then the up block.
    const std::vector<float> product = random_vector(rng, 2 * count, 0, 3);
    SiluMulLaunch l;
    l.gate_stride = l.up_stride = sh.fused ? 2 * cols : cols;
    const size_t up_at = sh.fused ? cols : count;
    std::vector<float> want(count);
    for (size_t r = 0; r < rows; ++r)
      for (size_t i = 0; i < cols; ++i) {
        const float g = product[r * l.gate_stride + i], u = product[up_at + r * l.up_stride + i];
        want[r * cols + i] = g / (1.0f + std::exp(-g)) * u;
      }
    DeviceVector<float> d_product(product), d_out(std::vector<float>(count, kNan));
    DeviceVector<uint16_t> d_out16(std::vector<uint16_t>(count, 0x7fc0));
    l.gate = d_product.get(), l.up = d_product.get() + up_at, l.rows = rows, l.cols = cols;
    l.out = d_out.get(), l.out_format = OutputFormat::f32;
    NIBBLE_CUDA_CHECK(cuda_silu_mul(l, nullptr));
    l.out = d_out16.get(), l.out_format = OutputFormat::bf16;
    NIBBLE_CUDA_CHECK(cuda_silu_mul(l, nullptr));
    expect_close(d_out.to_host(), want, kF32MaxRel, kF32Nmse, "f32, " + what);
    expect_close(bf16_to_f32_vector(d_out16.to_host()), want, kBf16MaxRel, kBf16Nmse, "bf16, " + what);
  }
  SiluMulLaunch bad;
  float dummy = 0;
  bad.gate = bad.up = &dummy, bad.out = &dummy, bad.rows = 2, bad.cols = 4, bad.gate_stride = 2;
  bad.up_stride = 4;
  EXPECT_EQ(cuda_silu_mul(bad, nullptr), cudaErrorInvalidValue);  // rows would overlap
}

TEST(CudaEmbeddingGather, CopiesRowsExactly) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  const size_t vocab = 300, cols = 72;
  const std::vector<float> table = random_vector(rng, vocab * cols);
  std::vector<uint16_t> table16(table.size());
  for (size_t i = 0; i < table.size(); ++i) table16[i] = f32_to_bf16(table[i]);
  const std::vector<int32_t> ids = {0, 299, 5, 5, 123, 42, 1, 298};
  DeviceVector<float> d_table(table), d_out(std::vector<float>(ids.size() * cols, kNan));
  DeviceVector<uint16_t> d_table16(table16);
  DeviceVector<int32_t> d_ids(ids);
  for (const bool bf16 : {false, true}) {
    EmbeddingGatherLaunch l;
    l.table = bf16 ? static_cast<const void*>(d_table16.get()) : d_table.get();
    l.table_bf16 = bf16;
    l.ids = d_ids.get(), l.out = d_out.get(), l.count = ids.size(), l.cols = cols;
    NIBBLE_CUDA_CHECK(cuda_embedding_gather(l, nullptr));
    const std::vector<float> got = d_out.to_host();
    for (size_t t = 0; t < ids.size(); ++t)
      for (size_t c = 0; c < cols; ++c) {
        const size_t at = size_t(ids[t]) * cols + c;
        const float want = bf16 ? bf16_to_f32(table16[at]) : table[at];
        ASSERT_EQ(got[t * cols + c], want) << (bf16 ? "bf16" : "f32") << " row " << t << " col " << c;
      }
  }
}

TEST(CudaSplitCombine, SplitIsExactAndCombineAddsBias) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  const size_t rows = 3, cols = 1000;
  const std::vector<float> x = random_vector(rng, rows * cols, 0, 5);
  DeviceVector<float> d_x(x);
  DeviceVector<uint16_t> d_split(std::vector<uint16_t>(2 * rows * cols, 0x7fc0));
  NIBBLE_CUDA_CHECK(cuda_split_bf16(d_x.get(), rows, cols, d_split.get(), nullptr));
  const std::vector<uint16_t> split = d_split.to_host();
  std::vector<float> parts(2 * rows * cols);
  for (size_t i = 0; i < rows * cols; ++i) {
    const uint16_t hi = f32_to_bf16(x[i]);
    ASSERT_EQ(split[i], hi) << i;
    ASSERT_EQ(split[rows * cols + i], f32_to_bf16(x[i] - bf16_to_f32(hi))) << i;
    // hi + lo keeps ~16 significant bits of x.
    const float back = bf16_to_f32(split[i]) + bf16_to_f32(split[rows * cols + i]);
    ASSERT_LE(std::abs(back - x[i]), std::abs(x[i]) * 1e-4f + 1e-30f) << i;
    parts[i] = bf16_to_f32(split[i]);
    parts[rows * cols + i] = bf16_to_f32(split[rows * cols + i]);
  }
  const std::vector<float> bias = random_vector(rng, cols);
  DeviceVector<float> d_parts(parts), d_bias(bias), d_out(std::vector<float>(rows * cols, kNan));
  NIBBLE_CUDA_CHECK(
      cuda_combine_rows(d_parts.get(), 2, rows, cols, d_bias.get(), d_out.get(), nullptr));
  std::vector<float> got = d_out.to_host();
  for (size_t i = 0; i < rows * cols; ++i)
    ASSERT_EQ(got[i], parts[i] + parts[rows * cols + i] + bias[i % cols]) << i;
  // One part, in place, no bias: unchanged; with a bias: + bias.
  NIBBLE_CUDA_CHECK(cuda_combine_rows(d_out.get(), 1, rows, cols, d_bias.get(), d_out.get(), nullptr));
  const std::vector<float> twice = d_out.to_host();
  for (size_t i = 0; i < rows * cols; ++i) ASSERT_EQ(twice[i], got[i] + bias[i % cols]) << i;
  // BF16 -> F32 widening is exact.
  DeviceVector<float> d_wide(std::vector<float>(2 * rows * cols, kNan));
  NIBBLE_CUDA_CHECK(cuda_bf16_to_f32(d_split.get(), d_wide.get(), 2 * rows * cols, nullptr));
  EXPECT_EQ(d_wide.to_host(), parts);
}

// ---- the greedy token --------------------------------------------------------------------

// Rows whose argmax the host's argmax() (sampler.h) also takes: the same index, and the same
// verdict on the logit it found (check_best_logit), on ties, NaNs, infinities and slice edges.
TEST(CudaArgmax, SameTokenAndVerdictAsTheHost) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  const float inf = std::numeric_limits<float>::infinity();
  struct Row {
    std::string what;
    std::vector<float> logits;
  };
  std::vector<Row> rows;
  for (size_t cols : {size_t(1), size_t(7), size_t(4096), size_t(4097), size_t(128256)})
    rows.push_back({fmt::format("{} random", cols), random_vector(rng, cols, 0, 3)});
  const auto variant = [&](const std::string& what, auto change) {
    Row r{what, random_vector(rng, 128256, -20, 3)};  // all negative: the key order's sign path
    change(r.logits);
    rows.push_back(std::move(r));
  };
  std::uniform_int_distribution<size_t> at(1, 128255);
  variant("a tie: the first wins", [&](std::vector<float>& v) {
    const size_t a = at(rng), b = at(rng);
    v[std::min(a, b)] = v[std::max(a, b)] = 50.0f;
  });
  variant("NaNs after index 0 are passed over", [&](std::vector<float>& v) {
    for (int i = 0; i < 100; ++i) v[at(rng)] = kNan;
  });
  variant("NaN at index 0: not finite", [&](std::vector<float>& v) { v[0] = kNan; });
  variant("+inf: not finite", [&](std::vector<float>& v) { v[at(rng)] = inf; });
  variant("all -inf: not finite", [&](std::vector<float>& v) { std::fill(v.begin(), v.end(), -inf); });
  variant("the largest at the end", [&](std::vector<float>& v) { v.back() = 1.0f; });

  for (const Row& r : rows) {
    SCOPED_TRACE(r.what);
    DeviceVector<float> d_logits(r.logits);
    DeviceVector<unsigned long long> d_key(std::vector<unsigned long long>(1, 0));
    ArgmaxLaunch l;
    l.logits = d_logits.get(), l.rows = 1, l.cols = r.logits.size(), l.keys = d_key.get();
    NIBBLE_CUDA_CHECK(cuda_argmax_rows(l, nullptr));
    float value = 0;
    uint32_t index = 0;
    decode_argmax_key(d_key.to_host()[0], &value, &index);
    bool host_finite = true, device_finite = true;
    int32_t want = -1;
    try {
      want = argmax(r.logits.data(), r.logits.size());
    } catch (const Error&) {
      host_finite = false;
    }
    try {
      check_best_logit(value);
    } catch (const Error&) {
      device_finite = false;
    }
    ASSERT_EQ(device_finite, host_finite) << "value " << value << " at " << index;
    if (!host_finite) continue;
    EXPECT_EQ(int32_t(index), want);
    EXPECT_EQ(value, r.logits[want]);
  }
}

// Several rows in one launch; a launch without rows does nothing; bad arguments are refused.
TEST(CudaArgmax, RowsAndRefusals) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  std::mt19937 rng{uint32_t(seed)};
  const size_t rows = 5, cols = 10000;
  const std::vector<float> logits = random_vector(rng, rows * cols);
  DeviceVector<float> d_logits(logits);
  DeviceVector<unsigned long long> d_keys(std::vector<unsigned long long>(rows, 0));
  ArgmaxLaunch l;
  l.logits = d_logits.get(), l.rows = rows, l.cols = cols, l.keys = d_keys.get();
  NIBBLE_CUDA_CHECK(cuda_argmax_rows(l, nullptr));
  const std::vector<unsigned long long> keys = d_keys.to_host();
  for (size_t r = 0; r < rows; ++r) {
    float value = 0;
    uint32_t index = 0;
    decode_argmax_key(keys[r], &value, &index);
    EXPECT_EQ(int32_t(index), argmax(logits.data() + r * cols, cols)) << "row " << r;
  }
  ArgmaxLaunch empty = l;
  empty.rows = 0, empty.logits = nullptr;
  EXPECT_EQ(cuda_argmax_rows(empty, nullptr), cudaSuccess);
  ArgmaxLaunch bad = l;
  bad.keys = nullptr;
  EXPECT_EQ(cuda_argmax_rows(bad, nullptr), cudaErrorInvalidValue);
  bad = l, bad.cols = 0;
  EXPECT_EQ(cuda_argmax_rows(bad, nullptr), cudaErrorInvalidValue);
  bad = l, bad.rows = 65536;
  EXPECT_EQ(cuda_argmax_rows(bad, nullptr), cudaErrorInvalidValue);
}

#else  // !NIBBLE_WITH_CUDA

TEST(CudaOps, NotBuilt) { GTEST_SKIP() << "built without CUDA (no nvcc found)"; }

#endif

}  // namespace
}  // namespace nibble
