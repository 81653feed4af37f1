// The CUDA kernels against cpu_ref through the shared harness (tests/kernels/linear_harness.h):
// fresh random data every case, NaN-poisoned outputs copied to the device before each apply,
// NMSE and max-error limits. Without a CUDA device (CI) every case is a visible skip with the
// kernel's reason; without CUDA compiled in, one visible skip says so.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "format/mxfp4.h"
#include "kernels/linear_harness.h"
#include "kernels/registry.h"

#if NIBBLE_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_elementwise.h"
#include "kernels/cuda/sm80_mxfp4_gemv.h"
#include "gpu/cuda_test_support.h"
#endif

namespace nibble {
namespace {

using test::LinearCase;

#if NIBBLE_WITH_CUDA

// The device the tests run on, or the CPU description when there is none (the kernels then
// refuse through is_supported, which the harness reports as a skip).
DeviceInfo test_device() {
  try {
    return cuda_device_info(0);
  } catch (const Error&) {
    DeviceInfo none;
    none.kind = DeviceKind::cuda;
    none.name = "none";
    return none;
  }
}

using test::DeviceVector;

// The harness's apply hook: host buffers to the device (the poisoned output too), apply on a
// non-default stream, and back.
void cuda_apply(const LinearKernel& kernel, const LinearDesc& layer,
                const PreparedWeights& prepared, const void* act, size_t act_bytes, size_t m,
                void* out, size_t out_bytes) {
  DeviceVector<uint8_t> d_act(act_bytes, 0), d_out(out_bytes, 0);
  cudaStream_t stream = nullptr;
  NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(d_act.get(), act, act_bytes, cudaMemcpyHostToDevice, stream));
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(d_out.get(), out, out_bytes, cudaMemcpyHostToDevice, stream));
  kernel.apply(layer, prepared, ActivationView{d_act.get(), m, layer.activation},
               OutputView{d_out.get(), layer.output}, stream);
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(out, d_out.get(), out_bytes, cudaMemcpyDeviceToHost, stream));
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
  NIBBLE_CUDA_CHECK(cudaStreamDestroy(stream));
}

// The harness grid at M <= 8 (the GEMV's range), plus the shapes: odd N, K = 2880,
// the gpt-oss layers, 4096x14336 and the 201088x2880 lm_head, in every format pair.
std::vector<LinearCase> gemv_cases() {
  std::vector<LinearCase> cases;
  for (const LinearCase& c : test::standard_linear_cases())
    if (c.m <= kGemvMaxM) cases.push_back(c);
  const std::pair<size_t, size_t> shapes[] = {{5120, 2880}, {2880, 4096}, {5760, 2880},
                                              {2880, 2880}, {4096, 14336}, {4097, 2880},
                                              {33, 2880},   {2881, 96}};
  const std::pair<ActivationFormat, OutputFormat> formats[] = {
      {ActivationFormat::bf16, OutputFormat::bf16}, {ActivationFormat::bf16, OutputFormat::f32},
      {ActivationFormat::f32, OutputFormat::f32}, {ActivationFormat::f32, OutputFormat::bf16}};
  for (auto [n, k] : shapes)
    for (size_t m : {1, 2, 4, 8})
      for (auto [act, out] : formats) cases.push_back({n, k, m, (m % 2) == 0, act, out});
  for (size_t m : {1, 3, 8})
    cases.push_back({201088, 2880, m, false, ActivationFormat::bf16, OutputFormat::bf16});
  std::vector<LinearCase> unique;  // the extra shapes repeat a few of the grid's cases
  std::set<std::string> seen;
  for (const LinearCase& c : cases)
    if (seen.insert(test::linear_case_name(c)).second) unique.push_back(c);
  return unique;
}

class Sm80Mxfp4Gemv : public ::testing::TestWithParam<LinearCase> {};

TEST_P(Sm80Mxfp4Gemv, MatchesCpuRef) {
  const auto kernel = make_sm80_mxfp4_gemv_kernel();
  // The GPU kernel's limits: BF16 activations multiply exactly (E2M1 is exact in BF16) and
  // accumulate in FP32; F32 activations enter as two BF16 terms (hi + lo, ~16 bits), so every
  // element is within 2^-16 |a_m| |w_n|. NMSE 1e-6 leaves room for one-element cases (N = 1)
  // whose result cancels to near zero; real errors (a wrong scale or code) give NMSE ~1e-2+.
  test::LinearLimits limits;
  limits.nmse = 1e-6;
  limits.max_rel = 1.0 / 65536;
  test::run_linear_case(*kernel, test_device(), GetParam(), cuda_apply, limits);
}

INSTANTIATE_TEST_SUITE_P(Cases, Sm80Mxfp4Gemv, ::testing::ValuesIn(gemv_cases()),
                         [](const auto& info) { return test::linear_case_name(info.param); });

// Scale codes 0 (2^-127) and 255 (NaN) take the kernel's exact path: a NaN scale makes its
// row NaN in every activation row, everything else still matches cpu_ref.
TEST(Sm80Mxfp4GemvScales, SpecialScaleCodesAreExact) {
  const DeviceInfo device = test_device();
  const auto kernel = make_sm80_mxfp4_gemv_kernel();
  if (const Check s = kernel->is_supported(device); !s.ok)
    GTEST_SKIP() << kernel->name() << " is not supported here: " << s.reason;
  const LinearCase c{37, 200, 5, true, ActivationFormat::f32, OutputFormat::f32};
  const uint64_t seed = test::linear_test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  test::RandomLinear r = test::make_random_linear(c, seed);
  const size_t bpr = mxfp4_blocks_per_row(c.k);
  r.scales[5 * bpr + 3] = 0xff;                                // row 5: NaN
  for (size_t b = 0; b < bpr; ++b) r.scales[9 * bpr + b] = 0;  // row 9: 2^-127 everywhere
  r.scales[11 * bpr + 1] = 0;                                  // row 11: one tiny block
  const auto prepared = kernel->prepare(r.desc, r.weights(), r.bias.data());
  std::vector<float> out(c.m * c.n, std::numeric_limits<float>::quiet_NaN());
  cuda_apply(*kernel, r.desc, *prepared, r.act.data(), r.act.size(), c.m, out.data(),
             out.size() * sizeof(float));
  const auto ref_kernel = make_cpu_ref_kernel();
  const auto ref_prepared = ref_kernel->prepare(r.desc, r.weights(), r.bias.data());
  std::vector<float> ref(c.m * c.n);
  ref_kernel->apply(r.desc, *ref_prepared, {r.act.data(), c.m, c.activation},
                    {ref.data(), OutputFormat::f32}, nullptr);
  // Bound: 2^-12 |a_m| |w_n| (F32 activations enter as two BF16 terms, ~16 bits).
  std::vector<float> w(c.n * c.k);
  mxfp4_dequantize(r.blocks.data(), r.scales.data(), c.n, c.k, w.data(), DType::F32);
  const auto* a = reinterpret_cast<const float*>(r.act.data());
  for (size_t m = 0; m < c.m; ++m)
    for (size_t n = 0; n < c.n; ++n) {
      const float got = out[m * c.n + n], want = ref[m * c.n + n];
      if (n == 5) {
        EXPECT_TRUE(std::isnan(got)) << "m=" << m << " n=5 has a NaN scale, got " << got;
        continue;
      }
      double a2 = 0, w2 = 0;
      for (size_t k = 0; k < c.k; ++k) {
        a2 += double(a[m * c.k + k]) * a[m * c.k + k];
        w2 += double(w[n * c.k + k]) * w[n * c.k + k];
      }
      const double bound = std::sqrt(a2 * w2) / 4096 + 1e-30;
      EXPECT_TRUE(std::fabs(double(got) - want) <= bound)
          << "m=" << m << " n=" << n << ": got " << got << ", want " << want << ", bound " << bound;
    }
}

// The SwiGLU epilogue (rows paired in the pack, out [M, N/2] = silu(gate) * up): against the
// same kernel's plain product of the same weights (every row's sum is bit-identical, the
// pairing moves rows between tiles only), with silu taken on the host. Odd pair counts, pairs
// not a multiple of the 8 a tile holds, K = 172 and 2880, every M and format, bias or not;
// the output buffer's tail past M x N/2 must stay poisoned.
TEST(Sm80Mxfp4GemvSwiglu, MatchesThePlainProductThenSilu) {
  const DeviceInfo device = test_device();
  const auto kernel = make_sm80_mxfp4_gemv_kernel();
  if (const Check s = kernel->is_supported(device); !s.ok)
    GTEST_SKIP() << kernel->name() << " is not supported here: " << s.reason;
  const uint64_t seed = test::linear_test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const std::pair<size_t, size_t> shapes[] = {{2, 64}, {14, 172}, {66, 2880}, {2 * 1440, 2880}, {2 * 3000, 512}};
  const std::pair<ActivationFormat, OutputFormat> formats[] = {
      {ActivationFormat::bf16, OutputFormat::bf16}, {ActivationFormat::f32, OutputFormat::f32}};
  size_t index = 0;
  for (auto [n, k] : shapes)
    for (size_t m : {1, 3, 8})
      for (auto [act, out_format] : formats) {
        const LinearCase c{n, k, m, (index++ % 2) == 0, act, out_format};
        SCOPED_TRACE(test::linear_case_name(c));
        const test::RandomLinear r = test::make_random_linear(c, seed + index);
        const size_t half = n / 2, out_elem = out_format == OutputFormat::bf16 ? 2 : 4;
        const auto plain_prepared = kernel->prepare(r.desc, r.weights(), r.bias.data());
        std::vector<float> plain(m * n, std::numeric_limits<float>::quiet_NaN());
        LinearDesc plain_desc = r.desc;
        plain_desc.output = OutputFormat::f32;
        cuda_apply(*kernel, plain_desc, *plain_prepared, r.act.data(), r.act.size(), m,
                   plain.data(), plain.size() * sizeof(float));

        LinearDesc desc = r.desc;
        desc.epilogue = LinearEpilogue::swiglu;
        ASSERT_TRUE(kernel->supports_epilogue(desc.epilogue));
        ASSERT_TRUE(kernel->can_implement(desc).ok);
        const auto prepared = kernel->prepare(desc, r.weights(), r.bias.data());
        const size_t tail = 64;  // poisoned elements past the output
        std::vector<uint8_t> got((m * half + tail) * out_elem, 0xff);  // NaN in both formats
        cuda_apply(*kernel, desc, *prepared, r.act.data(), r.act.size(), m, got.data(), got.size());
        size_t bad = 0;
        for (size_t row = 0; row < m; ++row)
          for (size_t i = 0; i < half; ++i) {
            const float g = plain[row * n + i], u = plain[row * n + half + i];
            const float want = g / (1.0f + std::exp(-g)) * u;
            const size_t at = row * half + i;
            const float have = out_format == OutputFormat::bf16
                                   ? bf16_to_f32(reinterpret_cast<const uint16_t*>(got.data())[at])
                                   : reinterpret_cast<const float*>(got.data())[at];
            // exp on the host and the device may differ by an ulp; BF16 output then by one BF16 step.
            const double bound = (out_format == OutputFormat::bf16 ? 1.0 / 128 : 1e-6) * std::fabs(want) + 1e-30;
            if (!(std::fabs(double(have) - want) <= bound) && bad++ < 5)
              ADD_FAILURE() << "m=" << row << " pair " << i << ": got " << have << ", want " << want
                            << " (gate " << g << ", up " << u << ")";
          }
        EXPECT_EQ(bad, 0u);
        for (size_t b = m * half * out_elem; b < got.size(); ++b)
          ASSERT_EQ(got[b], 0xff) << "byte " << b << " past the output was written";
      }
}

float activation_at(const std::vector<uint8_t>& bytes, ActivationFormat f, size_t i) {
  return f == ActivationFormat::bf16 ? bf16_to_f32(reinterpret_cast<const uint16_t*>(bytes.data())[i])
                                     : reinterpret_cast<const float*>(bytes.data())[i];
}

// An RMSNorm folded into the products around it (FoldedNorm): the product before it (width H,
// odd and not a multiple of 8 included) must add its plain product to the residual exactly,
// write weight * x in the activation format exactly, and each 8-column sum of squares; the
// products after it (plain, with a bias, and with the SwiGLU epilogue) must equal their plain
// product of the same activations times the norm's scale, plus the bias. Outputs and partial
// sums poisoned past their ends, both activation formats, M = 1, 3, 8.
TEST(Sm80Mxfp4GemvFoldedNorm, ProductsAroundTheNormMatchItsArithmetic) {
  const DeviceInfo device = test_device();
  const auto kernel = make_sm80_mxfp4_gemv_kernel();
  if (const Check s = kernel->is_supported(device); !s.ok)
    GTEST_SKIP() << kernel->name() << " is not supported here: " << s.reason;
  ASSERT_TRUE(kernel->supports_folded_norm());
  const uint64_t seed = test::linear_test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const float eps = 1e-5f;
  size_t index = 0;
  for (auto [hidden, k] : {std::pair<size_t, size_t>{100, 172}, {2881, 2880}, {4096, 512}})
    for (size_t m : {1, 3, 8})
      for (ActivationFormat act : {ActivationFormat::bf16, ActivationFormat::f32}) {
        ++index;
        SCOPED_TRACE(testing::Message() << "H=" << hidden << " K=" << k << " M=" << m << " "
                                        << activation_format_name(act));
        const OutputFormat act_out = as_output_format(act);
        const size_t elem = activation_format_bytes(act), slots = folded_norm_slots(hidden);
        std::mt19937_64 rng(seed + index);
        std::uniform_real_distribution<float> uniform(-2.0f, 2.0f);

        // The product before the norm, its plain output first.
        const test::RandomLinear before =
            test::make_random_linear({hidden, k, m, true, act, OutputFormat::f32}, seed + 100 * index);
        const auto before_prepared = kernel->prepare(before.desc, before.weights(), before.bias.data());
        std::vector<float> plain(m * hidden, std::numeric_limits<float>::quiet_NaN());
        cuda_apply(*kernel, before.desc, *before_prepared, before.act.data(), before.act.size(), m,
                   plain.data(), plain.size() * sizeof(float));
        std::vector<float> x0(m * hidden), weight(hidden);
        for (float& v : x0) v = uniform(rng);
        for (float& v : weight) v = uniform(rng);
        const size_t tail = 40;  // poisoned values past each output
        DeviceVector<uint8_t> d_act(before.act), d_normed((m * hidden + tail) * elem, 0xff);
        DeviceVector<float> d_x(x0), d_w(weight);
        DeviceVector<uint32_t> d_partials(m * slots + tail, 0xff);
        const FoldedNorm fold{reinterpret_cast<float*>(d_partials.get()), hidden, eps, d_x.get(),
                              d_w.get()};
        kernel->apply(before.desc, *before_prepared, ActivationView{d_act.get(), m, act},
                      OutputView{d_normed.get(), act_out, fold}, nullptr);
        const auto x = d_x.to_host();
        const auto normed = d_normed.to_host();
        const auto partials = d_partials.to_host();
        size_t bad = 0;
        std::vector<double> squares(m, 0.0);
        for (size_t row = 0; row < m; ++row)
          for (size_t c = 0; c < hidden; ++c) {
            const size_t i = row * hidden + c;
            const float want_x = x0[i] + plain[i], want_out = weight[c] * want_x;
            const float want_normed = act == ActivationFormat::bf16 ? bf16_to_f32(f32_to_bf16(want_out)) : want_out;
            if ((x[i] != want_x || activation_at(normed, act, i) != want_normed) && bad++ < 5)
              ADD_FAILURE() << "m=" << row << " column " << c << ": x " << x[i] << " (want "
                            << want_x << "), out " << activation_at(normed, act, i) << " (want "
                            << want_normed << ")";
            squares[row] += double(want_x) * want_x;
          }
        for (size_t row = 0; row < m; ++row)
          for (size_t j = 0; j < slots; ++j) {
            double want = 0.0;
            for (size_t c = 8 * j; c < std::min(hidden, 8 * j + 8); ++c)
              want += double(x[row * hidden + c]) * x[row * hidden + c];
            const float have = std::bit_cast<float>(partials[row * slots + j]);
            if (!(std::fabs(have - want) <= 1e-6 * want + 1e-30) && bad++ < 5)
              ADD_FAILURE() << "m=" << row << " slot " << j << ": " << have << ", want " << want;
          }
        EXPECT_EQ(bad, 0u);
        for (size_t b = m * hidden * elem; b < normed.size(); ++b)
          ASSERT_EQ(normed[b], 0xff) << "byte " << b << " past the norm's output was written";
        for (size_t i = m * slots; i < partials.size(); ++i)
          ASSERT_EQ(partials[i], 0xffffffffu) << "partial sum " << i << " past the end was written";

        // The products after it: their plain product of `normed`, times the norm's scale.
        for (LinearEpilogue epilogue : {LinearEpilogue::none, LinearEpilogue::swiglu}) {
          SCOPED_TRACE(linear_epilogue_name(epilogue));
          const size_t n = epilogue == LinearEpilogue::swiglu ? 2 * 67 : 131;
          test::RandomLinear after =
              test::make_random_linear({n, hidden, m, true, act, act_out}, seed + 100 * index + 7);
          after.desc.epilogue = epilogue;
          LinearDesc no_bias = after.desc;
          no_bias.has_bias = false, no_bias.epilogue = LinearEpilogue::none, no_bias.output = OutputFormat::f32;
          const auto plain_prepared = kernel->prepare(no_bias, after.weights(), nullptr);
          std::vector<uint8_t> normed_rows(normed.begin(), normed.begin() + m * hidden * elem);
          std::vector<float> product(m * n, std::numeric_limits<float>::quiet_NaN());
          cuda_apply(*kernel, no_bias, *plain_prepared, normed_rows.data(), normed_rows.size(), m,
                     product.data(), product.size() * sizeof(float));

          const auto prepared = kernel->prepare(after.desc, after.weights(), after.bias.data());
          const size_t out_n = after.desc.out_features(), out_elem = activation_format_bytes(act);
          DeviceVector<uint8_t> d_out((m * out_n + tail) * out_elem, 0xff);
          kernel->apply(after.desc, *prepared,
                        ActivationView{d_normed.get(), m, act, FoldedNorm{fold.partials, hidden, eps}},
                        OutputView{d_out.get(), act_out}, nullptr);
          const auto got = d_out.to_host();
          size_t wrong = 0;
          for (size_t row = 0; row < m; ++row) {
            const double scale = 1.0 / std::sqrt(squares[row] / double(hidden) + eps);
            std::vector<double> want(out_n);
            double largest = 0.0;
            for (size_t i = 0; i < out_n; ++i) {
              want[i] = scale * product[row * n + i] + after.bias[i];
              if (epilogue == LinearEpilogue::swiglu) {
                const double up = scale * product[row * n + out_n + i] + after.bias[out_n + i];
                want[i] = want[i] / (1.0 + std::exp(-want[i])) * up;
              }
              largest = std::max(largest, std::fabs(want[i]));
            }
            for (size_t i = 0; i < out_n; ++i) {
              const float have = activation_at(got, act, row * out_n + i);
              // The scale's sums in another order (F32 against double), the product's in
              // another configuration (the SwiGLU pack), then one BF16 rounding.
              const double bound = (act == ActivationFormat::bf16 ? 1.0 / 128 : 1e-5) * std::fabs(want[i]) +
                                   1e-5 * largest;
              if (!(std::fabs(have - want[i]) <= bound) && wrong++ < 5)
                ADD_FAILURE() << "m=" << row << " output " << i << ": got " << have << ", want " << want[i];
            }
          }
          EXPECT_EQ(wrong, 0u);
          for (size_t b = m * out_n * out_elem; b < got.size(); ++b)
            ASSERT_EQ(got[b], 0xff) << "byte " << b << " past the output was written";
        }
      }
}

// An odd row count cannot be split into gate and up halves: refused with the reason.
TEST(Sm80Mxfp4GemvSwiglu, OddRowsAreRefused) {
  const auto kernel = make_sm80_mxfp4_gemv_kernel();
  LinearDesc desc;
  desc.name = "odd";
  desc.n = 7, desc.k = 64;
  desc.epilogue = LinearEpilogue::swiglu;
  const Check c = kernel->can_implement(desc);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.reason.find("odd"), std::string::npos) << c.reason;
  EXPECT_EQ(desc.out_features(), 3u);
}

// Activations in 16-byte loads (the default where rows allow it) and element by element
// (unaligned rows, K not a multiple of 16 bytes) feed the same fragments in the same order:
// the outputs must be bit-identical, for BF16 and F32 activations, K with a partial last
// 16-byte run (K = 172, F32), one and two tiles per group, and CTAs of 2, 7 and 16 warps in
// teams of 16, 4 and 1 (odd warp counts and several teams per CTA included).
TEST(Sm80Mxfp4GemvActivationLoads, VectorBitIdenticalToElementLoads) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::linear_test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  for (ActivationFormat format : {ActivationFormat::bf16, ActivationFormat::f32})
    for (auto [n, k] : {std::pair<size_t, size_t>{64, 2880}, {2880, 4096}, {33, 104}, {4097, 2880},
                        {40, 172}})
      for (size_t m : {1, 3, 8}) {
        SCOPED_TRACE(testing::Message() << activation_format_name(format) << " N=" << n
                                        << " K=" << k << " M=" << m);
        const LinearCase c{n, k, m, true, format, OutputFormat::f32};
        const test::RandomLinear r = test::make_random_linear(c, seed + n + k + m);
        const GemvPacked packed = mxfp4_gemv_pack(r.weights());
        DeviceVector<uint8_t> w(packed.weights), sc(packed.scales), act(r.act);
        DeviceVector<float> bias(r.bias), out(m * n, 0xff);
        GemvLaunch l;
        l.weights = w.get(), l.scales = sc.get(), l.act = act.get(), l.bias = bias.get(), l.out = out.get();
        l.n = n, l.k = k, l.m = m, l.n_pad = packed.n_pad, l.k_chunks = packed.k_chunks;
        l.activation = format, l.output = OutputFormat::f32;
        l.special_scales = packed.special_scales;
        for (int tiles : {1, 2})
          for (auto [warps, team] : {std::pair{2, 2}, {7, 7}, {16, 16}, {16, 4}, {16, 1}}) {
            std::vector<float> got[2];
            for (int vector : {0, 1}) {
              if (vector && (k * (format == ActivationFormat::bf16 ? 2 : 4)) % 16 != 0) continue;
              l.tiles_per_cta = tiles, l.warps = warps, l.team = team, l.act_vector = vector;
              NIBBLE_CUDA_CHECK(cudaMemset(out.get(), 0xff, out.bytes()));  // NaN poison
              NIBBLE_CUDA_CHECK(cudaError_t(mxfp4_gemv_launch(l, nullptr)));
              got[vector] = out.to_host();
            }
            ASSERT_FALSE(got[0].empty());
            if (got[1].empty()) continue;  // 16-byte loads cannot apply to this K
            size_t differ = 0;
            for (size_t i = 0; i < m * n; ++i)
              differ += std::memcmp(&got[0][i], &got[1][i], 4) != 0 || std::isnan(got[1][i]);
            EXPECT_EQ(differ, 0u) << "t" << tiles << "w" << warps << "g" << team << ": " << differ << " of "
                                  << m * n << " outputs differ (or are NaN)";
          }
      }
}

// Chained launches (PDL, cuda_launch.cuh) in a chain like a forward's, on one stream: a kernel
// writes the activations from NaN, the GEMV reads them, the next kernel overwrites them with
// NaN. Reading them before they are written, or after they are overwritten, shows as NaN or
// as a difference from the same GEMV launched alone: the outputs must be bit-identical.
TEST(Sm80Mxfp4GemvChained, WaitsForTheKernelBeforeIt) {
  NIBBLE_REQUIRE_CUDA();
  const uint64_t seed = test::linear_test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  cudaStream_t stream = nullptr;
  NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (auto [n, k] : {std::pair<size_t, size_t>{4096, 14336}, {1024, 4096}, {2880, 2880}}) {
    const size_t m = 8;
    SCOPED_TRACE(testing::Message() << "N=" << n << " K=" << k);
    const LinearCase c{n, k, m, false, ActivationFormat::f32, OutputFormat::f32};
    const test::RandomLinear r = test::make_random_linear(c, seed + n + k);
    const GemvPacked packed = mxfp4_gemv_pack(r.weights());
    DeviceVector<uint8_t> w(packed.weights), sc(packed.scales);
    DeviceVector<float> source(m * k, 0), nan(m * k, 0xff), act(m * k, 0), out(m * n, 0);
    NIBBLE_CUDA_CHECK(cudaMemcpy(source.get(), r.act.data(), source.bytes(), cudaMemcpyHostToDevice));
    GemvLaunch l;
    l.weights = w.get(), l.scales = sc.get(), l.act = act.get(), l.out = out.get();
    l.n = n, l.k = k, l.m = m, l.n_pad = packed.n_pad, l.k_chunks = packed.k_chunks;
    l.activation = ActivationFormat::f32, l.output = OutputFormat::f32;
    l.special_scales = packed.special_scales;
    std::vector<float> alone(m * n), chained(m * n);
    NIBBLE_CUDA_CHECK(cudaMemcpy(act.get(), source.get(), m * k * 4, cudaMemcpyDeviceToDevice));
    NIBBLE_CUDA_CHECK(cudaError_t(mxfp4_gemv_launch(l, stream)));
    NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
    alone = out.to_host();
    l.chained = true;
    for (int round = 0; round < 20; ++round) {
      NIBBLE_CUDA_CHECK(cudaMemsetAsync(out.get(), 0xff, out.bytes(), stream));  // NaN poison
      NIBBLE_CUDA_CHECK(cuda_combine_rows(nan.get(), 1, m, k, nullptr, act.get(), stream));
      NIBBLE_CUDA_CHECK(cuda_combine_rows(source.get(), 1, m, k, nullptr, act.get(), stream));
      NIBBLE_CUDA_CHECK(cudaError_t(mxfp4_gemv_launch(l, stream)));
      NIBBLE_CUDA_CHECK(cuda_combine_rows(nan.get(), 1, m, k, nullptr, act.get(), stream));
      NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
      chained = out.to_host();
      size_t differ = 0;
      for (size_t i = 0; i < m * n; ++i) differ += std::memcmp(&alone[i], &chained[i], 4) != 0;
      ASSERT_EQ(differ, 0u) << "round " << round << ": " << differ << " of " << m * n << " outputs differ";
    }
  }
  NIBBLE_CUDA_CHECK(cudaStreamDestroy(stream));
}

TEST(Sm80Mxfp4GemvRegistry, IsRegisteredAndRefusesLargeM) {
  const LinearKernel* kernel = KernelRegistry::builtin().find("sm80_mxfp4_gemv");
  ASSERT_NE(kernel, nullptr);
  EXPECT_EQ(kernel->device_kind(), DeviceKind::cuda);
  LinearDesc layer;
  layer.name = "x";
  layer.n = 2880, layer.k = 2880, layer.min_m = 1, layer.max_m = 9;
  const Check c = kernel->can_implement(layer);
  EXPECT_FALSE(c.ok);
  EXPECT_NE(c.reason.find("M up to 8"), std::string::npos) << c.reason;
  layer.max_m = 8;
  EXPECT_TRUE(kernel->can_implement(layer).ok);
  layer.k = 172;
  EXPECT_TRUE(kernel->can_implement(layer).ok) << "K % 32 != 0 reads the padded tail as zero";
}

TEST(Sm80Mxfp4GemvRegistry, DeviceInfoOrAClearNoDevice) {
  int count = 0;
  const bool have_gpu = cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
  cudaGetLastError();
  const auto kernel = make_sm80_mxfp4_gemv_kernel();
  DeviceInfo device;
  device.kind = DeviceKind::cuda;
  if (!have_gpu) {
    const Check c = kernel->is_supported(device);
    EXPECT_FALSE(c.ok);
    EXPECT_NE(c.reason.find("no CUDA device"), std::string::npos) << c.reason;
    try {
      cuda_device_info(0);
      ADD_FAILURE() << "cuda_device_info(0) returned without a device";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("no CUDA device"), std::string::npos) << e.what();
    }
    GTEST_SKIP() << "no CUDA device: checked the refusals only";
  }
  device = cuda_device_info(0);
  EXPECT_EQ(device.kind, DeviceKind::cuda);
  EXPECT_FALSE(device.name.empty());
  EXPECT_GE(device.compute_capability, 50);
  EXPECT_GT(device.multiprocessors, 0);
  const Check c = kernel->is_supported(device);
  EXPECT_EQ(c.ok, device.compute_capability >= 80) << c.reason;
  // The registry picks it for a decode layer on this device.
  LinearDesc layer;
  layer.name = "decode";
  layer.n = 2880, layer.k = 2880, layer.min_m = 1, layer.max_m = 8;
  if (c.ok) {
    const auto choices = KernelRegistry::builtin().select(layer, device, {});
    ASSERT_FALSE(choices.empty());
    EXPECT_EQ(choices.front().kernel->name(), "sm80_mxfp4_gemv");
  }
}

#else  // !NIBBLE_WITH_CUDA

TEST(Sm80Mxfp4Gemv, NotBuilt) { GTEST_SKIP() << "built without CUDA (no nvcc found)"; }

#endif

}  // namespace
}  // namespace nibble
