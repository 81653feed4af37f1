// nibble quantize: a Hugging Face checkpoint in, the same checkpoint with the chosen linear
// layers in MXFP4 out. The work is src/quant/quantize.h; this file parses flags and prints.
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>

#include "base/error.h"
#include "base/thread_pool.h"
#include "command.h"
#include "quant/lora.h"
#include "quant/quantize.h"

namespace nibble {
namespace {

struct Args {
  std::string input, output, layers = "moe", lora, lora_gate, format = "gpt-oss", scale_rule = "ocp";
  std::string report, shard_size = "5GB";
  std::vector<std::string> include, exclude;
  bool dry_run = false, force = false, accept_tied = false, quiet = false;
  size_t threads = 0;
};

// "5GB", "500MB", "1GiB", "123" (bytes). Decimal units as Hugging Face's max_shard_size.
size_t parse_size(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    NIBBLE_THROW("--shard-size '{}': expected a size such as 5GB, 500MB or 2GiB", text);
  }
  const std::string unit = text.substr(pos);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KB") scale = 1e3;
  else if (unit == "MB") scale = 1e6;
  else if (unit == "GB") scale = 1e9;
  else if (unit == "KiB") scale = 1024.0;
  else if (unit == "MiB") scale = 1024.0 * 1024;
  else if (unit == "GiB") scale = 1024.0 * 1024 * 1024;
  NIBBLE_CHECK(scale > 0 && value > 0, "--shard-size '{}': expected a positive size such as 5GB, "
               "500MB or 2GiB (units: B, KB, MB, GB, KiB, MiB, GiB)", text);
  return size_t(value * scale);
}

std::string human_bytes(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000 && u < 4) bytes /= 1000, ++u;
  return fmt::format("{:.1f} {}", bytes, units[u]);
}

// A progress bar on a terminal (tensors, bytes, rate, ETA), plain lines at most every 2 s
// otherwise (logs, CI).
class ProgressPrinter {
 public:
  explicit ProgressPrinter(bool quiet) : quiet_(quiet), tty_(isatty(STDERR_FILENO)) {}
  void operator()(const QuantizeProgress& p) {
    if (quiet_) return;
    const bool last = p.tensors_done == p.tensors_total;
    const double interval = tty_ ? 0.1 : 2.0;
    if (!last && p.seconds - last_print_ < interval) return;
    last_print_ = p.seconds;
    const double rate = p.seconds > 0 ? double(p.bytes_done) / p.seconds : 0;
    const double eta = rate > 0 ? double(p.bytes_total - p.bytes_done) / rate : 0;
    const double frac = p.bytes_total ? double(p.bytes_done) / double(p.bytes_total) : 1.0;
    if (tty_) {
      const int width = 30, filled = int(frac * width);
      std::fprintf(stderr, "\r[%s%s] %zu/%zu tensors  %s/%s  %s/s  ETA %.0fs ",
                   std::string(size_t(filled), '=').c_str(), std::string(size_t(width - filled), ' ').c_str(),
                   p.tensors_done, p.tensors_total, human_bytes(double(p.bytes_done)).c_str(),
                   human_bytes(double(p.bytes_total)).c_str(), human_bytes(rate).c_str(), eta);
      if (last) std::fprintf(stderr, "\n");
    } else {
      std::fprintf(stderr, "quantize: %zu/%zu tensors, %s of %s (%.0f%%), %s/s, ETA %.0fs\n", p.tensors_done,
                   p.tensors_total, human_bytes(double(p.bytes_done)).c_str(),
                   human_bytes(double(p.bytes_total)).c_str(), 100 * frac, human_bytes(rate).c_str(), eta);
    }
    std::fflush(stderr);
  }

 private:
  bool quiet_, tty_;
  double last_print_ = -1e9;
};

void run(const Args& a, CLI::App& command) {
  // Conflicting or incomplete flags, each named.
  NIBBLE_CHECK(a.dry_run || !a.output.empty(), "missing -o/--output DIR (or --dry-run to print the plan)");
  NIBBLE_CHECK(!(a.dry_run && !a.report.empty()),
               "--report and --dry-run conflict: the quality report needs a real run");
  NIBBLE_CHECK(!(a.dry_run && a.force), "--force and --dry-run conflict: a dry run writes nothing");
  NIBBLE_CHECK(a.lora_gate.empty() || !a.lora.empty(), "--lora-gate {} needs --lora DIR", a.lora_gate);
  (void)command;

  if (a.threads) ThreadPool::set_default_threads(a.threads);
  QuantizeOptions o;
  o.input = a.input;
  o.output = a.output;
  o.selection.tokens = parse_layer_tokens(a.layers);
  o.selection.include = a.include;
  o.selection.exclude = a.exclude;
  o.selection.accept_tied_mxfp4 = a.accept_tied;
  o.layout = output_layout_from_name(a.format);
  o.scale_rule = scale_rule_from_name(a.scale_rule);
  o.force = a.force;
  o.dry_run = a.dry_run;
  o.report_path = a.report;
  o.max_shard_bytes = parse_size(a.shard_size);
  std::optional<LoraAdapter> lora;
  if (!a.lora.empty()) {
    lora = load_lora_adapter(a.lora);
    o.selection.lora = &*lora;
    o.lora_directory = a.lora;
    o.selection.lora_gate = a.lora_gate.empty() ? LoraGate::narrow : lora_gate_from_name(a.lora_gate);
  }
  ProgressPrinter printer(a.quiet);
  o.progress = [&printer](const QuantizeProgress& p) { printer(p); };
  install_quantize_signal_handlers();

  const QuantizeResult result = quantize_checkpoint(o);
  if (a.dry_run) {
    fmt::print("{}", format_plan(result.model, result.plan));
    return;
  }
  for (const auto& w : result.plan.warnings) std::fprintf(stderr, "nibble: warning: %s\n", w.c_str());
  for (const auto& w : result.warnings) std::fprintf(stderr, "nibble: warning: %s\n", w.c_str());
  if (a.quiet) return;
  fmt::print("wrote {} ({} layout): {} of {} linear modules in MXFP4, {} -> {} ({:.1f}% of the input) in {:.1f} s, "
             "{}/s\n",
             a.output, a.format, result.plan.count_mxfp4(), result.plan.modules.size(),
             human_bytes(double(result.bytes_in)), human_bytes(double(result.bytes_out)),
             result.bytes_in ? 100.0 * double(result.bytes_out) / double(result.bytes_in) : 0.0, result.seconds,
             human_bytes(result.seconds > 0 ? double(result.bytes_in) / result.seconds : 0));
  if (!result.copied_files.empty()) fmt::print("copied: {}\n", fmt::join(result.copied_files, ", "));
  if (!result.quality.empty()) fmt::print("quality (dequantized vs source, scale rule {}):\n{}", a.scale_rule,
                                          format_quality_summary(result));
  if (!a.report.empty() && result.warnings.empty()) fmt::print("report: {}\n", a.report);
}

void setup(CLI::App& command) {
  auto args = std::make_shared<Args>();
  command.add_option("input", args->input, "Checkpoint directory (config.json + *.safetensors)")->required();
  command.add_option("-o,--output", args->output, "Output directory (created; must not exist unless --force)");
  command.add_option("--mxfp4-layers", args->layers,
                     "Comma-separated tokens: moe, qkv, o, mlp, lm_head, embed (opt-in), all (all but embed)")
      ->capture_default_str();
  command.add_option("--include", args->include,
                     "fnmatch glob on module names to quantize as well (repeatable), e.g. 'model.layers.*.mlp.*'");
  command.add_option("--exclude", args->exclude,
                     "fnmatch glob on module names to keep unquantized (repeatable; wins over everything)");
  command.add_option("--lora", args->lora, "PEFT adapter directory: the modules it targets stay BF16");
  command.add_option("--lora-gate", args->lora_gate,
                     "narrow: keep the adapter's targets BF16 (default); broad: keep every dense layer BF16");
  command.add_flag("--accept-tied-mxfp4", args->accept_tied,
                   "With tied embeddings, accept one shared MXFP4 table for embed_tokens and lm_head");
  command.add_option("--format", args->format, "Output layout: gpt-oss (P_blocks/P_scales) or compressed-tensors")
      ->capture_default_str();
  command.add_option("--scale-rule", args->scale_rule, "MXFP4 shared-scale rule: ocp or ceil (see docs/formats.md)")
      ->capture_default_str();
  command.add_flag("--dry-run", args->dry_run, "Print the plan (every linear module, MXFP4 or kept, why); write nothing");
  command.add_flag("--force", args->force, "Replace an existing output directory");
  command.add_option("--report", args->report, "Write the quality report (per-module NMSE, SQNR dB) to FILE.json");
  command.add_option("--shard-size", args->shard_size, "Largest output shard (e.g. 5GB, 500MB)")->capture_default_str();
  command.add_option("--threads", args->threads, "Worker threads (default: NIBBLE_THREADS or all cores)");
  command.add_flag("-q,--quiet", args->quiet, "No progress or summary (warnings and errors still print)");
  command.callback([args, &command] { run(*args, command); });
}

const bool registered = register_command(
    {"quantize", "Quantize chosen linear layers of a Hugging Face checkpoint to MXFP4", 10, &setup});

}  // namespace
}  // namespace nibble
