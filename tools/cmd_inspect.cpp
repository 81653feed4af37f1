// nibble inspect: what a checkpoint holds, per linear module, and how it was quantized.
// The work is src/quant/inspect.h; this file parses flags and prints.
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "quant/inspect.h"

namespace nibble {
namespace {

struct Args {
  std::string directory;
  bool json = false;
  std::string dequantize;
};

void setup(CLI::App& command) {
  auto args = std::make_shared<Args>();
  command.add_option("directory", args->directory, "Checkpoint directory (config.json + *.safetensors)")->required();
  command.add_flag("--json", args->json, "Print JSON instead of a table");
  command.add_option("--dequantize", args->dequantize,
                     "Also write every MXFP4 module dequantized to F32 [.., N, K] into FILE.safetensors");
  command.callback([args] {
    if (!args->dequantize.empty()) {
      const size_t n = write_dequantized(args->directory, args->dequantize);
      fmt::print(stderr, "wrote {} dequantized modules to {}\n", n, args->dequantize);
    }
    const InspectReport report = inspect_checkpoint(args->directory);
    if (args->json)
      fmt::print("{}\n", inspect_json(report).dump(2));
    else
      fmt::print("{}", format_inspect(report));
  });
}

const bool registered = register_command(
    {"inspect", "Show a checkpoint's linear modules: format, shape, bytes, recorded selection and gates", 11, &setup});

}  // namespace
}  // namespace nibble
