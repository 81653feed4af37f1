// `nibble quantize`: a Hugging Face checkpoint in, a Hugging Face checkpoint out, with the
// linear modules that plan_layers() selects in MXFP4 and every other tensor byte-exact.
//
// Output layouts (docs/formats.md draws both):
//   gpt_oss             P -> P_blocks U8 [.., N, K/32, 16] + P_scales U8 [.., N, K/32]
//                       ("...q_proj.weight" -> "...q_proj.weight_blocks"/"_scales"); config
//                       quantization_config {quant_method: "mxfp4", modules_to_not_convert}
//   compressed_tensors  P.weight -> P.weight_packed U8 [N, K/2] + P.weight_scale U8 [N, K/32]
//                       (same bytes, 2-D); config {quant_method: "compressed-tensors",
//                       format: "mxfp4-pack-quantized", config_groups, ignore}
// Both record our selection under quantization_config.nibble.
//
// Guarantees: the output appears whole or not at all (written under a temp directory beside
// it, renamed at the end; removed on any error, SIGINT or SIGTERM); an existing output is
// refused unless `force`. The --report file is created (beside its target) before any work and
// flushed before the checkpoint is renamed in: an unwritable report is an error and leaves
// nothing; only its own last rename, after the checkpoint is in place, is a warning if it
// fails (QuantizeResult::warnings). Memory: one tensor at a time from the mmap (plus the writer's
// buffer), so peak RSS does not grow with the model.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "format/mxfp4.h"
#include "quant/model_info.h"
#include "quant/selection.h"

namespace nibble {

enum class OutputLayout : uint8_t { gpt_oss, compressed_tensors };
OutputLayout output_layout_from_name(std::string_view name);  // "gpt-oss" | "compressed-tensors"
const char* output_layout_name(OutputLayout layout);

struct QuantizeProgress {
  size_t tensors_done = 0, tensors_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;  // source bytes
  double seconds = 0;
  bool finished = false;
};

struct QuantizeOptions {
  std::string input;   // checkpoint directory
  std::string output;  // directory to create
  SelectionOptions selection;
  std::string lora_directory;     // recorded in config.json when selection.lora is set
  OutputLayout layout = OutputLayout::gpt_oss;
  ScaleRule scale_rule = ScaleRule::ocp;
  bool force = false;             // replace an existing output directory
  bool dry_run = false;           // plan only: nothing is written
  size_t max_shard_bytes = size_t(5) << 30;  // Hugging Face's default shard size
  std::string report_path;        // --report FILE.json ("" = none)
  std::function<void(const QuantizeProgress&)> progress;  // called after each tensor
};

// Quality of one quantized module: the dequantized weight against the source.
struct ModuleQuality {
  std::string name;
  ModuleKind kind = ModuleKind::other;
  std::vector<int64_t> shape;
  uint64_t elements = 0;
  double error_energy = 0, signal_energy = 0, max_abs = 0;
  double nmse() const;
  double sqnr_db() const;
};

struct QuantizeResult {
  ModelInfo model;
  LayerPlan plan;  // points into `model`: keep the result whole
  std::vector<ModuleQuality> quality;  // sorted by name
  uint64_t bytes_in = 0, bytes_out = 0;
  std::vector<std::string> copied_files;  // tokenizer, generation config, ...
  // Problems found once the output was complete (a report that could not be renamed in).
  std::vector<std::string> warnings;
  double seconds = 0;
};

// Runs the whole job (or only the plan when options.dry_run). Throws Error on any refusal;
// nothing is left behind then.
QuantizeResult quantize_checkpoint(const QuantizeOptions& options);

// The plan as text: one line per linear module (name, shape, MXFP4/kept, reason), then the
// warnings. What --dry-run prints.
std::string format_plan(const ModelInfo& model, const LayerPlan& plan);

// The quality report: per module NMSE/SQNR, a summary per module kind.
nlohmann::json quality_report_json(const QuantizeResult& result, const QuantizeOptions& options);
std::string format_quality_summary(const QuantizeResult& result);

// Installs SIGINT/SIGTERM handlers that make a running quantize_checkpoint() stop, clean up and
// throw. Returns whether an interruption was seen. Called by the CLI.
void install_quantize_signal_handlers();
bool quantize_interrupted();

}  // namespace nibble
