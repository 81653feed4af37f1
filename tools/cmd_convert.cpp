// nibble convert: a llama2.c checkpoint (model .bin + tokenizer .bin) into a Hugging Face
// directory (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) that
// `nibble run`, `nibble quantize` and transformers all read.
#include <fmt/format.h>

#include <filesystem>

#include "command.h"
#include "model/model_loader.h"

namespace nibble {
namespace {

struct Args {
  std::string input, output, tokenizer;
};

void setup(CLI::App& command) {
  auto args = std::make_shared<Args>();
  command.add_option("input", args->input,
                     "llama2.c model .bin, or a directory with one model .bin and its tok*.bin")
      ->required();
  command.add_option("-o,--output", args->output, "output directory (replaced if it exists)")
      ->required();
  command.add_option("--tokenizer", args->tokenizer,
                     "llama2.c tokenizer .bin (default: the tok*.bin beside the model)");
  command.callback([args] {
    Llama2cFiles files = find_llama2c_files(args->input);
    if (!args->tokenizer.empty()) files.tokenizer = args->tokenizer;
    convert_llama2c(files.model, files.tokenizer, args->output);
    fmt::print("converted {} -> {} (config.json, model.safetensors{})\n", files.model.string(),
               args->output,
               files.tokenizer.empty() ? "; no tokenizer found, none written"
                                       : ", tokenizer.json, tokenizer_config.json from " +
                                             files.tokenizer.string());
  });
}

const bool registered = register_command(
    {"convert", "Convert a llama2.c checkpoint into a Hugging Face model directory", 40, &setup});

}  // namespace
}  // namespace nibble
