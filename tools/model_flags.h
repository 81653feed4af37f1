// Flags shared by the commands that load a model (run, eval): --mxfp4-layers, --include,
// --exclude, --scale-rule, --mxfp4-kernel, --log-kernels, --device, --cuda-activations,
// --no-fuse, --no-cuda-graphs, --threads; and the device resolution. --device cuda runs the model on CUDA device 0, or
// fails with the reason (no device, no driver, a build without CUDA): never a silent CPU run.
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

struct ModelFlags {
  std::string model;
  std::string mxfp4_layers = "qkv,o,mlp";
  std::vector<std::string> include, exclude;
  std::string scale_rule = "ocp";
  KernelOptions kernels;  // --mxfp4-kernel, --log-kernels
  std::string device = "cpu";
  std::string cuda_activations = "f32";
  bool no_fuse = false, no_cuda_graphs = false;
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
    command.add_option("--device", device,
                       "cpu or cuda (CUDA device 0; an error where there is none). On cuda, "
                       "prompts run in chunks of 8 tokens through the decode kernels")
        ->capture_default_str();
    command.add_option("--cuda-activations", cuda_activations,
                       "what the CUDA linear layers are fed: f32 (two BF16 terms per value, "
                       "~1e-5 relative to the CPU) or bf16 (one rounding, ~1e-2)")
        ->capture_default_str();
    command.add_flag("--no-fuse", no_fuse,
                     "run q, k, v (and gate, up) as separate products, and on cuda every "
                     "RMSNorm as its own kernel; by default layers that read one input run as "
                     "one MXFP4 product when all of them are MXFP4, and a norm between two "
                     "MXFP4 products is folded into them");
    command.add_flag("--no-cuda-graphs", no_cuda_graphs,
                     "on cuda, launch every kernel from the host; by default each forward "
                     "shape is captured once as a CUDA graph and replayed");
    command.add_option("-t,--threads", threads, "CPU threads (default: NIBBLE_THREADS or all)");
  }

  // Load options. --device cuda throws an Error naming why when there is no usable CUDA device.
  ModelLoadOptions load_options() const {
    NIBBLE_CHECK(device == "cpu" || device == "cuda", "--device must be cpu or cuda, got \"{}\"",
                 device);
    NIBBLE_CHECK(cuda_activations == "f32" || cuda_activations == "bf16",
                 "--cuda-activations must be f32 or bf16, got \"{}\"", cuda_activations);
    NIBBLE_CHECK(cuda_activations == "f32" || device == "cuda",
                 "--cuda-activations {} needs --device cuda (the CPU layers take F32)",
                 cuda_activations);
    if (threads > 0) ThreadPool::set_default_threads(threads);
    DeviceInfo where = cpu_device_info();
    if (device == "cuda") {
#if !NIBBLE_WITH_CUDA
      NIBBLE_THROW("--device cuda: this nibble was built without CUDA (nvcc was not found at "
                   "build time, or NIBBLE_CUDA=OFF); use --device cpu");
#endif
      try {
        where = cuda_device_info(0);
      } catch (const Error& e) {
        NIBBLE_THROW("--device cuda: {}", e.message());
      }
    }
    kernels.activate();
    ModelLoadOptions o;
    o.mxfp4_layers = mxfp4_layers;
    o.include = include;
    o.exclude = exclude;
    o.scale_rule = scale_rule_from_name(scale_rule);
    o.kernels = kernels.overrides();
    o.device = where;
    o.fuse_linears = !no_fuse;
    o.cuda_graphs = !no_cuda_graphs;
    if (where.kind == DeviceKind::cuda && cuda_activations == "bf16")
      o.activation = ActivationFormat::bf16;
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
