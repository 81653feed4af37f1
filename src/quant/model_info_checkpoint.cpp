// The parts of model_info.h that read a mapped checkpoint (kept apart from the pure logic).
#include <cstring>

#include "format/safetensors.h"
#include "quant/model_info.h"

namespace nibble {

ModelInfo model_info_from_checkpoint(const Checkpoint& checkpoint, const nlohmann::json& config) {
  std::vector<TensorInfo> infos;
  infos.reserve(checkpoint.tensors().size());
  for (const TensorView* t : checkpoint.tensors()) infos.push_back({t->name, t->dtype, t->shape});
  ModelInfo info = model_info_from_tensors(infos, config);
  // Storage aliasing: compare the data, not the names. Two names can share one storage (a
  // writer that deduplicates) or hold equal copies (a tied model saved without dedup).
  const LinearModule* head = nullptr;
  const LinearModule* embed = nullptr;
  for (const auto& m : info.modules) {
    if (m.kind == ModuleKind::lm_head && !head) head = &m;
    if (m.kind == ModuleKind::embed && !embed) embed = &m;
  }
  if (head && embed && head->tensors.size() == embed->tensors.size()) {
    bool same_pointer = true, same_bytes = true;
    for (size_t i = 0; i < head->tensors.size(); ++i) {
      const TensorView& a = checkpoint.at(head->tensors[i]);
      const TensorView& b = checkpoint.at(embed->tensors[i]);
      same_pointer = same_pointer && a.data == b.data && a.nbytes == b.nbytes;
      same_bytes = same_bytes && a.dtype == b.dtype && a.shape == b.shape && a.nbytes == b.nbytes &&
                   (a.data == b.data || std::memcmp(a.data, b.data, a.nbytes) == 0);
    }
    // The comparison faulted both tables in: give those pages back (an embedding table can be
    // a few GB, and quantize streams everything else with bounded memory).
    for (size_t i = 0; i < head->tensors.size(); ++i) {
      release_tensor_pages(checkpoint.at(head->tensors[i]));
      release_tensor_pages(checkpoint.at(embed->tensors[i]));
    }
    if (same_pointer) {
      info.lm_head_aliases_embed = true;
      info.alias_detail = "one storage";
    } else if (same_bytes) {
      info.lm_head_aliases_embed = true;
      info.alias_detail = "byte-identical copies";
    }
  }
  return info;
}

}  // namespace nibble
