// nibble version: what this binary is and what it was built for.
#include <fmt/format.h>

#include "base/cpu_features.h"
#include "build_info.h"
#include "command.h"

namespace nibble {
namespace {

void setup(CLI::App& command) {
  command.callback([] {
    const BuildInfo& info = build_info();
    fmt::print("nibble {} (commit {}, {} build)\n", info.version, info.commit, info.build_type);
    if (info.cuda)
      fmt::print("CUDA: on, architectures {}\n", info.cuda_architectures);
    else
      fmt::print("CUDA: off (no CUDA compiler at build time)\n");
    fmt::print("CPU: {}, SIMD target {}\n", cpu_model_name(), cpu_simd_target());
  });
}

const bool registered = register_command(
    {"version", "Print the version, commit, CUDA architectures and the CPU SIMD target", 100, &setup});

}  // namespace
}  // namespace nibble
