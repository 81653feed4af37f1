// Host side of cuda_bandwidth.h (the copy kernel is in cuda_bandwidth.cu).
#include <algorithm>
#include <vector>

#include "kernels/cuda/cuda_bandwidth.h"
#include "kernels/cuda/cuda_check.h"

namespace nibble {
namespace {

struct Events {
  cudaEvent_t start = nullptr, stop = nullptr;
  Events() {
    NIBBLE_CUDA_CHECK(cudaEventCreate(&start));
    NIBBLE_CUDA_CHECK(cudaEventCreate(&stop));
  }
  ~Events() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
};

struct Buffer {
  void* p = nullptr;
  explicit Buffer(size_t bytes) {
    NIBBLE_CUDA_CHECK(cudaMalloc(&p, bytes), "{} bytes for the copy-bandwidth probe", bytes);
  }
  ~Buffer() { cudaFree(p); }
};

// Median milliseconds of `reps` runs of `copy` (after one warm-up run).
template <typename F>
float median_ms(int reps, cudaStream_t stream, F&& copy) {
  Events e;
  copy();
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<float> ms;
  for (int r = 0; r < reps; ++r) {
    NIBBLE_CUDA_CHECK(cudaEventRecord(e.start, stream));
    copy();
    NIBBLE_CUDA_CHECK(cudaEventRecord(e.stop, stream));
    NIBBLE_CUDA_CHECK(cudaEventSynchronize(e.stop));
    float t = 0;
    NIBBLE_CUDA_CHECK(cudaEventElapsedTime(&t, e.start, e.stop));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

double cuda_copy_bandwidth(size_t bytes, int reps, cudaStream_t stream) {
  bytes = std::max<size_t>(bytes / 16 * 16, 16);
  reps = std::max(reps, 1);
  Buffer a(bytes), b(bytes);
  NIBBLE_CUDA_CHECK(cudaMemsetAsync(a.p, 1, bytes, stream));
  int device = 0, sms = 0;
  NIBBLE_CUDA_CHECK(cudaGetDevice(&device));
  NIBBLE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const float memcpy_ms = median_ms(reps, stream, [&] {
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(b.p, a.p, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const float kernel_ms = median_ms(reps, stream, [&] {
    NIBBLE_CUDA_CHECK(cuda_copy_kernel(a.p, b.p, bytes, unsigned(sms) * 8, stream),
                      "the copy kernel");
  });
  const double seconds = std::min(memcpy_ms, kernel_ms) * 1e-3;
  return 2.0 * double(bytes) / seconds;
}

}  // namespace nibble
