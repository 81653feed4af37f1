// Flags shared by the commands that load a model (run, eval): --mxfp4-layers, --include,
// --exclude, --scale-rule, --mxfp4-kernel, --log-kernels, --device, --threads; and the
// device resolution that says where the model really runs.
#pragma once

#include <fmt/format.h>
#include <sys/resource.h>

#include <cstdio>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/thread_pool.h"
#include "kernel_options.h"
#include "kernels/registry.h"
#include "model/linear_plan.h"

namespace nibble {

// What --device cuda prints: the model runs, on the CPU, and the user is told why.
inline constexpr const char* kCudaNotImplementedNote =
    "--device cuda: the CUDA forward path of the Llama-family model is not implemented yet; "
    "running on the CPU";

struct ModelFlags {
  std::string model;
  std::string mxfp4_layers = "qkv,o,mlp";
  std::vector<std::string> include, exclude;
  std::string scale_rule = "ocp";
  KernelOptions kernels;  // --mxfp4-kernel, --log-kernels
  std::string device = "cpu";
  size_t threads = 0;

  void add_to(CLI::App& command) {
    command.add_option("-m,--model", model,
                       "model directory (Hugging Face, or llama2.c .bin + tok*.bin: converted "
                       "once into the cache)")
        ->required();
    command.add_option("--mxfp4-layers", mxfp4_layers,
                       "layers to run in MXFP4: none, or a list of qkv, o, mlp, lm_head, all "
                       "(a tied lm_head stays full precision, with a warning)")
        ->capture_default_str();
    command.add_option("--include", include, "also quantize modules matching these globs");
    command.add_option("--exclude", exclude, "never quantize modules matching these globs");
    command.add_option("--scale-rule", scale_rule, "E8M0 scale rule when quantizing at load: ocp or ceil")
        ->capture_default_str();
    kernels.add_to(command);
    command.add_option("--device", device, "cpu or cuda")->capture_default_str();
    command.add_option("-t,--threads", threads, "CPU threads (default: NIBBLE_THREADS or all)");
  }

  // Load options; prints the device note (stderr) when the request cannot be honoured as asked.
  ModelLoadOptions load_options() const {
    NIBBLE_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda, got \"{}\"",
                 device);
    if (threads > 0) ThreadPool::set_default_threads(threads);
    if (device == "cuda")
      std::fprintf(stderr, "nibble: %s\n", kCudaNotImplementedNote);
    kernels.activate();
    ModelLoadOptions o;
    o.mxfp4_layers = mxfp4_layers;
    o.include = include;
    o.exclude = exclude;
    o.scale_rule = scale_rule_from_name(scale_rule);
    o.kernels = kernels.overrides();
    o.device = cpu_device_info();
    return o;
  }
};

// Peak resident memory of this process, MiB.
inline double peak_memory_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return double(usage.ru_maxrss) / 1024.0;  // Linux: KiB
}

}  // namespace nibble
