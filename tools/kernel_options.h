// The kernel options every command that runs a model shares:
//   --mxfp4-kernel NAME | dense=NAME,moe=NAME   force kernels (else NIBBLE_MXFP4_KERNEL, else
//                                               the registry's choice)
//   --log-kernels                               print "layer -> kernel (M range): why" once
//                                               per layer, to stderr, as layers are built
// Use: KernelOptions options; options.add_to(command); ... in the callback:
//      options.activate(); const KernelOverrides o = options.overrides();
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <string>

#include "kernels/registry.h"

namespace nibble {

struct KernelOptions {
  std::string mxfp4_kernel;
  bool log_kernels = false;

  void add_to(CLI::App& command) {
    command.add_option("--mxfp4-kernel", mxfp4_kernel,
                       "Force an MXFP4 kernel: NAME for every layer, or dense=NAME,moe=NAME per "
                       "layer class (default: NIBBLE_MXFP4_KERNEL, else the registry's choice; "
                       "`nibble kernels` lists them)");
    command.add_flag("--log-kernels", log_kernels,
                     "Print which kernel serves each layer and M range, and why");
  }

  // Parses the flag (or the environment variable); throws an Error on a bad spec.
  KernelOverrides overrides() const { return KernelOverrides::from_flag_or_env(mxfp4_kernel); }

  // Turns --log-kernels on for the layers built from now on.
  void activate() const {
    if (log_kernels)
      set_kernel_log([](std::string_view line) {
        fmt::print(stderr, "kernels: {}\n", line);
        std::fflush(stderr);
      });
  }
};

}  // namespace nibble
