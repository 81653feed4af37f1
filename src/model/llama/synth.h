// Synthetic Llama-family checkpoints with random weights (nibble synth): the shapes and tensor
// names of each family (qkv biases for qwen2, q/k norms for qwen3, tied or untied classifier),
// so that transformers' classes and Nibble can be compared on the same weights.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>

#include "format/mxfp4.h"
#include "model/llama/llama_config.h"
#include "model/tensor_source.h"

namespace nibble {

// Weights ~ N(0, 1/K) for linears (activations stay O(1) through the layers), embedding
// N(0, 1), norm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2). `dtype` F32 or BF16.
// One random stream in tensor order by default. `parallel_fill`: every 2^20 values of a tensor
// from their own stream (seeded by seed, tensor and block), filled on ThreadPool::global():
// the same distributions, other values, ~cores x faster (a Llama-3-8B shape is 8e9 values).
std::unique_ptr<MemoryTensors> synth_llama_tensors(const LlamaConfig& config, uint64_t seed, DType dtype,
                                                   bool parallel_fill = false);

// Writes config.json + model.safetensors of `tensors` into `directory` (created).
void write_hf_model(const std::filesystem::path& directory, const LlamaConfig& config,
                    const TensorSource& tensors, DType dtype);

// A copy of `tensors` in which every linear weight named by `mxfp4_layers` (the load-time
// selection, same gates) is replaced by its MXFP4 round trip (quantize, then dequantize to
// BF16, exact): what transformers must be fed to compare with Nibble running those layers in MXFP4.
std::unique_ptr<MemoryTensors> mxfp4_round_trip(const LlamaConfig& config, const TensorSource& tensors,
                                                const std::string& mxfp4_layers, ScaleRule rule);

}  // namespace nibble
