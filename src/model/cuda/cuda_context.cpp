#include "model/cuda/cuda_context.h"

#include <fmt/format.h>

#include <utility>

namespace nibble {
namespace {

// cuBLAS's own recommendation for Hopper (32 MiB; 4 MiB suffices before it). A fixed workspace
// keeps cuBLAS from allocating inside a forward, which stream capture (CUDA graphs) forbids.
constexpr size_t kCublasWorkspaceBytes = size_t(32) << 20;

}  // namespace

std::string cublas_error_text(cublasStatus_t status) {
  return fmt::format("cuBLAS error {} {} ({})", int(status), cublasGetStatusName(status),
                     cublasGetStatusString(status));
}

DeviceBuffer::DeviceBuffer(size_t bytes, const std::string& what) : bytes_(bytes) {
  if (bytes == 0) return;
  NIBBLE_CUDA_CHECK(cudaMalloc(&ptr_, bytes), "{} bytes for {}", bytes, what);
}

DeviceBuffer DeviceBuffer::upload(const void* host, size_t bytes, const std::string& what) {
  DeviceBuffer b(bytes, what);
  if (bytes) NIBBLE_CUDA_CHECK(cudaMemcpy(b.ptr_, host, bytes, cudaMemcpyHostToDevice), "{}", what);
  return b;
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : ptr_(std::exchange(other.ptr_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = std::exchange(other.ptr_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

DeviceBuffer::~DeviceBuffer() {
  if (ptr_) cudaFree(ptr_);  // a destructor cannot throw; a failed free leaks at worst
}

PinnedBuffer::PinnedBuffer(size_t bytes, const std::string& what) {
  NIBBLE_CUDA_CHECK(cudaMallocHost(&ptr_, bytes), "{} bytes of pinned host memory for {}", bytes,
                    what);
}

PinnedBuffer::~PinnedBuffer() {
  if (ptr_) cudaFreeHost(ptr_);
}

CudaEvent::CudaEvent() {
  NIBBLE_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "an event");
}

CudaEvent::~CudaEvent() { cudaEventDestroy(event_); }

CudaContext::CudaContext(const DeviceInfo& device) : device_(device) {
  NIBBLE_CHECK(device.kind == DeviceKind::cuda, "CudaContext needs a CUDA device, got {}",
               device_kind_name(device.kind));
  NIBBLE_CUDA_CHECK(cudaSetDevice(device.index), "device {}", device.index);
  NIBBLE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  try {
    NIBBLE_CUBLAS_CHECK(cublasCreate(&cublas_));
    NIBBLE_CUBLAS_CHECK(cublasSetStream(cublas_, stream_));
    cublas_workspace_ = DeviceBuffer(kCublasWorkspaceBytes, "the cuBLAS workspace");
    NIBBLE_CUBLAS_CHECK(
        cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.bytes()));
  } catch (...) {
    if (cublas_) cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
    throw;
  }
}

CudaContext::~CudaContext() {
  cublasDestroy(cublas_);
  cudaStreamDestroy(stream_);
}

void CudaContext::reserve_scratch(size_t bytes) {
  if (bytes <= scratch_.bytes()) return;
  scratch_ = DeviceBuffer(bytes, "the full-precision layers' scratch");
}

}  // namespace nibble
