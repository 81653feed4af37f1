// Where a model's tensors come from: a safetensors checkpoint (mapped), or tensors built in
// memory (a llama2.c checkpoint converted to Hugging Face names, a synthetic model). The model
// builders only see this interface, so every loader shares one build path.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "format/safetensors.h"

namespace nibble {

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual const TensorView* find(std::string_view name) const = 0;
  // Every tensor, sorted by name.
  virtual std::vector<const TensorView*> tensors() const = 0;
  // "models/x/model.safetensors", "stories260K.bin (llama2.c)": named in errors.
  virtual std::string where() const = 0;

  // Throws an Error naming the tensor and where() when it is missing.
  const TensorView& at(std::string_view name) const;
  // at(), and checks the shape (an Error names tensor, expected and actual shapes).
  const TensorView& at(std::string_view name, const std::vector<int64_t>& shape) const;
};

// Tensors owned in memory.
class MemoryTensors final : public TensorSource {
 public:
  explicit MemoryTensors(std::string where) : where_(std::move(where)) {}
  // Adds a tensor, copying `nbytes` from `data` (or zero-filled when data is null).
  TensorView& add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                  const void* data = nullptr);
  TensorView* find_mutable(std::string_view name);
  const TensorView* find(std::string_view name) const override;
  std::vector<const TensorView*> tensors() const override;
  std::string where() const override { return where_; }

 private:
  std::string where_;
  std::map<std::string, std::pair<TensorView, std::vector<uint8_t>>, std::less<>> tensors_;
};

// A safetensors checkpoint (single file, directory, or sharded with an index).
class CheckpointTensors final : public TensorSource {
 public:
  explicit CheckpointTensors(const std::filesystem::path& path) : checkpoint_(path) {}
  const TensorView* find(std::string_view name) const override { return checkpoint_.find(name); }
  std::vector<const TensorView*> tensors() const override { return checkpoint_.tensors(); }
  std::string where() const override { return checkpoint_.directory().string(); }

 private:
  Checkpoint checkpoint_;
};

// The elements of an F32, BF16 or F16 tensor as F32 (other dtypes: an Error naming it).
std::vector<float> tensor_to_f32(const TensorView& tensor, const std::string& where);

}  // namespace nibble
