#include "kernels/cuda/cuda_check.h"

#include <fmt/format.h>

namespace nibble {

std::string cuda_error_text(cudaError_t status) {
  return fmt::format("CUDA error {} {} ({})", int(status), cudaGetErrorName(status),
                     cudaGetErrorString(status));
}

namespace {

// Device count, or the runtime's reason there is none (driver missing, no GPU, ...).
int cuda_device_count(std::string* why) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // cudaGetDeviceCount's failure is not sticky, but clear it anyway
    if (why) *why = cuda_error_text(status);
    return 0;
  }
  if (count == 0 && why) *why = "the runtime reports 0 devices";
  return count;
}

}  // namespace

DeviceInfo cuda_query_device(int index) {
  std::string why;
  const int count = cuda_device_count(&why);
  NIBBLE_CHECK(count > 0, "no CUDA device: {}", why);
  NIBBLE_CHECK(index >= 0 && index < count, "no CUDA device {}: this machine has {} (0..{})",
               index, count, count - 1);
  cudaDeviceProp prop{};
  NIBBLE_CUDA_CHECK(cudaGetDeviceProperties(&prop, index), "device {}", index);
  DeviceInfo info;
  info.kind = DeviceKind::cuda;
  info.index = index;
  info.name = prop.name;
  info.compute_capability = prop.major * 10 + prop.minor;
  info.multiprocessors = prop.multiProcessorCount;
  return info;
}

Check cuda_device_present(const DeviceInfo& device) {
  if (device.kind != DeviceKind::cuda) return Check::no("not a CUDA device");
  std::string why;
  const int count = cuda_device_count(&why);
  if (count == 0) return Check::no("no CUDA device (" + why + ")");
  if (device.index < 0 || device.index >= count)
    return Check::no(fmt::format("no CUDA device {} (this machine has {})", device.index, count));
  return Check::yes();
}

}  // namespace nibble
