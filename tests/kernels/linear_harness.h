// The linear-kernel test harness: runs any LinearKernel against cpu_ref (the oracle) on one
// case and reports through GoogleTest. tests/kernels/ runs it over every CPU kernel;
// tests/gpu/ includes it ("kernels/linear_harness.h") with an apply hook that moves the
// buffers to and from the device.
//
// One case:
//   - fresh random weights (every E2M1 code, scales 2^-9..2^7, zero padding past K), bias and
//     activations from a seed printed with the case, so a failure can be replayed
//     (NIBBLE_TEST_SEED=<seed> fixes it);
//   - the output is poisoned with NaN before apply; every element must be written and finite;
//   - the reference is cpu_ref on a subset of the activation rows when M * N * K is large
//     (first, last and random rows; kRefMacBudget says how many), on all rows otherwise;
//   - limits per case: NMSE over the checked rows <= limits.nmse, and every checked element
//     within limits.max_rel * |a_m|_2 * |w_n|_2 of the reference (plus half a BF16 step of
//     |reference| when the output is BF16). With F32 products and F32 accumulation the
//     rounding error of a dot product is a few eps * |a|.|w| (a random walk over K terms
//     whose sizes total |a|.|w|), so the defaults (4e-6 = ~70 eps, NMSE 1e-9) leave a wide
//     margin and still catch one element off by ~1e-5 of |a|.|w|. A kernel that rounds the
//     activations (LinearKernel::activation_rounding) is held to the same limits against
//     cpu_ref on the activations rounded the way its contract says (rounded_activation_rows,
//     written here independently of the kernel), so a wrong rounding mode or scale fails on
//     every case. NaN never passes (every comparison is written so that NaN fails it).
//   - a kernel that is not supported on the device or cannot implement the case is a visible
//     skip (GTEST_SKIP with its reason), never a pass.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "format/e2m1.h"
#include "format/e8m0.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "kernels/cpu/cpu_ref.h"
#include "kernels/linear_kernel.h"
#include "test_seed.h"

namespace nibble::test {

struct LinearCase {
  size_t n = 1, k = 32, m = 1;
  bool bias = false;
  ActivationFormat activation = ActivationFormat::f32;
  OutputFormat output = OutputFormat::f32;
};

// "N2880_K172_M3_bias_f32_bf16": a GoogleTest-safe case name.
inline std::string linear_case_name(const LinearCase& c) {
  return "N" + std::to_string(c.n) + "_K" + std::to_string(c.k) + "_M" + std::to_string(c.m) +
         (c.bias ? "_bias_" : "_nobias_") + activation_format_name(c.activation) + "_" +
         output_format_name(c.output);
}

// The grid: N in {1, 7, 64, 2880, 5120}, K in {32, 172, 2880, 4096} (172: the real
// stories260K, not a multiple of 32), M in {1..9, 64, 333}, with and without bias, F32 in and
// out; the other three format pairs on a smaller grid that still crosses every code path
// (a ragged K, a large K, GEMV, small-batch and GEMM M).
inline std::vector<LinearCase> standard_linear_cases() {
  std::vector<LinearCase> cases;
  const size_t ns[] = {1, 7, 64, 2880, 5120};
  const size_t ks[] = {32, 172, 2880, 4096};
  const size_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 64, 333};
  for (size_t n : ns)
    for (size_t k : ks)
      for (size_t m : ms)
        for (bool bias : {false, true}) cases.push_back({n, k, m, bias});
  const std::pair<ActivationFormat, OutputFormat> formats[] = {
      {ActivationFormat::bf16, OutputFormat::f32},
      {ActivationFormat::f32, OutputFormat::bf16},
      {ActivationFormat::bf16, OutputFormat::bf16}};
  for (auto [act, out] : formats)
    for (size_t n : {size_t(7), size_t(2880)})
      for (size_t k : {size_t(172), size_t(2880)})
        for (size_t m : {size_t(1), size_t(3), size_t(8), size_t(64)})
          for (bool bias : {false, true}) cases.push_back({n, k, m, bias, act, out});
  return cases;
}

struct LinearLimits {
  double nmse = 1e-9;     // raised to 2e-5 for BF16 outputs (their own rounding)
  double max_rel = 4e-6;  // of |a_m|_2 * |w_n|_2, see the header comment
  // The reference's activations are rounded this way first (see rounded_activation_rows).
  ActivationRounding rounding = ActivationRounding::none;
};

inline LinearLimits limits_for(ActivationRounding rounding) {
  LinearLimits limits;
  limits.rounding = rounding;
  return limits;
}

// Copies act (host) to where the kernel reads it, runs kernel.apply, and copies the output
// back into out (host). It must first copy the NaN-poisoned host `out` to the device output,
// so that elements the kernel never writes come back as NaN.
using ApplyHook = std::function<void(const LinearKernel& kernel, const LinearDesc& layer,
                                     const PreparedWeights& prepared, const void* act,
                                     size_t act_bytes, size_t m, void* out, size_t out_bytes)>;

// The CPU hook: buffers are host memory already.
inline void cpu_apply(const LinearKernel& kernel, const LinearDesc& layer,
                      const PreparedWeights& prepared, const void* act, size_t, size_t m,
                      void* out, size_t) {
  kernel.apply(layer, prepared, ActivationView{act, m, layer.activation},
               OutputView{out, layer.output}, nullptr);
}

// A random layer and its inputs.
struct RandomLinear {
  LinearDesc desc;
  std::vector<uint8_t> blocks, scales;
  std::vector<float> bias;
  std::vector<uint8_t> act;  // [m, k] of F32 or BF16
  Mxfp4HostWeights weights() const { return {blocks.data(), scales.data(), desc.n, desc.k}; }
};

// The shared test seed (tests/test_seed.h): NIBBLE_TEST_SEED=<seed> replays a case.
inline uint64_t linear_test_seed() { return test_seed(); }

inline RandomLinear make_random_linear(const LinearCase& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  RandomLinear r;
  r.desc.name = "test." + linear_case_name(c);
  r.desc.n = c.n;
  r.desc.k = c.k;
  r.desc.min_m = 1;
  r.desc.max_m = std::max<size_t>(c.m, 1);
  r.desc.activation = c.activation;
  r.desc.output = c.output;
  r.desc.has_bias = c.bias;
  const size_t bpr = mxfp4_blocks_per_row(c.k);
  r.blocks.resize(c.n * bpr * kMxfp4BlockBytes);
  r.scales.resize(c.n * bpr);
  for (size_t i = 0; i < r.blocks.size(); i += 8) {
    const uint64_t bits = rng();
    std::memcpy(&r.blocks[i], &bits, std::min<size_t>(8, r.blocks.size() - i));
  }
  // Zero the padding past K in the last block of each row, as the format requires.
  if (c.k % kMxfp4BlockSize != 0)
    for (size_t row = 0; row < c.n; ++row) {
      uint8_t* last = &r.blocks[(row * bpr + bpr - 1) * kMxfp4BlockBytes];
      for (size_t e = c.k % kMxfp4BlockSize; e < kMxfp4BlockSize; ++e)
        last[e / 2] &= e % 2 == 0 ? 0xf0 : 0x0f;
    }
  std::uniform_int_distribution<int> scale(127 - 9, 127 + 7);
  for (auto& s : r.scales) s = uint8_t(scale(rng));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  if (c.bias) {
    r.bias.resize(c.n);
    for (auto& b : r.bias) b = normal(rng);
  }
  if (c.activation == ActivationFormat::f32) {
    r.act.resize(c.m * c.k * sizeof(float));
    auto* a = reinterpret_cast<float*>(r.act.data());
    for (size_t i = 0; i < c.m * c.k; ++i) a[i] = normal(rng);
  } else {
    r.act.resize(c.m * c.k * sizeof(uint16_t));
    auto* a = reinterpret_cast<uint16_t*>(r.act.data());
    for (size_t i = 0; i < c.m * c.k; ++i) a[i] = f32_to_bf16(normal(rng));
  }
  return r;
}

inline double activation_at(const RandomLinear& r, size_t index) {
  if (r.desc.activation == ActivationFormat::f32)
    return reinterpret_cast<const float*>(r.act.data())[index];
  return bf16_to_f32(reinterpret_cast<const uint16_t*>(r.act.data())[index]);
}

inline double output_at(const std::vector<uint8_t>& out, OutputFormat f, size_t index) {
  if (f == OutputFormat::f32) return reinterpret_cast<const float*>(out.data())[index];
  return bf16_to_f32(reinterpret_cast<const uint16_t*>(out.data())[index]);
}

inline size_t output_bytes(OutputFormat f) { return f == OutputFormat::f32 ? 4 : 2; }
inline size_t activation_bytes(ActivationFormat f) { return f == ActivationFormat::f32 ? 4 : 2; }

// Multiply-accumulates the reference may spend per case: ~0.1 s of cpu_ref in a release build.
inline constexpr size_t kRefMacBudget = size_t(1) << 26;

// Activation rows `rows` of r as F32, rounded as `rounding` says; written from the contract in
// kernels/linear_kernel.h, not from any kernel. int8_block32, per 32-element block: amax =
// max |a|; q = round-half-even(a * fl(127 / amax)) in F32 (blocks with amax < 2^-100 are
// first scaled by 2^100, exactly); the value is q * fl(amax / 127). All-zero blocks stay zero.
inline std::vector<float> rounded_activation_rows(const RandomLinear& r,
                                                  const std::vector<size_t>& rows,
                                                  ActivationRounding rounding) {
  const size_t k = r.desc.k;
  std::vector<float> out(rows.size() * k);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < k; ++j) out[i * k + j] = float(activation_at(r, rows[i] * k + j));
  if (rounding == ActivationRounding::none) return out;
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t k0 = 0; k0 < k; k0 += kMxfp4BlockSize) {
      float* block = &out[i * k + k0];
      const size_t count = std::min(kMxfp4BlockSize, k - k0);
      float amax = 0.0f;
      for (size_t j = 0; j < count; ++j) amax = std::max(amax, std::fabs(block[j]));
      if (amax == 0.0f) continue;
      const float lift = amax < 0x1p-100f ? 0x1p100f : 1.0f;
      const float inverse = 127.0f / (amax * lift);
      const float step = amax / 127.0f;
      for (size_t j = 0; j < count; ++j) {
        const float scaled = (block[j] * lift) * inverse;
        block[j] = std::nearbyint(scaled) * step;  // the default rounding mode: half to even
      }
    }
  return out;
}

// cpu_ref's F32 outputs [rows][N] (bias included where the layer has one) for activation rows
// `rows` of r, and those rows' activations as it saw them: rounded as `rounding` says.
struct ReferenceRows {
  std::vector<float> act, out;
};
inline ReferenceRows reference_outputs(const RandomLinear& r, const std::vector<size_t>& rows,
                                       ActivationRounding rounding) {
  ReferenceRows ref{rounded_activation_rows(r, rows, rounding), {}};
  LinearDesc desc = r.desc;
  desc.activation = ActivationFormat::f32;
  desc.output = OutputFormat::f32;
  const auto kernel = make_cpu_ref_kernel();
  const auto prepared = kernel->prepare(desc, r.weights(), desc.has_bias ? r.bias.data() : nullptr);
  ref.out.resize(rows.size() * desc.n);
  kernel->apply(desc, *prepared, {ref.act.data(), rows.size(), desc.activation},
                {ref.out.data(), OutputFormat::f32}, nullptr);
  return ref;
}

// Which activation rows the reference checks: all when M * N * K fits kRefMacBudget, else the
// first, the last and random others (at least 3).
inline std::vector<size_t> reference_rows(size_t m, size_t n, size_t k, std::mt19937_64& rng) {
  const size_t per_row = std::max<size_t>(n * std::max<size_t>(k, 1), 1);
  const size_t budget = std::max<size_t>(kRefMacBudget / per_row, 3);
  std::vector<size_t> rows(m);
  for (size_t i = 0; i < m; ++i) rows[i] = i;
  if (m <= budget) return rows;
  std::shuffle(rows.begin() + 1, rows.end() - 1, rng);
  rows.resize(budget - 1);
  rows.push_back(m - 1);
  std::sort(rows.begin(), rows.end());
  return rows;
}

// Runs `kernel` on case `c` against cpu_ref. Skips (visibly) where the kernel refuses.
// Limits: limits_for(kernel.activation_rounding()) unless given.
inline void run_linear_case(const LinearKernel& kernel, const DeviceInfo& device,
                            const LinearCase& c, const ApplyHook& apply = cpu_apply,
                            std::optional<LinearLimits> given_limits = std::nullopt) {
  const LinearLimits limits = given_limits.value_or(limits_for(kernel.activation_rounding()));
  const uint64_t seed = linear_test_seed();
  SCOPED_TRACE("kernel " + std::string(kernel.name()) + ", case " + linear_case_name(c) +
               ", " + seed_trace(seed));
  RandomLinear r = make_random_linear(c, seed);
  if (const Check s = kernel.is_supported(device); !s.ok)
    GTEST_SKIP() << kernel.name() << " is not supported here: " << s.reason;
  if (const Check s = kernel.can_implement(r.desc); !s.ok)
    GTEST_SKIP() << kernel.name() << " cannot implement " << linear_case_name(c) << ": "
                 << s.reason;

  const float* bias = c.bias ? r.bias.data() : nullptr;
  const auto prepared = kernel.prepare(r.desc, r.weights(), bias);
  ASSERT_NE(prepared, nullptr);

  // Poison: NaN in every output element (F32 NaN, BF16 NaN).
  const size_t out_elems = c.m * c.n;
  std::vector<uint8_t> out(out_elems * output_bytes(c.output));
  if (c.output == OutputFormat::f32) {
    auto* o = reinterpret_cast<float*>(out.data());
    std::fill(o, o + out_elems, std::numeric_limits<float>::quiet_NaN());
  } else {
    auto* o = reinterpret_cast<uint16_t*>(out.data());
    std::fill(o, o + out_elems, uint16_t(0x7fc0));
  }
  apply(kernel, r.desc, *prepared, r.act.data(), r.act.size(), c.m, out.data(), out.size());

  // Every element written and finite (inputs are finite and bounded, so the product is).
  size_t unwritten = 0, first_unwritten = 0;
  for (size_t i = 0; i < out_elems; ++i)
    if (!std::isfinite(output_at(out, c.output, i)) && unwritten++ == 0) first_unwritten = i;
  ASSERT_EQ(unwritten, 0u) << unwritten << " of " << out_elems
                           << " outputs not written or not finite; first at m="
                           << first_unwritten / std::max<size_t>(c.n, 1)
                           << " n=" << first_unwritten % std::max<size_t>(c.n, 1);
  if (out_elems == 0) return;

  // The reference: cpu_ref on the chosen rows, their activations rounded as the kernel's
  // contract says (F32 holds BF16 activations and int8 * scale values exactly enough).
  std::mt19937_64 rng(seed ^ 0x5eed);
  const std::vector<size_t> rows = reference_rows(c.m, c.n, c.k, rng);
  const ReferenceRows reference = reference_outputs(r, rows, limits.rounding);
  const std::vector<float>& ref_act = reference.act;
  const std::vector<float>& ref = reference.out;

  // Norms for the element bound: |a_m|_2 per checked row, |w_n|_2 per weight row.
  const size_t bpr = mxfp4_blocks_per_row(c.k);
  std::vector<double> w_norm(c.n, 0.0);
  {
    std::vector<float> block(kMxfp4BlockSize);
    for (size_t n = 0; n < c.n; ++n) {
      double sum = 0;
      for (size_t b = 0; b < bpr; ++b) {
        mxfp4_dequantize_block(&r.blocks[(n * bpr + b) * kMxfp4BlockBytes], r.scales[n * bpr + b],
                               block.data());
        for (float v : block) sum += double(v) * v;
      }
      w_norm[n] = std::sqrt(sum);
    }
  }
  double err2 = 0, ref2 = 0, worst_excess = 0;
  size_t worst = 0, failures = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    double a2 = 0;
    for (size_t k = 0; k < c.k; ++k) a2 += double(ref_act[i * c.k + k]) * ref_act[i * c.k + k];
    const double a_norm = std::sqrt(a2);
    for (size_t n = 0; n < c.n; ++n) {
      const double want = ref[i * c.n + n];
      const double got = output_at(out, c.output, rows[i] * c.n + n);
      const double diff = got - want;
      err2 += diff * diff;
      // NMSE's scale: want^2, but never below the typical square of a dot product of these
      // norms, |a|^2 |w|^2 / K; a single output that cancels to near zero (N = 1, M = 1) would
      // otherwise turn the NMSE into that output's relative error.
      const double typical = a_norm * w_norm[n];
      ref2 += std::max(want * want, typical * typical / double(c.k));
      // BF16 output rounding: half a step, 2^-9 of |want|.
      const double out_slack = c.output == OutputFormat::bf16 ? std::fabs(want) / 256 : 0.0;
      const double allowed = limits.max_rel * a_norm * w_norm[n] + out_slack + 1e-30;
      const double excess = std::fabs(diff) / allowed;
      if (!(excess <= 1.0)) {  // NaN fails here too
        if (failures++ == 0 || !(excess <= worst_excess)) {
          worst_excess = excess;
          worst = i * c.n + n;
        }
      }
    }
  }
  const double nmse = ref2 > 0 ? err2 / ref2 : err2;
  const double nmse_limit = c.output == OutputFormat::bf16 ? std::max(limits.nmse, 2e-5) : limits.nmse;
  EXPECT_TRUE(nmse <= nmse_limit) << "NMSE " << nmse << " > " << nmse_limit << " over "
                                   << rows.size() << " checked rows";
  EXPECT_EQ(failures, 0u) << failures << " elements beyond the max-error bound; worst at m="
                          << rows[worst / c.n] << " n=" << worst % c.n << ": got "
                          << output_at(out, c.output, rows[worst / c.n] * c.n + worst % c.n)
                          << ", want " << ref[worst] << " (" << worst_excess
                          << "x the allowed error)";
}

}  // namespace nibble::test
