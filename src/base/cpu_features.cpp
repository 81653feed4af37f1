#include "base/cpu_features.h"

#include <hwy/highway.h>
#include <hwy/targets.h>

#include <fstream>

namespace nibble {

std::string cpu_simd_target() {
  const int64_t usable = hwy::SupportedTargets() & HWY_TARGETS;
  const int64_t best = usable & -usable;  // lower bits are the better targets
  return best ? hwy::TargetName(best) : "scalar";
}

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(line.find_first_not_of(' ', colon + 1));
    }
  }
#if defined(__aarch64__)
  return "aarch64";
#else
  return "x86_64";
#endif
}

}  // namespace nibble
