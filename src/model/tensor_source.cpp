#include "model/tensor_source.h"

#include <fmt/ranges.h>

#include <cstring>

#include "base/error.h"
#include "format/float16.h"

namespace nibble {
namespace {

std::string shape_string(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

}  // namespace

const TensorView& TensorSource::at(std::string_view name) const {
  const TensorView* t = find(name);
  NIBBLE_CHECK(t != nullptr, "{}: tensor \"{}\" is missing", where(), name);
  return *t;
}

const TensorView& TensorSource::at(std::string_view name, const std::vector<int64_t>& shape) const {
  const TensorView& t = at(name);
  NIBBLE_CHECK(t.shape == shape, "{}: tensor \"{}\" has shape {}, expected {}", where(), name,
               shape_string(t.shape), shape_string(shape));
  return t;
}

TensorView& MemoryTensors::add(const std::string& name, DType dtype, std::vector<int64_t> shape,
                               const void* data) {
  auto& [view, bytes] = tensors_[name];
  view.name = name;
  view.dtype = dtype;
  view.shape = std::move(shape);
  size_t count = 1;
  for (int64_t d : view.shape) count *= size_t(d);
  bytes.assign(count * dtype_size(dtype), 0);
  if (data && !bytes.empty()) std::memcpy(bytes.data(), data, bytes.size());
  view.data = bytes.data();
  view.nbytes = bytes.size();
  return view;
}

TensorView* MemoryTensors::find_mutable(std::string_view name) {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second.first;
}

const TensorView* MemoryTensors::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second.first;
}

std::vector<const TensorView*> MemoryTensors::tensors() const {
  std::vector<const TensorView*> out;
  for (const auto& [name, entry] : tensors_) out.push_back(&entry.first);
  return out;
}

std::vector<float> tensor_to_f32(const TensorView& t, const std::string& where) {
  size_t count = 1;
  for (int64_t d : t.shape) count *= size_t(d);
  std::vector<float> out(count);
  switch (t.dtype) {
    case DType::F32:
      std::memcpy(out.data(), t.data, count * sizeof(float));
      break;
    case DType::BF16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, t.data + 2 * i, 2);
        out[i] = bf16_to_f32(bits);
      }
      break;
    case DType::F16:
      for (size_t i = 0; i < count; ++i) {
        uint16_t bits;
        std::memcpy(&bits, t.data + 2 * i, 2);
        out[i] = fp16_to_f32(bits);
      }
      break;
    default:
      NIBBLE_THROW("{}: tensor \"{}\" has dtype {}; expected F32, BF16 or F16", where, t.name,
                   dtype_name(t.dtype));
  }
  return out;
}

}  // namespace nibble
