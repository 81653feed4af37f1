// What the CPU offers, as the SIMD kernels see it.
#pragma once

#include <string>

namespace nibble {

// The Highway target that run-time dispatch picks on this CPU among those compiled in
// ("AVX3_ZEN4", "AVX2", "NEON", ...).
std::string cpu_simd_target();
// The CPU's model name from /proc/cpuinfo, or the architecture when that is unavailable.
std::string cpu_model_name();

}  // namespace nibble
