// What a model running on a CUDA device holds for its whole life (CUDA builds only):
//
//   CudaContext   the device (made current), one stream every kernel of the model's forward
//                 runs on, a cuBLAS handle bound to that stream with a fixed workspace (no
//                 allocation inside a forward, as CUDA graphs will need), and one scratch arena
//                 the full-precision layers share: they run one after another on the stream,
//                 so one arena sized for the largest serves them all.
//   DeviceBuffer  an owned cudaMalloc'd allocation (allocated at load, never per token).
//   PinnedBuffer, CudaEvent   owned page-locked host memory and an event, for copies the host
//                 waits for without waiting for the whole stream.
//
// NIBBLE_CUBLAS_CHECK is NIBBLE_CUDA_CHECK's twin for cublasStatus_t.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/linear_kernel.h"

namespace nibble {

// "cuBLAS error 13 CUBLAS_STATUS_EXECUTION_FAILED (the GPU program failed to execute)".
std::string cublas_error_text(cublasStatus_t status);

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // `bytes` of uninitialised device memory; `what` names it in the error when it fails.
  DeviceBuffer(size_t bytes, const std::string& what);
  // A device copy of host memory.
  static DeviceBuffer upload(const void* host, size_t bytes, const std::string& what);
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer();
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// An owned cudaMallocHost allocation: host memory the GPU copies into while the host goes on
// (a copy into pageable memory returns only once it is done).
class PinnedBuffer {
 public:
  PinnedBuffer(size_t bytes, const std::string& what);
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  ~PinnedBuffer();
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
};

// An owned cudaEvent_t without timing: a point of a stream the host can wait for.
class CudaEvent {
 public:
  CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  ~CudaEvent();
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

class CudaContext {
 public:
  // Makes `device` current (cudaSetDevice), creates the stream and the cuBLAS handle.
  explicit CudaContext(const DeviceInfo& device);
  ~CudaContext();
  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  const DeviceInfo& device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t cublas() const { return cublas_; }

  // Grows the shared scratch arena to at least `bytes` (at load, before any forward).
  void reserve_scratch(size_t bytes);
  void* scratch() const { return scratch_.get(); }
  size_t scratch_bytes() const { return scratch_.bytes(); }

 private:
  DeviceInfo device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceBuffer cublas_workspace_;
  DeviceBuffer scratch_;
};

}  // namespace nibble

#define NIBBLE_CUBLAS_CHECK(expr, ...)                                                       \
  do {                                                                                       \
    const cublasStatus_t nibble_cublas_status_ = (expr);                                     \
    if (nibble_cublas_status_ != CUBLAS_STATUS_SUCCESS) [[unlikely]]                         \
      NIBBLE_THROW("{} in {}{}", ::nibble::cublas_error_text(nibble_cublas_status_), #expr,  \
                   ::nibble::detail::cuda_check_context(__VA_ARGS__));                       \
  } while (0)
