#include "quant/inspect.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "base/error.h"
#include "format/mxfp4.h"
#include "format/safetensors.h"

namespace nibble {

namespace {

std::string module_format(const LinearModule& m) {
  switch (m.layout) {
    case SourceLayout::mxfp4_gpt_oss: return "MXFP4 (gpt-oss)";
    case SourceLayout::mxfp4_compressed_tensors: return "MXFP4 (compressed-tensors)";
    case SourceLayout::dense_kn: return std::string(dtype_name(m.dtype)) + " [E,K,N]";
    case SourceLayout::dense: break;
  }
  if (m.dtype == DType::F8_E4M3) return "FP8 E4M3";
  if (m.dtype == DType::F8_E5M2) return "FP8 E5M2";
  return std::string(dtype_name(m.dtype));
}

std::string human(double bytes) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (std::abs(bytes) >= 1000 && u < 4) bytes /= 1000, ++u;
  return fmt::format("{:.2f} {}", bytes, units[u]);
}

}  // namespace

InspectReport inspect_checkpoint(const std::string& directory) {
  const nlohmann::json config = read_config_json(directory);
  Checkpoint checkpoint(directory);
  const ModelInfo info = model_info_from_checkpoint(checkpoint, config);
  InspectReport r;
  r.directory = directory;
  r.architectures = info.architectures;
  r.tensors = checkpoint.tensors().size();
  for (const TensorView* t : checkpoint.tensors()) r.total_bytes += t->nbytes;
  for (const auto& m : info.modules) {
    InspectModule im;
    im.name = m.name;
    im.kind = m.kind;
    im.format = module_format(m);
    im.shape = m.shape;
    for (const auto& t : m.tensors) im.bytes += checkpoint.at(t).nbytes;
    // FP8 checkpoints carry their scales beside the weight.
    if (m.dtype == DType::F8_E4M3 || m.dtype == DType::F8_E5M2)
      for (const char* suffix : {".weight_scale", ".weight_scale_inv"})
        if (const TensorView* s = checkpoint.find(m.name + suffix)) im.bytes += s->nbytes;
    uint64_t elements = 1;
    for (int64_t d : m.shape) elements *= uint64_t(d);
    im.bf16_bytes = elements * 2;
    r.linear_bytes += im.bytes;
    r.bf16_equivalent += im.bf16_bytes;
    r.modules.push_back(std::move(im));
  }
  r.tied_reason = info.tied_reason();
  if (const auto qc = config.find("quantization_config"); qc != config.end() && qc->is_object()) {
    r.quant_method = qc->value("quant_method", std::string());
    if (const auto n = qc->find("nibble"); n != qc->end()) {
      r.selection = *n;
      if (const auto g = n->find("gates"); g != n->end() && g->is_array())
        for (const auto& gate : *g)
          r.gates.push_back(fmt::format("{}: {} ({})", gate.value("gate", "?"), gate.value("module", "?"),
                                        gate.value("detail", "")));
    }
  }
  return r;
}

std::string format_inspect(const InspectReport& r) {
  size_t width = 6;
  for (const auto& m : r.modules) width = std::max(width, m.name.size());
  std::string out = fmt::format("{}: {}{} tensors, {}\n", r.directory,
                                r.architectures.empty() ? "" : fmt::format("{}, ", fmt::join(r.architectures, ", ")),
                                r.tensors, human(double(r.total_bytes)));
  out += fmt::format("{:<{}}  {:<8} {:<26} {:<22} {:>12}\n", "module", width, "kind", "format", "shape", "bytes");
  std::map<std::string, std::pair<size_t, uint64_t>> by_format;
  for (const auto& m : r.modules) {
    out += fmt::format("{:<{}}  {:<8} {:<26} {:<22} {:>12}\n", m.name, width, module_kind_name(m.kind), m.format,
                       fmt::format("[{}]", fmt::join(m.shape, ", ")), m.bytes);
    auto& f = by_format[m.format];
    f.first += 1;
    f.second += m.bytes;
  }
  out += "\ntotals:\n";
  for (const auto& [format, f] : by_format)
    out += fmt::format("  {:<26} {:>5} modules  {}\n", format, f.first, human(double(f.second)));
  out += fmt::format("  linear modules: {} stored, {} as BF16: {} saved ({:.1f}%)\n", human(double(r.linear_bytes)),
                     human(double(r.bf16_equivalent)), human(double(r.saved_bytes())),
                     r.bf16_equivalent ? 100.0 * double(r.saved_bytes()) / double(r.bf16_equivalent) : 0.0);
  out += fmt::format("  other tensors: {}\n", human(double(r.total_bytes - r.linear_bytes)));
  out += fmt::format("quantization: {}\n", r.quant_method.empty() ? "none recorded in config.json" : r.quant_method);
  if (!r.selection.is_null()) {
    out += fmt::format("selection (nibble quantize): --mxfp4-layers {}", r.selection.value("mxfp4_layers", "?"));
    for (const char* key : {"include", "exclude"})
      if (const auto it = r.selection.find(key); it != r.selection.end() && it->is_array())
        for (const auto& g : *it) out += fmt::format(" --{} '{}'", key, g.get<std::string>());
    out += fmt::format(" --scale-rule {} --format {}", r.selection.value("scale_rule", "?"),
                       r.selection.value("format", "?"));
    if (r.selection.contains("lora"))
      out += fmt::format(" --lora {} --lora-gate {}", r.selection.value("lora", "?"), r.selection.value("lora_gate", "?"));
    out += "\n";
  }
  out += fmt::format("tied embeddings: {}\n", r.tied_reason.empty() ? "no" : r.tied_reason);
  if (r.gates.empty()) {
    out += fmt::format("gates applied: {}\n", r.selection.is_null() ? "none recorded" : "none");
  } else {
    out += "gates applied:\n";
    for (const auto& g : r.gates) out += "  " + g + "\n";
  }
  return out;
}

nlohmann::json inspect_json(const InspectReport& r) {
  nlohmann::json modules = nlohmann::json::array();
  for (const auto& m : r.modules)
    modules.push_back({{"module", m.name}, {"kind", module_kind_name(m.kind)}, {"format", m.format},
                       {"shape", m.shape}, {"bytes", m.bytes}, {"bf16_bytes", m.bf16_bytes}});
  return {{"directory", r.directory},       {"architectures", r.architectures},
          {"tensors", r.tensors},           {"total_bytes", r.total_bytes},
          {"linear_bytes", r.linear_bytes}, {"bf16_equivalent_bytes", r.bf16_equivalent},
          {"saved_bytes", r.saved_bytes()}, {"quant_method", r.quant_method},
          {"selection", r.selection},       {"tied_embeddings", r.tied_reason},
          {"gates", r.gates},               {"modules", modules}};
}

size_t write_dequantized(const std::string& directory, const std::string& output_file) {
  const nlohmann::json config = read_config_json(directory);
  Checkpoint checkpoint(directory);
  const ModelInfo info = model_info_from_checkpoint(checkpoint, config);
  std::vector<TensorSpec> specs;
  for (const auto& m : info.modules) {
    if (!m.already_mxfp4()) continue;
    const TensorView* blocks = &checkpoint.at(m.tensors[0]);
    const TensorView* scales = &checkpoint.at(m.tensors[1]);
    const size_t rows = size_t(m.experts * m.rows), k = size_t(m.k);
    specs.push_back({m.name, DType::F32, m.shape, [blocks, scales, rows, k](uint8_t* out, size_t) {
                       mxfp4_dequantize(blocks->data, scales->data, rows, k, out, DType::F32);
                     }});
  }
  NIBBLE_CHECK(!specs.empty(), "{}: no MXFP4 module to dequantize", directory);
  write_safetensors(output_file, specs, {{"format", "pt"}});
  return specs.size();
}

}  // namespace nibble
