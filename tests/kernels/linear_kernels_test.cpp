// Every registered CPU kernel against cpu_ref over the grid (linear_harness.h), every
// Highway target compiled into cpu_simd on this CPU, and the numeric edges of the format.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cstdio>
#include <cstring>
#include <limits>

#include "kernels/cpu/cpu_avx2_w4a8.h"
#include "kernels/cpu/cpu_simd.h"
#include "kernels/linear_harness.h"
#include "kernels/registry.h"

namespace nibble {
namespace {

using test::LinearCase;

struct KernelCase {
  std::string kernel;
  LinearCase shape;
};

// Every CPU kernel but the oracle itself (cpu_ref_test.cpp checks cpu_ref independently).
std::vector<KernelCase> cpu_cases() {
  std::vector<KernelCase> cases;
  for (const LinearKernel* kernel : KernelRegistry::builtin().kernels(DeviceKind::cpu)) {
    if (kernel->name() == "cpu_ref") continue;
    for (const LinearCase& c : test::standard_linear_cases())
      cases.push_back({std::string(kernel->name()), c});
  }
  return cases;
}

class CpuKernelVsRef : public ::testing::TestWithParam<KernelCase> {};

TEST_P(CpuKernelVsRef, Matches) {
  const LinearKernel* kernel = KernelRegistry::builtin().find(GetParam().kernel);
  ASSERT_NE(kernel, nullptr);
  test::run_linear_case(*kernel, cpu_device_info(), GetParam().shape);
}

INSTANTIATE_TEST_SUITE_P(Grid, CpuKernelVsRef, ::testing::ValuesIn(cpu_cases()),
                         [](const auto& info) {
                           return info.param.kernel + "_" + test::linear_case_name(info.param.shape);
                         });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(CpuKernelVsRef);

// cpu_vnni_w4a8 and cpu_vnni512_w4a8 sum the same integer products as cpu_avx2_w4a8 with
// another instruction (vpdpbusd, in each encoding this CPU runs; 512-bit: two panels per
// register, a lone last panel on 256 bits), over the same prepared layout: their outputs must
// be the AVX2 kernel's to the bit.
TEST(CpuVnniW4a8, EachEncodingGivesTheAvx2KernelsBits) {
  const LinearKernel* avx2 = KernelRegistry::builtin().find("cpu_avx2_w4a8");
  ASSERT_NE(avx2, nullptr);
  const Check avx2_ok = avx2->is_supported(cpu_device_info());
  if (!avx2_ok.ok) GTEST_SKIP() << "cpu_avx2_w4a8: " << avx2_ok.reason;
  const uint64_t seed = test::linear_test_seed();
  SCOPED_TRACE(test::seed_trace(seed));
  const test::LinearCase cases[] = {{7, 172, 1, true}, {64, 2880, 5, false}, {2880, 4096, 8, true},
                                    {2881, 2880, 3, true}, {5120, 32, 64, false},
                                    {100, 320, 333, true, ActivationFormat::bf16, OutputFormat::bf16}};
  size_t ran = 0;
  for (const auto& [encoding, what] : {std::pair{VnniEncoding::vex, "VEX"}, std::pair{VnniEncoding::evex, "EVEX"},
                                       std::pair{VnniEncoding::evex512, "EVEX, 512-bit"}}) {
    const auto vnni = make_cpu_vnni_w4a8_kernel(encoding);
    const Check supported = vnni->is_supported(cpu_device_info());
    if (!supported.ok) {
      std::printf("[  SKIPPED ] the %s form: %s\n", what, supported.reason.c_str());
      continue;
    }
    SCOPED_TRACE(what);
    EXPECT_EQ(vnni->layout_id(), avx2->layout_id());
    for (const test::LinearCase& c : cases) {
      SCOPED_TRACE(test::linear_case_name(c));
      const test::RandomLinear r = test::make_random_linear(c, seed);
      const size_t out_bytes = c.m * c.n * test::output_bytes(c.output);
      std::vector<uint8_t> want(out_bytes, 0xff), got(out_bytes, 0x00);
      for (auto [kernel, out] : {std::pair<const LinearKernel*, std::vector<uint8_t>*>{avx2, &want},
                                 std::pair<const LinearKernel*, std::vector<uint8_t>*>{vnni.get(), &got}}) {
        const auto prepared = kernel->prepare(r.desc, r.weights(), r.bias.empty() ? nullptr : r.bias.data());
        kernel->apply(r.desc, *prepared, ActivationView{r.act.data(), c.m, c.activation},
                      OutputView{out->data(), c.output}, nullptr);
      }
      EXPECT_EQ(std::memcmp(want.data(), got.data(), out_bytes), 0);
    }
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "this CPU runs neither form of vpdpbusd";
}

// cpu_simd's code differs per target (16-lane permute, 8-lane permute + sign, scalar table;
// register tiles 12, 6 or 4 rows): run each target this CPU supports, not only the best.
TEST(CpuSimd, EveryCompiledTargetThisCpuRuns) {
  const LinearKernel* kernel = KernelRegistry::builtin().find("cpu_simd");
  ASSERT_NE(kernel, nullptr);
  const auto targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(std::string("Highway target ") + hwy::TargetName(target));
    EXPECT_EQ(cpu_simd_kernel_target(), hwy::TargetName(target));
    for (size_t n : {1, 7, 100})
      for (size_t k : {32, 172, 320})
        for (size_t m : {1, 2, 5, 8, 9, 13, 40}) {
          const bool bias = (n + m) % 2 == 0;
          const auto act = m % 3 == 0 ? ActivationFormat::bf16 : ActivationFormat::f32;
          const auto out = k == 172 ? OutputFormat::bf16 : OutputFormat::f32;
          test::run_linear_case(*kernel, cpu_device_info(), {n, k, m, bias, act, out});
          if (HasFatalFailure() || HasFailure()) break;
        }
  }
  hwy::SetSupportedTargetsForTest(0);
}

// Scale codes at the ends of the range: 0 (2^-127, a subnormal), 1, 2, and NaN (255) rows,
// through every CPU kernel.
TEST(CpuKernels, ScaleExtremesAndNanRowsMatchCpuRef) {
  for (const LinearKernel* kernel : KernelRegistry::builtin().kernels(DeviceKind::cpu)) {
    if (kernel->name() == "cpu_ref") continue;
    if (!kernel->is_supported(cpu_device_info()).ok) continue;  // the grid shows the skip
    SCOPED_TRACE(std::string(kernel->name()));
    for (size_t m : {1, 3, 12}) {
      LinearCase c{40, 96, m, true};
      test::RandomLinear r = test::make_random_linear(c, test::linear_test_seed());
      const uint8_t codes[] = {0, 1, 2, 120, 127, 134};
      for (size_t i = 0; i < r.scales.size(); ++i) r.scales[i] = codes[i % 6];
      r.scales[5 * 3 + 1] = 0xff;  // row 5 is all NaN
      // The reference sees the activations rounded as the kernel's contract says (exact ones
      // for the exact kernels), so one bound holds every kernel: F32 accumulation.
      std::vector<size_t> rows(m);
      for (size_t i = 0; i < m; ++i) rows[i] = i;
      const test::ReferenceRows ref =
          test::reference_outputs(r, rows, kernel->activation_rounding());
      const std::vector<float>& ref_act = ref.act;
      const std::vector<float>& want = ref.out;
      const auto kernel_w = kernel->prepare(r.desc, r.weights(), r.bias.data());
      std::vector<float> got(m * c.n, std::numeric_limits<float>::quiet_NaN());
      kernel->apply(r.desc, *kernel_w, {r.act.data(), m, c.activation}, {got.data(), c.output}, nullptr);
      std::vector<float> w(c.n * c.k);
      for (size_t i = 0; i < r.scales.size(); ++i)
        if (r.scales[i] == 0xff) r.scales[i] = 127;  // norms of the finite rows only
      mxfp4_dequantize(r.blocks.data(), r.scales.data(), c.n, c.k, w.data(), DType::F32);
      for (size_t i = 0; i < want.size(); ++i) {
        const size_t row = i / c.n, n = i % c.n;
        if (n == 5) {
          EXPECT_TRUE(std::isnan(got[i])) << "m=" << row;
          continue;
        }
        double a2 = 0, w2 = 0;
        for (size_t k = 0; k < c.k; ++k) {
          const double a = ref_act[row * c.k + k];
          a2 += a * a;
          w2 += double(w[n * c.k + k]) * w[n * c.k + k];
        }
        ASSERT_TRUE(std::isfinite(got[i])) << i;
        const double allowed = 4e-6 * std::sqrt(a2 * w2) + 1e-30;
        EXPECT_NEAR(got[i], want[i], allowed) << "m=" << row << " n=" << n;
      }
    }
  }
}

TEST(CpuKernels, OneLayoutServesEveryMBucket) {
  // The registry gives one kernel every bucket, and Mxfp4Linear prepares its layout once.
  LinearCase c{64, 172, 1, true};
  const test::RandomLinear r = test::make_random_linear(c, 1);
  LinearDesc desc = r.desc;
  desc.max_m = 512;
  Mxfp4Linear chosen(desc, r.weights(), r.bias.data(), cpu_device_info(), {});
  ASSERT_FALSE(chosen.choices().empty());
  const LinearKernel* first = chosen.choices().front().kernel;
  for (const KernelChoice& choice : chosen.choices()) EXPECT_EQ(choice.kernel, first);
  EXPECT_EQ(chosen.prepared_bytes(), first->prepare(desc, r.weights(), r.bias.data())->bytes());
  // cpu_simd: 64 rows -> 4 panels; 6 blocks of 272 bytes each; plus the bias.
  Mxfp4Linear simd(desc, r.weights(), r.bias.data(), cpu_device_info(),
                   KernelOverrides::parse("cpu_simd"));
  EXPECT_EQ(simd.prepared_bytes(), 4u * 6 * 272 + 64 * 4);
}

}  // namespace
}  // namespace nibble
