// The kernel registry: priority order, M buckets, forcing by name and by class, refusals that
// list every reason, shared prepared layouts, --log-kernels lines. Fake kernels stand in for
// real ones so that every branch of the selection can be reached on any machine.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "base/error.h"
#include "format/float16.h"
#include "format/mxfp4.h"
#include "kernels/registry.h"

namespace nibble {
namespace {

using ::testing::HasSubstr;

// A kernel that writes its own id into every output element, so tests see who ran.
struct FakeWeights final : PreparedWeights {
  size_t size = 0;
  size_t bytes() const override { return size; }
};

struct FakeKernel final : LinearKernel {
  std::string kernel_name, layout = "", unsupported, cannot;
  size_t max_m = SIZE_MAX;  // refuses layers whose M range goes above this
  float id = 0;
  mutable int prepares = 0;

  std::string_view name() const override { return kernel_name; }
  DeviceKind device_kind() const override { return DeviceKind::cpu; }
  std::string_view layout_id() const override { return layout.empty() ? name() : layout; }
  Check is_supported(const DeviceInfo&) const override {
    return unsupported.empty() ? Check::yes() : Check::no(unsupported);
  }
  Check can_implement(const LinearDesc& layer) const override {
    if (!cannot.empty()) return Check::no(cannot);
    if (layer.max_m > max_m) return Check::no("M above " + std::to_string(max_m));
    return Check::yes();
  }
  std::unique_ptr<PreparedWeights> prepare(const LinearDesc& layer, const Mxfp4HostWeights&,
                                           const float*) const override {
    ++prepares;
    auto w = std::make_unique<FakeWeights>();
    w->size = layer.n * 100;
    return w;
  }
  void apply(const LinearDesc& layer, const PreparedWeights&, const ActivationView& act,
             const OutputView& out, void*) const override {
    for (size_t i = 0; i < act.m * layer.n; ++i) static_cast<float*>(out.data)[i] = id;
  }
};

struct Fakes {
  KernelRegistry registry;
  std::vector<FakeKernel*> kernels;
  FakeKernel* add(std::string name, float id) {
    auto k = std::make_unique<FakeKernel>();
    k->kernel_name = std::move(name);
    k->id = id;
    kernels.push_back(k.get());
    registry.add(DeviceKind::cpu, std::move(k));
    return kernels.back();
  }
};

LinearDesc layer(std::string name, size_t min_m, size_t max_m, LayerClass c = LayerClass::dense) {
  LinearDesc d;
  d.name = std::move(name);
  d.layer_class = c;
  d.n = 4;
  d.k = 64;
  d.min_m = min_m;
  d.max_m = max_m;
  return d;
}

DeviceInfo cpu() {
  DeviceInfo d;
  d.kind = DeviceKind::cpu;
  return d;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.message();
  }
  return "(no error)";
}

// Zero weights of the right size for a 4 x 64 layer.
struct Zeros {
  std::vector<uint8_t> blocks = std::vector<uint8_t>(4 * 2 * 16), scales = std::vector<uint8_t>(8);
  Mxfp4HostWeights weights() const { return {blocks.data(), scales.data(), 4, 64}; }
};

TEST(KernelRegistry, PicksTheFirstSupportedInPriorityOrderAndSaysWhy) {
  Fakes f;
  f.add("broken", 1)->unsupported = "needs AVX-1024";
  f.add("good", 2);
  f.add("also_good", 3);
  const auto choices = f.registry.select(layer("l", 1, 1), cpu(), {});
  ASSERT_EQ(choices.size(), 1u);
  EXPECT_EQ(choices[0].kernel->name(), "good");
  EXPECT_THAT(choices[0].why, HasSubstr("priority"));
  EXPECT_THAT(choices[0].why, HasSubstr("broken"));
  EXPECT_THAT(choices[0].why, HasSubstr("needs AVX-1024"));
}

TEST(KernelRegistry, ChoosesPerMBucketAndMergesNeighbours) {
  Fakes f;
  f.add("gemv", 1)->max_m = 8;
  f.add("gemm", 2);
  const auto choices = f.registry.select(layer("l", 1, 512), cpu(), {});
  ASSERT_EQ(choices.size(), 2u);
  EXPECT_EQ(choices[0].kernel->name(), "gemv");
  EXPECT_EQ(choices[0].min_m, 1u);
  EXPECT_EQ(choices[0].max_m, 8u);
  EXPECT_EQ(choices[1].kernel->name(), "gemm");
  EXPECT_EQ(choices[1].min_m, 9u);
  EXPECT_EQ(choices[1].max_m, 512u);

  // A range inside one bucket gets one choice with that range.
  const auto inner = f.registry.select(layer("l", 3, 5), cpu(), {});
  ASSERT_EQ(inner.size(), 1u);
  EXPECT_EQ(inner[0].kernel->name(), "gemv");
  EXPECT_EQ(inner[0].min_m, 3u);
  EXPECT_EQ(inner[0].max_m, 5u);
}

TEST(KernelRegistry, ForwardDispatchesByMAndSharedLayoutsPrepareOnce) {
  for (bool shared : {false, true}) {
    Fakes f;
    FakeKernel* gemv = f.add("gemv", 1);
    gemv->max_m = 8;
    FakeKernel* gemm = f.add("gemm", 2);
    if (shared) gemv->layout = gemm->layout = "common";
    Zeros z;
    Mxfp4Linear linear(layer("l", 1, 64), z.weights(), nullptr, cpu(), {}, &f.registry);
    EXPECT_EQ(gemv->prepares + gemm->prepares, shared ? 1 : 2);
    EXPECT_EQ(linear.prepared_bytes(), shared ? 400u : 800u);
    EXPECT_THAT(linear.describe(), HasSubstr(shared ? "shared with the line above" : "400 prepared bytes"));
    std::vector<float> act(64 * 64, 1.0f), out(64 * 4, -1.0f);
    for (size_t m : {1, 8, 9, 64}) {
      linear.forward({act.data(), m, ActivationFormat::f32}, {out.data(), OutputFormat::f32});
      EXPECT_EQ(out[0], m <= 8 ? 1.0f : 2.0f) << "M=" << m;
    }
  }
}

TEST(KernelRegistry, ForcingByNameOverridesPriorityForTheWholeRange) {
  Fakes f;
  f.add("first", 1);
  f.add("second", 2);
  const auto o = KernelOverrides::parse("second", &f.registry);
  const auto choices = f.registry.select(layer("l", 1, 300), cpu(), o);
  ASSERT_EQ(choices.size(), 1u);
  EXPECT_EQ(choices[0].kernel->name(), "second");
  EXPECT_EQ(choices[0].min_m, 1u);
  EXPECT_EQ(choices[0].max_m, 300u);
  EXPECT_EQ(choices[0].why, "forced by --mxfp4-kernel");
}

TEST(KernelRegistry, ForcingByClass) {
  Fakes f;
  f.add("first", 1);
  f.add("second", 2);
  f.add("third", 3);
  const auto o = KernelOverrides::parse("third, moe=second", &f.registry);
  EXPECT_EQ(o.forced_for(LayerClass::dense), "third");
  EXPECT_EQ(o.forced_for(LayerClass::moe), "second");
  EXPECT_EQ(f.registry.select(layer("d", 1, 1), cpu(), o)[0].kernel->name(), "third");
  EXPECT_EQ(f.registry.select(layer("e", 1, 1, LayerClass::moe), cpu(), o)[0].kernel->name(),
            "second");
  const auto only_moe = KernelOverrides::parse("moe=third", &f.registry);
  EXPECT_EQ(f.registry.select(layer("d", 1, 1), cpu(), only_moe)[0].kernel->name(), "first");
  EXPECT_EQ(f.registry.select(layer("e", 1, 1, LayerClass::moe), cpu(), only_moe)[0].kernel->name(),
            "third");
}

TEST(KernelRegistry, AForcedKernelThatCannotServeIsAnErrorWithEveryReasonNotAFallback) {
  Fakes f;
  f.add("fine", 1);
  FakeKernel* bad = f.add("bad", 2);
  bad->unsupported = "wrong CPU";
  bad->cannot = "K too large";
  const auto o = KernelOverrides::parse("bad", &f.registry);
  const std::string message =
      error_of([&] { f.registry.select(layer("model.layers.3.mlp", 1, 1), cpu(), o); });
  EXPECT_THAT(message, HasSubstr("model.layers.3.mlp"));
  EXPECT_THAT(message, HasSubstr("bad"));
  EXPECT_THAT(message, HasSubstr("--mxfp4-kernel"));
  EXPECT_THAT(message, HasSubstr("wrong CPU"));
  EXPECT_THAT(message, HasSubstr("K too large"));
  // Through Mxfp4Linear too: nothing is prepared, nothing falls back.
  Zeros z;
  EXPECT_THROW(Mxfp4Linear(layer("l", 1, 1), z.weights(), nullptr, cpu(), o, &f.registry), Error);
  EXPECT_EQ(f.kernels[0]->prepares, 0);
}

TEST(KernelRegistry, NoKernelForABucketListsEveryKernelsReason) {
  Fakes f;
  f.add("small", 1)->max_m = 8;
  f.add("off", 2)->unsupported = "disabled here";
  const std::string message = error_of([&] { f.registry.select(layer("big", 1, 100), cpu(), {}); });
  EXPECT_THAT(message, HasSubstr("big"));
  EXPECT_THAT(message, HasSubstr("M 9..64"));
  EXPECT_THAT(message, HasSubstr("small: cannot implement the layer: M above 8"));
  EXPECT_THAT(message, HasSubstr("off: not supported on this device: disabled here"));
}

// An epilogue is a kernel's own feature: the CPU kernels store the plain product, so a layer
// asking the SwiGLU epilogue on the CPU is refused by each of them with that reason.
TEST(KernelRegistry, AnEpilogueNoKernelAppliesIsRefusedWithTheReason) {
  LinearDesc l = layer("gate_up", 1, 8);
  l.n = 64;
  l.epilogue = LinearEpilogue::swiglu;
  EXPECT_EQ(l.out_features(), 32u);
  const std::string message =
      error_of([&] { KernelRegistry::builtin().select(l, cpu_device_info(), {}); });
  EXPECT_THAT(message, HasSubstr("gate_up"));
  EXPECT_THAT(message, HasSubstr("swiglu epilogue"));
  EXPECT_THAT(message, HasSubstr("cpu_ref: it has no swiglu epilogue"));
}

TEST(KernelOverrides, BadSpecsNameTheTokenAndTheRegisteredKernels) {
  Fakes f;
  f.add("alpha", 1);
  f.add("beta", 2);
  std::string m = error_of([&] { KernelOverrides::parse("gamma", &f.registry); });
  EXPECT_THAT(m, HasSubstr("\"gamma\""));
  EXPECT_THAT(m, HasSubstr("alpha, beta"));
  m = error_of([&] { KernelOverrides::parse("dense=alpha,attn=beta", &f.registry); });
  EXPECT_THAT(m, HasSubstr("\"attn\""));
  EXPECT_THAT(m, HasSubstr("dense, moe"));
  m = error_of([&] { KernelOverrides::parse("dense=alpha,dense=beta", &f.registry); });
  EXPECT_THAT(m, HasSubstr("twice"));
  m = error_of([&] { KernelOverrides::parse("moe=", &f.registry); });
  EXPECT_THAT(m, HasSubstr("empty kernel name"));
  m = error_of([&] { KernelOverrides::parse("alpha,beta", &f.registry); });
  EXPECT_THAT(m, HasSubstr("two kernel names"));
  EXPECT_TRUE(KernelOverrides::parse("", &f.registry).empty());
}

TEST(KernelOverrides, TheFlagWinsOverTheEnvironment) {
  Fakes f;
  f.add("alpha", 1);
  f.add("beta", 2);
  ASSERT_EQ(setenv("NIBBLE_MXFP4_KERNEL", "moe=beta", 1), 0);
  const auto from_env = KernelOverrides::from_flag_or_env("", &f.registry);
  EXPECT_EQ(from_env.moe, "beta");
  EXPECT_EQ(from_env.source, "NIBBLE_MXFP4_KERNEL");
  const auto from_flag = KernelOverrides::from_flag_or_env("alpha", &f.registry);
  EXPECT_EQ(from_flag.all, "alpha");
  EXPECT_TRUE(from_flag.moe.empty());
  EXPECT_EQ(from_flag.source, "--mxfp4-kernel");
  ASSERT_EQ(setenv("NIBBLE_MXFP4_KERNEL", "nope", 1), 0);
  EXPECT_THAT(error_of([&] { KernelOverrides::from_flag_or_env("", &f.registry); }),
              HasSubstr("NIBBLE_MXFP4_KERNEL"));
  unsetenv("NIBBLE_MXFP4_KERNEL");
  EXPECT_TRUE(KernelOverrides::from_flag_or_env("", &f.registry).empty());
}

TEST(KernelRegistry, LogKernelsPrintsOneLinePerChoiceOncePerLayer) {
  Fakes f;
  f.add("gemv", 1)->max_m = 1;
  f.add("gemm", 2);
  std::vector<std::string> lines;
  set_kernel_log([&](std::string_view line) { lines.emplace_back(line); });
  Zeros z;
  {
    Mxfp4Linear linear(layer("model.layers.0.q", 1, 64), z.weights(), nullptr, cpu(), {},
                       &f.registry);
    std::vector<float> act(64 * 64, 1.0f), out(64 * 4);
    linear.forward({act.data(), 7, ActivationFormat::f32}, {out.data(), OutputFormat::f32});
  }
  set_kernel_log(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr("model.layers.0.q -> gemv (M 1): first in priority order"));
  EXPECT_THAT(lines[1], HasSubstr("model.layers.0.q -> gemm (M 2..64): first in priority order"));
  EXPECT_THAT(lines[1], HasSubstr("gemv: cannot implement the layer: M above 1"));
  Mxfp4Linear quiet(layer("q", 1, 1), z.weights(), nullptr, cpu(), {}, &f.registry);
  EXPECT_EQ(lines.size(), 2u);
}

TEST(Mxfp4Linear, ValidatesShapesAndFormatsAtTheBoundary) {
  Fakes f;
  f.add("k", 1);
  Zeros z;
  Mxfp4HostWeights wrong = z.weights();
  wrong.k = 32;
  EXPECT_THAT(error_of([&] { Mxfp4Linear(layer("l", 1, 4), wrong, nullptr, cpu(), {}, &f.registry); }),
              HasSubstr("layer l: weights are 4x32 but the layer is declared 4x64"));
  LinearDesc with_bias = layer("b", 1, 4);
  with_bias.has_bias = true;
  EXPECT_THAT(error_of([&] { Mxfp4Linear(with_bias, z.weights(), nullptr, cpu(), {}, &f.registry); }),
              HasSubstr("declared with a bias"));
  EXPECT_THAT(error_of([&] { Mxfp4Linear(layer("m", 5, 4), z.weights(), nullptr, cpu(), {}, &f.registry); }),
              HasSubstr("bad M range"));

  Mxfp4Linear linear(layer("l", 1, 4), z.weights(), nullptr, cpu(), {}, &f.registry);
  std::vector<float> act(8 * 64), out(8 * 4, -1.0f);
  EXPECT_THAT(error_of([&] {
                linear.forward({act.data(), 5, ActivationFormat::f32}, {out.data(), OutputFormat::f32});
              }),
              HasSubstr("M=5, outside its declared range 1..4"));
  EXPECT_THAT(error_of([&] {
                linear.forward({act.data(), 1, ActivationFormat::bf16}, {out.data(), OutputFormat::f32});
              }),
              HasSubstr("bf16 activations given, f32 declared"));
  EXPECT_THAT(error_of([&] {
                linear.forward({act.data(), 1, ActivationFormat::f32}, {out.data(), OutputFormat::bf16});
              }),
              HasSubstr("bf16 output given, f32 declared"));
  // M = 0: an empty problem returns early and touches nothing.
  linear.forward({nullptr, 0, ActivationFormat::f32}, {nullptr, OutputFormat::f32});
  EXPECT_EQ(out[0], -1.0f);
}

TEST(KernelRegistry, BuiltinServesEveryCpuLayerAndEndsWithCpuRef) {
  const auto& builtin = KernelRegistry::builtin();
  const auto cpu_kernels = builtin.kernels(DeviceKind::cpu);
  ASSERT_FALSE(cpu_kernels.empty());
  EXPECT_EQ(cpu_kernels.back()->name(), "cpu_ref");
  EXPECT_EQ(builtin.find("cpu_ref"), cpu_kernels.back());
  const DeviceInfo device = cpu_device_info();
  EXPECT_EQ(device.kind, DeviceKind::cpu);
  EXPECT_FALSE(device.name.empty());
  EXPECT_GE(device.threads, 1u);
  LinearDesc l = layer("x", 1, 4096);
  l.k = 172;
  const auto choices = builtin.select(l, device, {});
  ASSERT_FALSE(choices.empty());
  EXPECT_EQ(choices.front().min_m, 1u);
  EXPECT_EQ(choices.back().max_m, 4096u);
  for (size_t i = 1; i < choices.size(); ++i) EXPECT_EQ(choices[i].min_m, choices[i - 1].max_m + 1);
}

TEST(KernelRegistry, CudaDeviceInfoRefusesClearlyWithoutCuda) {
#ifndef NIBBLE_WITH_CUDA
  EXPECT_THAT(error_of([] { cuda_device_info(0); }), HasSubstr("no CUDA kernels"));
#else
  GTEST_SKIP() << "CUDA build: tests/gpu covers cuda_device_info";
#endif
}

}  // namespace
}  // namespace nibble
