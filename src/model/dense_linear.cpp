#include "model/dense_linear.h"

#include <algorithm>
#include <cstring>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/float16.h"

namespace nibble {
namespace {

// Dot products with kLanes independent partial sums: the compiler turns the inner loop into
// vector FMAs (a single running sum would serialise on the add latency).
constexpr size_t kLanes = 16;

inline float load(const float* w, size_t i) { return w[i]; }
inline float load(const uint16_t* w, size_t i) { return bf16_to_f32(w[i]); }

template <typename W>
float dot(const float* x, const W* w, size_t k) {
  float acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= k; i += kLanes)
    for (size_t l = 0; l < kLanes; ++l) acc[l] += x[i + l] * load(w, i + l);
  float tail = 0;
  for (; i < k; ++i) tail += x[i] * load(w, i);
  float sum = 0;
  for (size_t l = 0; l < kLanes; ++l) sum += acc[l];
  return sum + tail;
}

// Rows of W in [begin, end) against every activation row: each weight row is read once from
// memory and reused for all m activations (m is small in decode; prefill re-reads from cache).
template <typename W>
void rows(const W* w, size_t k, const float* x, size_t m, size_t n, const float* bias,
          size_t begin, size_t end, float* out) {
  for (size_t r = begin; r < end; ++r) {
    const W* row = w + r * k;
    const float b = bias ? bias[r] : 0.0f;
    for (size_t i = 0; i < m; ++i) out[i * n + r] = dot(x + i * k, row, k) + b;
  }
}

// Below this many multiply-adds a product runs on the calling thread: waking the pool costs
// more than it saves (a 64x64 projection of stories260K is 4 K MACs).
constexpr size_t kParallelMacs = size_t(1) << 16;

}  // namespace

void DenseWeights::row_to_f32(size_t r, float* out) const {
  NIBBLE_CHECK(r < rows, "row {} out of range ({} rows)", r, rows);
  if (dtype == DType::F32) {
    std::memcpy(out, f32.data() + r * cols, cols * sizeof(float));
  } else {
    for (size_t c = 0; c < cols; ++c) out[c] = bf16_to_f32(bf16[r * cols + c]);
  }
}

DenseLinear::DenseLinear(std::string name, std::shared_ptr<const DenseWeights> weights,
                         std::vector<float> bias)
    : name_(std::move(name)), weights_(std::move(weights)), bias_(std::move(bias)) {
  NIBBLE_CHECK(weights_ && weights_->rows > 0 && weights_->cols > 0, "{}: empty weights", name_);
  NIBBLE_CHECK(weights_->dtype == DType::F32 || weights_->dtype == DType::BF16,
               "{}: dense weights must be F32 or BF16", name_);
  NIBBLE_CHECK(bias_.empty() || bias_.size() == weights_->rows,
               "{}: bias has {} values, expected {}", name_, bias_.size(), weights_->rows);
}

std::string DenseLinear::weight_format() const {
  return weights_->dtype == DType::F32 ? "f32" : "bf16";
}

std::string DenseLinear::kernel_name() const { return "dense_" + weight_format(); }

void DenseLinear::forward(const float* x, size_t m, float* out) const {
  if (m == 0) return;
  const size_t n = weights_->rows, k = weights_->cols;
  const float* bias = bias_.empty() ? nullptr : bias_.data();
  auto run = [&](size_t begin, size_t end) {
    if (weights_->dtype == DType::F32)
      rows(weights_->f32.data(), k, x, m, n, bias, begin, end, out);
    else
      rows(weights_->bf16.data(), k, x, m, n, bias, begin, end, out);
  };
  if (n * k * m < kParallelMacs) {
    run(0, n);
    return;
  }
  // Grain: enough rows that each chunk holds ~kParallelMacs / 4 multiply-adds.
  const size_t grain = std::max<size_t>(1, kParallelMacs / 4 / (k * m));
  ThreadPool::global().parallel_for(n, grain,
                                    [&](size_t begin, size_t end, size_t) { run(begin, end); });
}

}  // namespace nibble
