// The harness itself must be able to fail: wrapped cpu_ref kernels with one planted fault each
// (an unwritten element, one element taken from the neighbouring column, a missing bias) must be reported.
#include <gmock/gmock.h>
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <limits>

#include "format/float16.h"
#include "kernels/linear_harness.h"

namespace nibble {
namespace {

enum class Fault { unwritten, wrong_column, no_bias };

// cpu_ref with a planted fault in its output.
class FaultyKernel final : public LinearKernel {
 public:
  explicit FaultyKernel(Fault fault) : fault_(fault), ref_(make_cpu_ref_kernel()) {}
  std::string_view name() const override { return "faulty"; }
  DeviceKind device_kind() const override { return DeviceKind::cpu; }
  Check is_supported(const DeviceInfo& d) const override { return ref_->is_supported(d); }
  Check can_implement(const LinearDesc& l) const override { return ref_->can_implement(l); }
  std::unique_ptr<PreparedWeights> prepare(const LinearDesc& layer, const Mxfp4HostWeights& w,
                                           const float* bias) const override {
    LinearDesc l = layer;
    if (fault_ == Fault::no_bias) l.has_bias = false;
    return ref_->prepare(l, w, fault_ == Fault::no_bias ? nullptr : bias);
  }
  void apply(const LinearDesc& layer, const PreparedWeights& w, const ActivationView& act,
             const OutputView& out, void* stream) const override {
    LinearDesc l = layer;
    if (fault_ == Fault::no_bias) l.has_bias = false;
    ref_->apply(l, w, act, out, stream);
    const size_t last = act.m * layer.n - 1;
    auto* o = static_cast<float*>(out.data);  // these tests use F32 outputs
    if (fault_ == Fault::unwritten) o[last] = std::numeric_limits<float>::quiet_NaN();
    if (fault_ == Fault::wrong_column) o[last] = o[last - 1];
  }

 private:
  Fault fault_;
  std::unique_ptr<LinearKernel> ref_;
};

const FaultyKernel g_unwritten(Fault::unwritten), g_wrong_column(Fault::wrong_column),
    g_no_bias(Fault::no_bias);

void run(const FaultyKernel& kernel, bool bias) {
  DeviceInfo cpu;
  test::run_linear_case(kernel, cpu, {64, 2880, 9, bias});
}

// Every failure the harness reports while running `kernel`, intercepted (not counted).
std::string failures_of(const FaultyKernel& kernel, bool bias) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter reporter(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    run(kernel, bias);
  }
  std::string text;
  for (int i = 0; i < results.size(); ++i)
    if (results.GetTestPartResult(i).failed()) text += results.GetTestPartResult(i).message();
  return text.empty() ? "(no failure)" : text;
}

using ::testing::HasSubstr;

TEST(LinearHarness, ReportsAnUnwrittenElement) {
  EXPECT_THAT(failures_of(g_unwritten, false), HasSubstr("not written or not finite"));
}

TEST(LinearHarness, ReportsOneElementFromTheWrongColumn) {
  EXPECT_THAT(failures_of(g_wrong_column, false), HasSubstr("1 elements beyond the max-error bound"));
}

TEST(LinearHarness, ReportsAMissingBias) {
  EXPECT_THAT(failures_of(g_no_bias, true), HasSubstr("NMSE"));
}

TEST(LinearHarness, PassesTheUnfaultedOracle) {
  DeviceInfo cpu;
  test::run_linear_case(*make_cpu_ref_kernel(), cpu, {64, 2880, 9, true});
}

}  // namespace
}  // namespace nibble
