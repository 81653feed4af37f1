// The MXFP4 linear-kernel interface: every backend (cpu_ref, cpu_simd, CUDA GEMV, later the
// tensor-core GEMMs and MoE kernels) is one LinearKernel. The registry (registry.h) asks each
// entry is_supported(device) and can_implement(layer), calls prepare() once after loading,
// then apply() for every product.
//
//   out[m, n] = sum_k act[m, k] * W[n, k] (+ bias[n])      W: MXFP4, [N, K] (format/mxfp4.h)
//
// Activations are row-major [M, K], outputs row-major [M, N]. For a CUDA kernel every pointer
// handed to apply() is device memory and `stream` is a cudaStream_t; for a CPU kernel they
// are host memory and `stream` is ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace nibble {

enum class DeviceKind : uint8_t { cpu, cuda };
const char* device_kind_name(DeviceKind kind);

// What a kernel needs to know of the machine it would run on.
struct DeviceInfo {
  DeviceKind kind = DeviceKind::cpu;
  int index = 0;                 // CUDA ordinal
  std::string name;              // "AMD EPYC ...", "NVIDIA H100 80GB HBM3"
  int compute_capability = 0;    // CUDA: 10 * major + minor (90 for sm_90)
  int multiprocessors = 0;       // CUDA SM count
  std::string cpu_simd_target;   // CPU: the Highway target chosen at run time ("AVX3_ZEN4", ...)
  size_t threads = 1;            // CPU: worker threads
};

enum class ActivationFormat : uint8_t { f32, bf16 };  // FP8 and MXFP8 come with W4A8
enum class OutputFormat : uint8_t { f32, bf16 };
enum class LayerClass : uint8_t { dense, moe };
// What a kernel's arithmetic rounds before it multiplies (the weights are always exact: E2M1
// times a power of two). `nibble kernels` shows it; the kernel tests set their error limits
// from it.
enum class ActivationRounding : uint8_t {
  none,          // F32 products (or exact splits of them), F32 accumulation
  // Activations quantized per 32-element block to int8: amax = max |a| of the block,
  // q = round-half-even(a * fl(127 / amax)) in F32 (amax < 2^-100: the block is scaled by
  // 2^100 first, exactly), value q * fl(amax / 127). The kernel tests hold a kernel to
  // exactly this (tests/kernels/linear_harness.h), so results do not depend on the kernel.
  int8_block32,
};
// What a kernel does to the product before it stores it.
enum class LinearEpilogue : uint8_t {
  none,
  // A SwiGLU MLP's gate|up product and its activation in one kernel (one launch fewer a
  // layer): the layer's rows are two halves, [gate; up] (n even, n / 2 rows each), and the
  // output is [M, n / 2]: out[m, i] = silu(g) * u, g = gate row i . act[m] and u = up row i .
  // act[m] (biases added first), silu(g) = g / (1 + exp(-g)) as the models compute it.
  swiglu,
};
const char* activation_format_name(ActivationFormat f);
const char* linear_epilogue_name(LinearEpilogue e);
// The output format that writes values in activation format f (a layer feeding the next).
inline OutputFormat as_output_format(ActivationFormat f) {
  return f == ActivationFormat::bf16 ? OutputFormat::bf16 : OutputFormat::f32;
}
// Bytes of one activation element in format f.
inline size_t activation_format_bytes(ActivationFormat f) {
  return f == ActivationFormat::bf16 ? 2 : 4;
}
const char* output_format_name(OutputFormat f);
const char* layer_class_name(LayerClass c);
const char* activation_rounding_name(ActivationRounding r);

// One linear layer as the kernels see it.
struct LinearDesc {
  std::string name;              // module name, e.g. "model.layers.3.self_attn.q_proj"
  LayerClass layer_class = LayerClass::dense;
  size_t n = 0;                  // output features
  size_t k = 0;                  // input features (any K; the packed rows pad to 32)
  size_t min_m = 1, max_m = 1;   // the M range this layer will be called with
  ActivationFormat activation = ActivationFormat::f32;
  OutputFormat output = OutputFormat::f32;
  bool has_bias = false;
  LinearEpilogue epilogue = LinearEpilogue::none;
  // Run inside a chain of kernels on one stream (a model's forward on a GPU): a GPU kernel may
  // start its weight loads before the kernel before it ends (src/kernels/cuda/cuda_launch.cuh).
  bool chained = false;
  // Columns of the output: n, or n / 2 with the SwiGLU epilogue.
  size_t out_features() const { return epilogue == LinearEpilogue::swiglu ? n / 2 : n; }
};

// Source weights on the host, in the checkpoint layout of format/mxfp4.h:
// blocks [n, blocks_per_row(k), 16], scales [n, blocks_per_row(k)].
struct Mxfp4HostWeights {
  const uint8_t* blocks = nullptr;
  const uint8_t* scales = nullptr;
  size_t n = 0, k = 0;
};

// ok, or the reason why not. Reasons are sentences a user can act on.
struct Check {
  bool ok = true;
  std::string reason;
  static Check yes() { return {}; }
  static Check no(std::string why) { return {false, std::move(why)}; }
};

// A kernel's own copy of a layer's weights (repacked, padded, uploaded), made by prepare().
class PreparedWeights {
 public:
  virtual ~PreparedWeights() = default;
  // Bytes this copy holds beyond the source weights (reported at load).
  virtual size_t bytes() const = 0;
};

// An RMSNorm between two products, folded into them by kernels that say
// supports_folded_norm() (a model's forward then launches no norm kernel there):
//   the product before it (OutputView::norm): x[m, :] += its product (the residual add, in
//     place), out[m, :] = weight * x[m, :] in out.format, and partials[m][j] = the sum of
//     x[m, c]^2 over c = 8j .. 8j + 7 (c < n);
//   the product after it (ActivationView::norm) reads that out as its activations and scales
//     row m of its product by 1 / sqrt(sum_j partials[m][j] / n + eps) before the bias: the
//     norm's scale, applied after the (linear) product instead of before it.
// The norm's arithmetic is the rms_norm kernel's (cuda_norm.h) up to the order of the sums.
struct FoldedNorm {
  float* partials = nullptr;      // [m][folded_norm_slots(n)] F32, device; null: no norm here
  size_t n = 0;                   // the normalised width (the residual stream's)
  float eps = 1e-5f;
  float* residual = nullptr;      // the product before it: x [m, n] F32, device
  const float* weight = nullptr;  // the product before it: the norm's weight [n] F32, device
};
inline size_t folded_norm_slots(size_t n) { return (n + 7) / 8; }

struct ActivationView {
  const void* data = nullptr;
  size_t m = 0;
  ActivationFormat format = ActivationFormat::f32;
  FoldedNorm norm;  // partials set: data is weight * x, rows still to be scaled (above)

  ActivationView() = default;
  ActivationView(const void* d, size_t rows, ActivationFormat f, FoldedNorm folded = {})
      : data(d), m(rows), format(f), norm(folded) {}
};

// With a folded norm (norm.partials set) `data` receives the norm's output, in `format`, and
// the product itself goes into norm.residual.
struct OutputView {
  void* data = nullptr;
  OutputFormat format = OutputFormat::f32;
  FoldedNorm norm;

  OutputView() = default;
  OutputView(void* d, OutputFormat f, FoldedNorm folded = {}) : data(d), format(f), norm(folded) {}
};

class LinearKernel {
 public:
  virtual ~LinearKernel() = default;
  virtual std::string_view name() const = 0;
  virtual DeviceKind device_kind() const = 0;
  // Kernels that return the same non-empty layout id can share one PreparedWeights.
  virtual std::string_view layout_id() const { return name(); }
  virtual ActivationRounding activation_rounding() const { return ActivationRounding::none; }
  virtual Check is_supported(const DeviceInfo& device) const = 0;
  virtual Check can_implement(const LinearDesc& layer) const = 0;
  // Whether it applies `e` (the registry asks it before can_implement); most kernels store
  // the plain product only.
  virtual bool supports_epilogue(LinearEpilogue e) const { return e == LinearEpilogue::none; }
  // Whether apply() takes a FoldedNorm on either side (a plain product's output, any
  // product's activations).
  virtual bool supports_folded_norm() const { return false; }
  // Runs once per layer after loading. `bias` (host, F32, n values) may be null.
  virtual std::unique_ptr<PreparedWeights> prepare(const LinearDesc& layer,
                                                   const Mxfp4HostWeights& weights,
                                                   const float* bias) const = 0;
  // out[M, N] = act[M, K] x W^T (+ bias), then layer.epilogue. M between layer.min_m and
  // layer.max_m.
  virtual void apply(const LinearDesc& layer, const PreparedWeights& weights,
                     const ActivationView& act, const OutputView& out, void* stream) const = 0;
};

}  // namespace nibble
