#include "model/cuda/cuda_dense_linear.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "base/error.h"
#include "kernels/cuda/cuda_elementwise.h"

namespace nibble {
namespace {

// Scratch offsets are rounded to this, so that every part of the arena is as aligned as a
// cudaMalloc'd pointer is (cuBLAS picks its fastest kernels for 16-byte aligned operands).
constexpr size_t kAlign = 256;
size_t align_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// The arena for one call of the layer, and how it is cut:
//   BF16 weights, F32 activations:  [2m, k] BF16 split input | [2m, n] F32 product
//   F32 weights, BF16 activations:  [m, k] F32 widened input
//   F32 weights with a bias, or BF16 weights/activations with a bias: nothing (bias in place)
struct ScratchPlan {
  size_t input_bytes = 0, product_bytes = 0;
  size_t total() const { return align_up(input_bytes) + align_up(product_bytes); }
};

ScratchPlan scratch_plan(DType weights, ActivationFormat act, size_t m, size_t n, size_t k) {
  ScratchPlan p;
  if (weights == DType::BF16 && act == ActivationFormat::f32) {
    p.input_bytes = 2 * m * k * 2;
    p.product_bytes = 2 * m * n * 4;
  } else if (weights == DType::F32 && act == ActivationFormat::bf16) {
    p.input_bytes = m * k * 4;
  }
  return p;
}

}  // namespace

std::shared_ptr<const CudaDenseWeights> CudaDenseWeights::upload(const DenseWeights& host,
                                                                 const std::string& what) {
  NIBBLE_CHECK(host.dtype == DType::F32 || host.dtype == DType::BF16,
               "{}: dense weights must be F32 or BF16", what);
  auto w = std::make_shared<CudaDenseWeights>();
  w->dtype = host.dtype;
  w->rows = host.rows;
  w->cols = host.cols;
  w->data = DeviceBuffer::upload(host.data(), host.bytes(), what);
  return w;
}

CudaDenseLinear::CudaDenseLinear(std::string name, std::shared_ptr<const CudaDenseWeights> weights,
                                 std::vector<float> bias, CudaContext& context, size_t max_m,
                                 ActivationFormat activation)
    : name_(std::move(name)),
      weights_(std::move(weights)),
      context_(context),
      max_m_(std::max<size_t>(1, max_m)),
      activation_(activation) {
  NIBBLE_CHECK(weights_ && weights_->rows > 0 && weights_->cols > 0, "{}: empty weights", name_);
  NIBBLE_CHECK(bias.empty() || bias.size() == weights_->rows, "{}: bias has {} values, expected {}",
               name_, bias.size(), weights_->rows);
  // cuBLAS takes int dimensions.
  NIBBLE_CHECK(weights_->rows < (size_t(1) << 31) && weights_->cols < (size_t(1) << 31),
               "{}: {} x {} is too large for cuBLAS", name_, weights_->rows, weights_->cols);
  if (!bias.empty())
    bias_ = DeviceBuffer::upload(bias.data(), bias.size() * sizeof(float), "bias of " + name_);
  context_.reserve_scratch(
      scratch_plan(weights_->dtype, activation_, max_m_, weights_->rows, weights_->cols).total());
}

std::string CudaDenseLinear::weight_format() const {
  return weights_->dtype == DType::F32 ? "f32" : "bf16";
}

std::string CudaDenseLinear::kernel_name() const { return "cublas_" + weight_format(); }

void CudaDenseLinear::forward(const float*, size_t, float*) const {
  NIBBLE_THROW("layer {}: runs on the CUDA device ({}), not on host memory", name_, kernel_name());
}

void CudaDenseLinear::gemm(const void* b, cudaDataType_t b_type, size_t rows, float* c) const {
  const int n = int(weights_->rows), k = int(weights_->cols), m = int(rows);
  const float one = 1.0f, zero = 0.0f;
  const cudaDataType_t a_type = weights_->dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F;
  NIBBLE_CUBLAS_CHECK(cublasGemmEx(context_.cublas(), CUBLAS_OP_T, CUBLAS_OP_N, n, m, k, &one,
                                   weights_->data.get(), a_type, k, b, b_type, k, &zero, c,
                                   CUDA_R_32F, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                      "layer {} (M={})", name_, rows);
}

void CudaDenseLinear::forward_on_device(const ActivationView& x, const OutputView& out,
                                        void* stream) const {
  const size_t m = x.m, n = weights_->rows, k = weights_->cols;
  if (m == 0) return;
  NIBBLE_CHECK(m <= max_m_, "layer {}: M={} above the {} it was built for", name_, m, max_m_);
  NIBBLE_CHECK(x.format == activation_ && out.format == OutputFormat::f32,
               "layer {}: {} activations / {} output given, {} / f32 expected", name_,
               activation_format_name(x.format), output_format_name(out.format),
               activation_format_name(activation_));
  NIBBLE_CHECK(x.data && out.data, "layer {}: null activations or output", name_);
  NIBBLE_CHECK(!x.norm.partials && !out.norm.partials,
               "layer {}: cuBLAS products take no folded norm", name_);
  NIBBLE_CHECK(static_cast<cudaStream_t>(stream) == context_.stream(),
               "layer {}: must run on its model's stream (cuBLAS is bound to it)", name_);
  const cudaStream_t s = context_.stream();
  float* y = static_cast<float*>(out.data);
  const float* bias = bias_.as<const float>();
  const ScratchPlan plan = scratch_plan(weights_->dtype, activation_, m, n, k);
  auto* scratch = static_cast<uint8_t*>(context_.scratch());
  void* input = scratch;
  auto* product = reinterpret_cast<float*>(scratch + align_up(plan.input_bytes));

  if (weights_->dtype == DType::BF16 && activation_ == ActivationFormat::f32) {
    NIBBLE_CUDA_CHECK(cuda_split_bf16(static_cast<const float*>(x.data), m, k, input, s),
                      "layer {}", name_);
    gemm(input, CUDA_R_16BF, 2 * m, product);
    NIBBLE_CUDA_CHECK(cuda_combine_rows(product, 2, m, n, bias, y, s), "layer {}", name_);
    return;
  }
  if (weights_->dtype == DType::F32 && activation_ == ActivationFormat::bf16) {
    NIBBLE_CUDA_CHECK(cuda_bf16_to_f32(x.data, static_cast<float*>(input), m * k, s), "layer {}",
                      name_);
    gemm(input, CUDA_R_32F, m, y);
  } else {
    gemm(x.data, weights_->dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F, m, y);
  }
  if (bias) NIBBLE_CUDA_CHECK(cuda_combine_rows(y, 1, m, n, bias, y, s), "layer {}", name_);
}

}  // namespace nibble
