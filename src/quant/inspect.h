// `nibble inspect DIR`: what a checkpoint holds, per linear module (format, shape, bytes), the
// totals and the bytes MXFP4 saved against BF16, the selection recorded by `nibble quantize`
// and the gates that applied. Reads headers and config only (plus the lm_head/embed bytes for
// the aliasing check). Works on our output, on the published gpt-oss layout, on
// compressed-tensors MXFP4 and on plain BF16/F16/F32/FP8 checkpoints.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "quant/model_info.h"

namespace nibble {

struct InspectModule {
  std::string name;
  ModuleKind kind = ModuleKind::other;
  std::string format;           // "BF16", "MXFP4 (gpt-oss)", "MXFP4 (compressed-tensors)", "FP8 E4M3", ...
  std::vector<int64_t> shape;   // logical [.., N, K]
  uint64_t bytes = 0;           // stored bytes (weight, or blocks + scales)
  uint64_t bf16_bytes = 0;      // the same weight in BF16
};

struct InspectReport {
  std::string directory;
  std::vector<std::string> architectures;
  std::vector<InspectModule> modules;  // sorted by name
  size_t tensors = 0;
  uint64_t total_bytes = 0;     // every tensor
  uint64_t linear_bytes = 0;    // the linear modules
  uint64_t bf16_equivalent = 0; // the linear modules stored as BF16
  std::string quant_method;     // quantization_config.quant_method, or ""
  nlohmann::json selection;     // quantization_config.nibble, or null
  std::string tied_reason;      // why lm_head and embed are tied, or ""
  std::vector<std::string> gates;  // the gates that applied, one line each
  int64_t saved_bytes() const { return int64_t(bf16_equivalent) - int64_t(linear_bytes); }
};

InspectReport inspect_checkpoint(const std::string& directory);
std::string format_inspect(const InspectReport& report);
nlohmann::json inspect_json(const InspectReport& report);

// Writes every MXFP4 module of the checkpoint in `directory`, dequantized by the format codec
// to F32 [.., N, K] (K last, as in the packed layout), into one safetensors file named by
// module. For checking other tools' dequantization against ours (scripts/device/quant_check.py).
// Returns the number of modules written.
size_t write_dequantized(const std::string& directory, const std::string& output_file);

}  // namespace nibble
