// Opening a model by path, whatever it is on disk:
//   - a Hugging Face directory (config.json + model.safetensors or shards + tokenizer.json),
//     BF16/F16/F32 or written by `nibble quantize` (MXFP4 layers as P_blocks / P_scales);
//   - a llama2.c checkpoint (a .bin file, or a directory holding one .bin model and its
//     tok*.bin tokenizer): converted once with convert_llama2c into a cache directory
//     ($NIBBLE_CACHE_DIR, else $XDG_CACHE_HOME/nibble, else ~/.cache/nibble), keyed by the
//     converter's format version and the content hash of both files, and loaded from there,
//     so the safetensors path is the one exercised.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "format/hf_config.h"
#include "model/linear_plan.h"
#include "model/llama/llama_model.h"

namespace nibble {

struct LoadedModel {
  std::filesystem::path directory;  // the Hugging Face directory that was loaded
  std::string origin;               // "", "converted X ... into cache Y" or
                                    // "using cached conversion Y of X"
  HfConfig hf;
  std::unique_ptr<LlamaModel> model;
  double load_seconds = 0;
};

// The Hugging Face directory for `input`, converting a llama2.c checkpoint into the cache
// first if needed (`origin` says so). Errors name the path and what was expected there.
std::filesystem::path resolve_model_directory(const std::filesystem::path& input, std::string* origin);

LoadedModel load_model(const std::filesystem::path& input, const ModelLoadOptions& options);

// llama2.c checkpoint (+ its tokenizer, may be empty) -> Hugging Face directory `out`:
// config.json (LlamaForCausalLM), model.safetensors (F32, q/k rows permuted for rotate-half
// RoPE), tokenizer.json + tokenizer_config.json. Written into a temporary directory beside
// `out` and renamed into place, so a crash never leaves a half directory behind.
void convert_llama2c(const std::filesystem::path& model_bin, const std::filesystem::path& tokenizer_bin,
                     const std::filesystem::path& out);

// The llama2.c model and tokenizer files of a directory (or of a .bin path). Throws naming the
// directory when there is not exactly one model .bin.
struct Llama2cFiles {
  std::filesystem::path model, tokenizer;
};
Llama2cFiles find_llama2c_files(const std::filesystem::path& input);

// Version of what convert_llama2c (`nibble convert`) writes. It is part of the conversion
// cache key, so a cache directory written by an older converter is never loaded: bump it
// whenever `nibble convert` output changes (config.json fields, tensor names or layout,
// tokenizer files, generation_config.json).
inline constexpr uint64_t kConvertFormatVersion = 1;

// The cache key of a llama2.c checkpoint: FNV-1a 64 over `format_version`, then the model
// file's bytes, then the tokenizer's (when there is one).
uint64_t conversion_cache_key(const Llama2cFiles& files, uint64_t format_version);
// Where resolve_model_directory converts `files` to: <cache root>/<model stem>-hf-<key>.
std::filesystem::path conversion_cache_directory(const Llama2cFiles& files);

}  // namespace nibble
