// cpu_ref, the oracle, against an independent path: format/mxfp4.h's dequantizer (a different
// decoder) then a plain double dot product written here. Both accumulate in double, so the
// only differences are summation order: the limit is tight (1e-12 relative to |a|.|w|).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "format/float16.h"
#include "format/mxfp4.h"
#include "kernels/cpu/cpu_ref.h"
#include "kernels/linear_harness.h"
#include "kernels/registry.h"

namespace nibble {
namespace {

using test::LinearCase;

class CpuRefVsDequantize : public ::testing::TestWithParam<LinearCase> {};

TEST_P(CpuRefVsDequantize, Matches) {
  const LinearCase c = GetParam();
  const uint64_t seed = test::linear_test_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const test::RandomLinear r = test::make_random_linear(c, seed);
  std::vector<float> w(c.n * c.k);
  mxfp4_dequantize(r.blocks.data(), r.scales.data(), c.n, c.k, w.data(), DType::F32);

  const auto kernel = make_cpu_ref_kernel();
  const auto prepared = kernel->prepare(r.desc, r.weights(), c.bias ? r.bias.data() : nullptr);
  std::vector<uint8_t> out(c.m * c.n * test::output_bytes(c.output), 0xff);  // NaN patterns
  kernel->apply(r.desc, *prepared, {r.act.data(), c.m, c.activation}, {out.data(), c.output},
                nullptr);
  for (size_t m = 0; m < c.m; ++m)
    for (size_t n = 0; n < c.n; ++n) {
      double want = 0, bound = 0;
      for (size_t k = 0; k < c.k; ++k) {
        const double a = test::activation_at(r, m * c.k + k);
        want += a * double(w[n * c.k + k]);
        bound += std::fabs(a * double(w[n * c.k + k]));
      }
      if (c.bias) want += r.bias[n];
      const double got = test::output_at(out, c.output, m * c.n + n);
      const double expected =
          c.output == OutputFormat::f32 ? double(float(want)) : double(bf16_to_f32(f32_to_bf16(float(want))));
      // The double sums may differ in their last bits, which can move the final rounding by
      // one F32 / BF16 step at most.
      const double step = c.output == OutputFormat::f32 ? std::fabs(expected) * 1.2e-7
                                                        : std::fabs(expected) / 128;
      ASSERT_TRUE(std::fabs(got - expected) <= step + 1e-12 * bound + 1e-300)
          << "m=" << m << " n=" << n << " got " << got << " want " << expected;
    }
}

std::vector<LinearCase> ref_cases() {
  std::vector<LinearCase> cases;
  for (size_t n : {1, 7, 33})
    for (size_t k : {1, 31, 32, 33, 172, 300})
      for (size_t m : {1, 3, 9})
        for (bool bias : {false, true})
          for (auto act : {ActivationFormat::f32, ActivationFormat::bf16})
            for (auto out : {OutputFormat::f32, OutputFormat::bf16})
              cases.push_back({n, k, m, bias, act, out});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuRefVsDequantize, ::testing::ValuesIn(ref_cases()),
                         [](const auto& info) { return test::linear_case_name(info.param); });

TEST(CpuRef, NanScaleMakesItsRowNanAndOnlyItsRow) {
  LinearCase c{3, 64, 2};
  test::RandomLinear r = test::make_random_linear(c, 7);
  r.scales[1 * 2 + 1] = 0xff;  // row 1, block 1
  const auto kernel = make_cpu_ref_kernel();
  const auto prepared = kernel->prepare(r.desc, r.weights(), nullptr);
  std::vector<float> out(c.m * c.n, 0.0f);
  kernel->apply(r.desc, *prepared, {r.act.data(), c.m, c.activation}, {out.data(), c.output}, nullptr);
  for (size_t m = 0; m < c.m; ++m) {
    EXPECT_TRUE(std::isfinite(out[m * 3 + 0]));
    EXPECT_TRUE(std::isnan(out[m * 3 + 1]));
    EXPECT_TRUE(std::isfinite(out[m * 3 + 2]));
  }
}

TEST(CpuRef, ServesTheStories260KShapeThroughMxfp4Linear) {
  // K = 172 is not a multiple of 32: the model's real shape.
  LinearCase c{460, 172, 5, true};
  const test::RandomLinear r = test::make_random_linear(c, test::linear_test_seed());
  KernelOverrides force = KernelOverrides::parse("cpu_ref");
  LinearDesc desc = r.desc;
  desc.max_m = 8;
  Mxfp4Linear linear(desc, r.weights(), r.bias.data(), cpu_device_info(), force);
  EXPECT_EQ(linear.choices().size(), 1u);
  EXPECT_EQ(linear.choices()[0].kernel->name(), "cpu_ref");
  // Its prepared copy: blocks, scales and bias.
  EXPECT_EQ(linear.prepared_bytes(), 460u * 6 * 16 + 460u * 6 + 460u * 4);
  std::vector<float> out(c.m * c.n, std::numeric_limits<float>::quiet_NaN());
  linear.forward({r.act.data(), c.m, c.activation}, {out.data(), c.output});
  std::vector<float> w(c.n * c.k);
  mxfp4_dequantize(r.blocks.data(), r.scales.data(), c.n, c.k, w.data(), DType::F32);
  for (size_t m = 0; m < c.m; ++m)
    for (size_t n = 0; n < c.n; ++n) {
      double want = r.bias[n];
      for (size_t k = 0; k < c.k; ++k) want += test::activation_at(r, m * c.k + k) * w[n * c.k + k];
      ASSERT_NEAR(out[m * c.n + n], want, 1e-5 * (1 + std::fabs(want))) << "m=" << m << " n=" << n;
    }
}

}  // namespace
}  // namespace nibble
