// Shared by the GPU tests (CUDA builds only).
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_check.h"

// Skips the test (visibly, with the runtime's reason) where there is no usable CUDA device.
#define NIBBLE_REQUIRE_CUDA()                                            \
  do {                                                                   \
    ::nibble::DeviceInfo d;                                              \
    d.kind = ::nibble::DeviceKind::cuda;                                 \
    const ::nibble::Check present = ::nibble::cuda_device_present(d);    \
    if (!present.ok) GTEST_SKIP() << present.reason;                     \
  } while (0)

namespace nibble::test {

// Device memory for `size` values of T: a copy of a host vector, or every byte `fill` (0xff:
// a NaN poison for F32 and BF16); to_host() waits for the device and copies it back.
template <typename T>
class DeviceVector {
 public:
  explicit DeviceVector(const std::vector<T>& host) : size_(host.size()) {
    allocate();
    NIBBLE_CUDA_CHECK(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice));
  }
  DeviceVector(size_t size, uint8_t fill) : size_(size) {
    allocate();
    NIBBLE_CUDA_CHECK(cudaMemset(ptr_, fill, bytes()));
  }
  DeviceVector(const DeviceVector&) = delete;
  DeviceVector& operator=(const DeviceVector&) = delete;
  ~DeviceVector() { cudaFree(ptr_); }
  T* get() const { return ptr_; }
  size_t bytes() const { return size_ * sizeof(T); }
  std::vector<T> to_host() const {
    std::vector<T> out(size_);
    NIBBLE_CUDA_CHECK(cudaDeviceSynchronize());
    NIBBLE_CUDA_CHECK(cudaMemcpy(out.data(), ptr_, bytes(), cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  void allocate() {
    NIBBLE_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), std::max<size_t>(bytes(), 1)));
  }
  T* ptr_ = nullptr;
  size_t size_;
};

}  // namespace nibble::test
