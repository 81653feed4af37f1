#include "quant/quantize.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "base/error.h"
#include "base/thread_pool.h"
#include "format/e8m0.h"
#include "format/float16.h"
#include "format/safetensors.h"
#include "format/temp_file.h"
#include "quant/block_quantizer.h"
#include "quant/lora.h"

namespace nibble {

namespace fs = std::filesystem;

OutputLayout output_layout_from_name(std::string_view name) {
  if (name == "gpt-oss") return OutputLayout::gpt_oss;
  if (name == "compressed-tensors") return OutputLayout::compressed_tensors;
  NIBBLE_THROW("--format: unknown layout '{}'; valid layouts: gpt-oss, compressed-tensors", name);
}

const char* output_layout_name(OutputLayout layout) {
  return layout == OutputLayout::gpt_oss ? "gpt-oss" : "compressed-tensors";
}

double ModuleQuality::nmse() const {
  if (std::isnan(error_energy)) return std::numeric_limits<double>::quiet_NaN();
  if (signal_energy > 0) return error_energy / signal_energy;
  return error_energy > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

double ModuleQuality::sqnr_db() const { return -10.0 * std::log10(nmse()); }

// ---- signals ---------------------------------------------------------------------------------

namespace {

volatile std::sig_atomic_t g_signal = 0;

extern "C" void on_quantize_signal(int signal) { g_signal = signal; }

void check_interrupted() {
  NIBBLE_CHECK(g_signal == 0, "interrupted by signal {} ({}): nothing was left behind", int(g_signal),
               g_signal == SIGINT ? "SIGINT" : "SIGTERM");
}

}  // namespace

void install_quantize_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = on_quantize_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool quantize_interrupted() { return g_signal != 0; }

// ---- the quantization core -------------------------------------------------------------------

namespace {

void load_row_f32(const void* source, DType dtype, size_t offset, size_t n, float* out) {
  if (dtype == DType::F32) {
    std::memcpy(out, static_cast<const float*>(source) + offset, n * sizeof(float));
  } else if (dtype == DType::BF16) {
    const uint16_t* s = static_cast<const uint16_t*>(source) + offset;
    for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(s[i]);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(source) + offset;
    for (size_t i = 0; i < n; ++i) out[i] = fp16_to_f32(s[i]);
  }
}

// Quantizes a row-major [rows, k] matrix (k % 32 == 0, guaranteed by the plan) into blocks and
// scales, and accumulates the error of the dequantized result against the source into `q`.
// One pass over the source: each block is quantized, decoded and compared while it is hot.
// Inf/NaN in a weight is an error naming the tensor, row and block (a checkpoint with
// non-finite weights is broken; a NaN block would hide that).
void quantize_rows(const void* source, DType dtype, size_t rows, size_t k, uint8_t* blocks,
                   uint8_t* scales, ScaleRule rule, const std::string& tensor, size_t row_offset,
                   ModuleQuality& q) {
  ThreadPool& pool = ThreadPool::global();
  const size_t row_blocks = k / kMxfp4BlockSize;
  struct Partial {
    double error = 0, signal = 0, max_abs = 0;
    char pad[40];  // one cache line each: threads write their own
  };
  std::vector<Partial> partial(pool.size());
  const size_t grain = std::max<size_t>(1, 65536 / std::max<size_t>(k, 1));
  pool.parallel_for(rows, grain, [&](size_t begin, size_t end, size_t thread) {
    std::vector<float> row(k);
    double error = 0, signal = 0, max_abs = 0;
    for (size_t r = begin; r < end; ++r) {
      if (g_signal) return;  // checked by the caller after the loop
      load_row_f32(source, dtype, r * k, k, row.data());
      for (size_t b = 0; b < row_blocks; ++b) {
        BlockError block_error;  // float sums over 32 values, double beyond
        const uint8_t scale = quantize_block_measured(row.data() + b * kMxfp4BlockSize, rule,
                                                      blocks + (r * row_blocks + b) * kMxfp4BlockBytes,
                                                      block_error);
        NIBBLE_CHECK(scale != kE8M0NaN, "tensor {}: row {}, block {} (columns {}..{}) holds Inf or NaN",
                     tensor, row_offset + r, b, b * kMxfp4BlockSize, (b + 1) * kMxfp4BlockSize - 1);
        scales[r * row_blocks + b] = scale;
        error += block_error.error;
        signal += block_error.signal;
        max_abs = std::max(max_abs, double(block_error.max_abs));
      }
    }
    partial[thread].error += error;
    partial[thread].signal += signal;
    partial[thread].max_abs = std::max(partial[thread].max_abs, max_abs);
  });
  check_interrupted();
  for (const auto& p : partial) {
    q.error_energy += p.error;
    q.signal_energy += p.signal;
    q.max_abs = std::max(q.max_abs, p.max_abs);
  }
  q.elements += uint64_t(rows) * k;
}

// One module to quantize: produces blocks and scales once, whichever the writer asks for first,
// and keeps the other until it is asked for (so memory stays one tensor whatever the order).
struct QuantJob {
  const LinearModule* module = nullptr;
  const TensorView* source = nullptr;
  ScaleRule rule = ScaleRule::ocp;
  ModuleQuality* quality = nullptr;
  bool done = false;
  std::vector<uint8_t> blocks_cache, scales_cache;

  size_t blocks_bytes() const { return size_t(module->experts * module->rows * (module->k / 32) * 16); }
  size_t scales_bytes() const { return size_t(module->experts * module->rows * (module->k / 32)); }

  void run(uint8_t* blocks, uint8_t* scales) {
    const LinearModule& m = *module;
    const size_t rows = size_t(m.rows), k = size_t(m.k);
    if (m.layout == SourceLayout::dense) {
      quantize_rows(source->data, source->dtype, size_t(m.experts) * rows, k, blocks, scales, rule,
                    source->name, 0, *quality);
      return;
    }
    // gpt-oss BF16 fused experts [E, K, N]: transpose each expert to [N, K] first (tiled, in
    // F32: the conversion is exact), so blocks run along K as the layout requires.
    const size_t element = dtype_size(source->dtype);
    std::vector<float> transposed(rows * k);
    std::vector<float> tile_row(64);
    for (size_t e = 0; e < size_t(m.experts); ++e) {
      const uint8_t* expert = source->data + e * k * rows * element;
      ThreadPool::global().parallel_for(k / 32, 1, [&](size_t begin, size_t end, size_t) {
        std::vector<float> line(rows);
        for (size_t kk = begin * 32; kk < end * 32; ++kk) {
          load_row_f32(expert, source->dtype, kk * rows, rows, line.data());
          for (size_t n = 0; n < rows; ++n) transposed[n * k + kk] = line[n];
        }
      });
      check_interrupted();
      quantize_rows(transposed.data(), DType::F32, rows, k, blocks + e * rows * (k / 32) * 16,
                    scales + e * rows * (k / 32), rule, source->name, e * rows, *quality);
    }
  }

  void fill_blocks(uint8_t* out, size_t nbytes) {
    NIBBLE_CHECK(nbytes == blocks_bytes(), "internal: blocks of {} are {} bytes, writer asked {}",
                 module->name, blocks_bytes(), nbytes);
    if (!done) {
      scales_cache.resize(scales_bytes());
      run(out, scales_cache.data());
      release_tensor_pages(*source);
      done = true;
    } else {
      std::memcpy(out, blocks_cache.data(), nbytes);
      std::vector<uint8_t>().swap(blocks_cache);
    }
  }
  void fill_scales(uint8_t* out, size_t nbytes) {
    NIBBLE_CHECK(nbytes == scales_bytes(), "internal: scales of {} are {} bytes, writer asked {}",
                 module->name, scales_bytes(), nbytes);
    if (!done) {
      blocks_cache.resize(blocks_bytes());
      run(blocks_cache.data(), out);
      release_tensor_pages(*source);
      done = true;
    } else {
      std::memcpy(out, scales_cache.data(), nbytes);
      std::vector<uint8_t>().swap(scales_cache);
    }
  }
};

// NIBBLE_TEST_PAUSE_FILE=PATH (for tests; README, "Debug switches"): after the first tensor is
// written, create PATH and wait while it exists (at most 120 s; SIGINT/SIGTERM end the wait),
// so that a test can act at a known point in the middle of a run.
void test_pause_point() {
  static const char* path = std::getenv("NIBBLE_TEST_PAUSE_FILE");
  if (!path || !*path) return;
  std::ofstream(path) << getpid() << "\n";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (!g_signal && fs::exists(path) && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

// Removes a directory tree on destruction unless released.
struct TempDirectory {
  fs::path path;
  bool keep = false;
  ~TempDirectory() {
    if (!path.empty() && !keep) {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  }
};

fs::path sibling_name(const fs::path& target, const char* tag) {
  std::random_device rd;
  return target.parent_path() /
         fmt::format(".{}.{}-{}-{:08x}", target.filename().string(), tag, getpid(), rd());
}

void write_text_file(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  NIBBLE_CHECK(out.good(), "{}: cannot create: {}", path.string(), std::strerror(errno));
  out << text;
  out.flush();
  NIBBLE_CHECK(out.good(), "{}: write failed: {}", path.string(), std::strerror(errno));
}

// Files next to the weights that a consumer needs (tokenizer, generation config, chat
// template, ...): every top-level regular file except weights, their index and config.json.
bool is_companion_file(const fs::path& path) {
  const std::string name = path.filename().string();
  if (name.empty() || name[0] == '.' || name == "config.json") return false;
  for (const char* ext : {".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt",
                          ".pth", ".gguf", ".msgpack", ".h5", ".ckpt", ".onnx", ".npz"})
    if (name.size() >= std::strlen(ext) && name.ends_with(ext)) return false;
  return true;
}

nlohmann::json selection_record(const QuantizeOptions& options, const LayerPlan& plan) {
  nlohmann::json gates = nlohmann::json::array();
  for (const auto& g : plan.gates) gates.push_back({{"gate", g.gate}, {"module", g.module}, {"detail", g.detail}});
  nlohmann::json quantized = nlohmann::json::array();
  for (const auto& d : plan.modules)
    if (d.mxfp4) quantized.push_back(d.module->name);
  nlohmann::json record = {
      {"tool", "nibble quantize"},
      {"mxfp4_layers", options.selection.tokens.to_string()},
      {"include", options.selection.include},
      {"exclude", options.selection.exclude},
      {"scale_rule", scale_rule_name(options.scale_rule)},
      {"format", output_layout_name(options.layout)},
      {"accept_tied_mxfp4", options.selection.accept_tied_mxfp4},
      {"gates", gates},
      {"quantized_modules", quantized},
  };
  if (options.selection.lora) {
    record["lora"] = options.lora_directory;
    record["lora_gate"] = lora_gate_name(options.selection.lora_gate);
  }
  return record;
}

nlohmann::json quantization_config(const QuantizeOptions& options, const LayerPlan& plan) {
  nlohmann::json ignore = plan.modules_to_not_convert();
  if (options.layout == OutputLayout::gpt_oss) {
    return {{"quant_method", "mxfp4"},
            {"modules_to_not_convert", ignore},
            {"nibble", selection_record(options, plan)}};
  }
  nlohmann::json targets = nlohmann::json::array();
  for (const auto& d : plan.modules)
    if (d.mxfp4) targets.push_back(d.module->name);
  const nlohmann::json weights = {
      {"num_bits", 4}, {"type", "float"}, {"symmetric", true}, {"strategy", "group"},
      {"group_size", 32}, {"dynamic", false}, {"scale_dtype", "torch.uint8"},
      {"actorder", nullptr}, {"block_structure", nullptr}, {"observer", nullptr},
      {"observer_kwargs", nlohmann::json::object()}, {"zp_dtype", nullptr}};
  return {{"quant_method", "compressed-tensors"},
          {"format", "mxfp4-pack-quantized"},
          {"quantization_status", "compressed"},
          {"config_groups",
           {{"group_0",
             {{"format", "mxfp4-pack-quantized"},
              {"targets", targets},
              {"weights", weights},
              {"input_activations", nullptr},
              {"output_activations", nullptr}}}}},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"nibble", selection_record(options, plan)}};
}

// Refuses inputs that are quantized some other way (we would silently re-wrap them).
void check_input_quantization(const nlohmann::json& config, const fs::path& config_path) {
  const auto it = config.find("quantization_config");
  if (it == config.end() || it->is_null()) return;
  NIBBLE_CHECK(it->is_object(), "{}: quantization_config must be an object, found {}",
               config_path.string(), it->dump());
  const std::string method = it->value("quant_method", std::string("(none)"));
  NIBBLE_CHECK(method == "mxfp4",
               "{}: the input is already quantized (quant_method '{}'); nibble quantize reads "
               "F32/BF16/F16 checkpoints and gpt-oss MXFP4 ones",
               config_path.string(), method);
}

}  // namespace

// ---- the job ---------------------------------------------------------------------------------

QuantizeResult quantize_checkpoint(const QuantizeOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const fs::path input(options.input);
  NIBBLE_CHECK(fs::is_directory(input), "input {}: not a directory (a Hugging Face checkpoint "
               "directory with config.json and *.safetensors)", options.input);
  const nlohmann::json config = read_config_json(options.input);
  check_input_quantization(config, input / "config.json");

  fs::path output;
  if (!options.dry_run) {
    NIBBLE_CHECK(!options.output.empty(), "no output directory given (-o DIR)");
    output = fs::absolute(fs::path(options.output)).lexically_normal();
    if (output.filename().empty()) output = output.parent_path();
    const fs::path in_abs = fs::weakly_canonical(fs::absolute(input));
    const fs::path out_abs = fs::weakly_canonical(output);
    NIBBLE_CHECK(out_abs != in_abs, "output {} is the input directory: choose another", options.output);
    const auto rel = out_abs.lexically_relative(in_abs);
    NIBBLE_CHECK(rel.empty() || *rel.begin() == "..",
                 "output {} lies inside the input directory {}: choose another", options.output,
                 options.input);
    NIBBLE_CHECK(!fs::exists(output) || options.force,
                 "output {} already exists; pass --force to replace it", options.output);
    NIBBLE_CHECK(fs::is_directory(output.parent_path()),
                 "output {}: parent {} is not an existing directory", options.output,
                 output.parent_path().string());
    if (!options.report_path.empty()) {
      const fs::path rp = fs::absolute(options.report_path).parent_path();
      NIBBLE_CHECK(fs::is_directory(rp), "--report {}: directory {} does not exist",
                   options.report_path, rp.string());
      NIBBLE_CHECK(!fs::is_directory(options.report_path), "--report {}: is a directory; give a file name",
                   options.report_path);
    }
  }

  Checkpoint checkpoint(input);
  QuantizeResult result;
  result.model = model_info_from_checkpoint(checkpoint, config);
  for (const auto& m : result.model.modules)
    NIBBLE_CHECK(m.layout != SourceLayout::mxfp4_compressed_tensors,
                 "input tensor {} is compressed-tensors MXFP4: nibble quantize reads F32/BF16/F16 "
                 "checkpoints and gpt-oss MXFP4 ones", m.tensors[0]);
  result.plan = plan_layers(result.model, options.selection);
  if (options.layout == OutputLayout::compressed_tensors) {
    std::vector<std::string> fused;
    for (const auto& d : result.plan.modules)
      if (d.mxfp4 && (d.module->shape.size() != 2 || !d.module->tensors[0].ends_with(".weight")))
        fused.push_back(d.module->name);
    NIBBLE_CHECK(fused.empty(),
                 "--format compressed-tensors stores 2-D Linear weights only; these modules are "
                 "fused 3-D experts or already in the gpt-oss layout: {} (use --format gpt-oss, "
                 "or --exclude them)",
                 fmt::join(fused, ", "));
  }
  for (const TensorView* t : checkpoint.tensors()) result.bytes_in += t->nbytes;
  if (options.dry_run) return result;

  // The report's temp file first, beside its target: an unwritable report directory fails
  // here, before any work, and the file is removed on every error below.
  std::optional<TempFile> report_file;
  if (!options.report_path.empty()) report_file.emplace(fs::absolute(options.report_path));

  // Temp directory beside the target: same filesystem, so the final rename is atomic.
  TempDirectory temp;
  temp.path = sibling_name(output, "nibble-tmp");
  {
    std::error_code ec;
    fs::create_directory(temp.path, ec);
    NIBBLE_CHECK(!ec, "output {}: cannot create {}: {} (is the directory writable?)", options.output,
                 temp.path.string(), ec.message());
  }

  // Which source tensor belongs to which decision.
  std::map<std::string_view, const ModuleDecision*> owner;
  for (const auto& d : result.plan.modules)
    for (const auto& t : d.module->tensors) owner[t] = &d;

  std::vector<std::unique_ptr<QuantJob>> jobs;
  std::vector<TensorSpec> specs;
  result.quality.reserve(result.plan.count_mxfp4());
  std::mutex progress_mutex;
  QuantizeProgress progress;
  progress.tensors_total = checkpoint.tensors().size();
  progress.bytes_total = result.bytes_in;
  const auto report = [&, start](const TensorView* source) {
    std::lock_guard lock(progress_mutex);
    progress.tensors_done += 1;
    progress.bytes_done += source->nbytes;
    progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options.progress) options.progress(progress);
    if (progress.tensors_done == 1) test_pause_point();
  };

  for (const TensorView* t : checkpoint.tensors()) {
    const auto it = owner.find(t->name);
    const ModuleDecision* d = it == owner.end() ? nullptr : it->second;
    if (!d || !d->mxfp4 || d->passthrough) {
      specs.push_back({t->name, t->dtype, t->shape, [t, report](uint8_t* out, size_t nbytes) {
                         check_interrupted();
                         NIBBLE_CHECK(nbytes == t->nbytes, "internal: {} is {} bytes, writer asked {}",
                                      t->name, t->nbytes, nbytes);
                         std::memcpy(out, t->data, nbytes);
                         release_tensor_pages(*t);
                         report(t);
                       }});
      continue;
    }
    const LinearModule& m = *d->module;
    ModuleQuality& q = result.quality.emplace_back();
    q.name = m.name;
    q.kind = m.kind;
    q.shape = m.shape;
    auto job = std::make_unique<QuantJob>();
    job->module = &m;
    job->source = t;
    job->rule = options.scale_rule;
    job->quality = &q;
    QuantJob* j = job.get();
    jobs.push_back(std::move(job));
    std::vector<int64_t> blocks_shape(m.shape.begin(), m.shape.end() - 1);
    std::vector<int64_t> scales_shape = blocks_shape;
    std::string blocks_name, scales_name;
    if (options.layout == OutputLayout::gpt_oss) {
      blocks_shape.push_back(m.k / 32);
      blocks_shape.push_back(16);
      scales_shape.push_back(m.k / 32);
      blocks_name = t->name + "_blocks";
      scales_name = t->name + "_scales";
    } else {
      blocks_shape.push_back(m.k / 2);
      scales_shape.push_back(m.k / 32);
      blocks_name = m.name + ".weight_packed";
      scales_name = m.name + ".weight_scale";
    }
    // The blocks' fill counts the source tensor as done; each half may come first.
    auto first = std::make_shared<bool>(true);
    specs.push_back({blocks_name, DType::U8, blocks_shape, [j, t, report, first](uint8_t* out, size_t n) {
                       check_interrupted();
                       j->fill_blocks(out, n);
                       if (std::exchange(*first, false)) report(t);
                     }});
    specs.push_back({scales_name, DType::U8, scales_shape, [j, t, report, first](uint8_t* out, size_t n) {
                       check_interrupted();
                       j->fill_scales(out, n);
                       if (std::exchange(*first, false)) report(t);
                     }});
  }
  for (const auto& s : specs) result.bytes_out += s.nbytes();

  write_checkpoint(temp.path, specs, {{"format", "pt"}}, options.max_shard_bytes);
  check_interrupted();

  nlohmann::json out_config = config;
  out_config["quantization_config"] = quantization_config(options, result.plan);
  write_text_file(temp.path / "config.json", out_config.dump(2) + "\n");
  for (const auto& entry : fs::directory_iterator(input)) {
    if (!entry.is_regular_file() || !is_companion_file(entry.path())) continue;
    std::error_code ec;
    fs::copy_file(entry.path(), temp.path / entry.path().filename(), ec);
    NIBBLE_CHECK(!ec, "copying {} into the output: {}", entry.path().string(), ec.message());
    result.copied_files.push_back(entry.path().filename().string());
  }
  std::sort(result.copied_files.begin(), result.copied_files.end());
  std::sort(result.quality.begin(), result.quality.end(),
            [](const ModuleQuality& a, const ModuleQuality& b) { return a.name < b.name; });
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // The order that leaves no half state: the report is written and flushed (a failure is an
  // error, and nothing is left), then the checkpoint is renamed into place, then the report.
  // The last rename can only fail if something changed the report's directory during the
  // run; the checkpoint is complete by then, so that is a warning, and the temp file goes.
  if (report_file) {
    const std::string text = quality_report_json(result, options).dump(2) + "\n";
    report_file->write(text.data(), text.size());
    report_file->finish();
  }
  check_interrupted();
  std::error_code ec;
  fs::path old;
  if (fs::exists(output)) {  // --force: move the old one aside, then remove it
    old = sibling_name(output, "nibble-old");
    fs::rename(output, old, ec);
    NIBBLE_CHECK(!ec, "output {}: cannot replace it: {}", options.output, ec.message());
  }
  fs::rename(temp.path, output, ec);
  if (ec) {
    std::error_code ignore;
    if (!old.empty()) fs::rename(old, output, ignore);
    NIBBLE_THROW("output {}: cannot rename {} into place: {}", options.output, temp.path.string(),
                 ec.message());
  }
  temp.keep = true;
  if (!old.empty()) fs::remove_all(old, ec);
  if (report_file) {
    try {
      report_file->commit();
    } catch (const Error& e) {
      result.warnings.push_back(fmt::format("--report {}: not written ({}); the checkpoint in {} is complete",
                                            options.report_path, e.message(), options.output));
    }
  }
  return result;
}

// ---- text and JSON -----------------------------------------------------------------------------

std::string format_plan(const ModelInfo& model, const LayerPlan& plan) {
  size_t width = 6;
  for (const auto& d : plan.modules) width = std::max(width, d.module->name.size());
  std::string out = fmt::format("{:<{}}  {:<20} {:<5}  {:<6}  {}\n", "module", width, "shape", "dtype",
                                "result", "reason");
  for (const auto& d : plan.modules) {
    const LinearModule& m = *d.module;
    out += fmt::format("{:<{}}  {:<20} {:<5}  {:<6}  {}\n", m.name, width,
                       fmt::format("[{}]", fmt::join(m.shape, ", ")),
                       m.already_mxfp4() ? "MXFP4" : std::string(dtype_name(m.dtype)),
                       d.mxfp4 ? "MXFP4" : "kept", d.reason);
  }
  out += fmt::format("{} linear modules: {} MXFP4, {} kept\n", plan.modules.size(), plan.count_mxfp4(),
                     plan.modules.size() - plan.count_mxfp4());
  const std::string tied = model.tied_reason();
  if (!tied.empty()) out += fmt::format("tied embeddings: {}\n", tied);
  for (const auto& w : plan.warnings) out += fmt::format("warning: {}\n", w);
  return out;
}

namespace {

struct KindSummary {
  size_t modules = 0;
  uint64_t elements = 0;
  double error = 0, signal = 0, max_abs = 0, worst_sqnr = std::numeric_limits<double>::infinity();
  std::string worst;
};

std::map<std::string, KindSummary> summarize(const std::vector<ModuleQuality>& quality) {
  std::map<std::string, KindSummary> kinds;
  for (const auto& q : quality) {
    KindSummary& s = kinds[module_kind_name(q.kind)];
    s.modules += 1;
    s.elements += q.elements;
    s.error += q.error_energy;
    s.signal += q.signal_energy;
    s.max_abs = std::max(s.max_abs, q.max_abs);
    if (!(q.sqnr_db() >= s.worst_sqnr)) {
      s.worst_sqnr = q.sqnr_db();
      s.worst = q.name;
    }
  }
  return kinds;
}

// JSON has no Inf/NaN: those become null.
nlohmann::json number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); }

}  // namespace

nlohmann::json quality_report_json(const QuantizeResult& result, const QuantizeOptions& options) {
  nlohmann::json modules = nlohmann::json::array();
  for (const auto& q : result.quality)
    modules.push_back({{"module", q.name}, {"kind", module_kind_name(q.kind)}, {"shape", q.shape},
                       {"elements", q.elements}, {"nmse", number(q.nmse())},
                       {"sqnr_db", number(q.sqnr_db())}, {"max_abs_error", number(q.max_abs)}});
  nlohmann::json summary = nlohmann::json::object();
  for (const auto& [kind, s] : summarize(result.quality)) {
    ModuleQuality total;
    total.error_energy = s.error;
    total.signal_energy = s.signal;
    summary[kind] = {{"modules", s.modules}, {"elements", s.elements}, {"nmse", number(total.nmse())},
                     {"sqnr_db", number(total.sqnr_db())}, {"max_abs_error", number(s.max_abs)},
                     {"worst_module", s.worst}, {"worst_sqnr_db", number(s.worst_sqnr)}};
  }
  return {{"input", options.input},
          {"output", options.output},
          {"scale_rule", scale_rule_name(options.scale_rule)},
          {"format", output_layout_name(options.layout)},
          {"bytes_in", result.bytes_in},
          {"bytes_out", result.bytes_out},
          {"seconds", result.seconds},
          {"modules", modules},
          {"summary_by_kind", summary},
          {"selection", selection_record(options, result.plan)}};
}

std::string format_quality_summary(const QuantizeResult& result) {
  std::string out = fmt::format("{:<8} {:>7} {:>14} {:>12} {:>9}  {}\n", "kind", "modules", "elements",
                                "NMSE", "SQNR dB", "worst module (SQNR dB)");
  for (const auto& [kind, s] : summarize(result.quality)) {
    ModuleQuality total;
    total.error_energy = s.error;
    total.signal_energy = s.signal;
    out += fmt::format("{:<8} {:>7} {:>14} {:>12.4e} {:>9.2f}  {} ({:.2f})\n", kind, s.modules, s.elements,
                       total.nmse(), total.sqnr_db(), s.worst, s.worst_sqnr);
  }
  return out;
}

}  // namespace nibble
