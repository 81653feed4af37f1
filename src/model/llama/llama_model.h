// The Llama-family decoder (llama_config.h lists the families): one implementation, the family
// differences are LlamaConfig switches. forward() runs a batch of consecutive tokens of one
// sequence through every layer as [tokens, hidden] matrices (a prompt in one pass, or one
// decode token), appending their keys and values to a KvCache.
//
// Linear layers are built at load from a TensorSource, each as an MXFP4 layer on a registry
// kernel or a dense one, by the plan of model/linear_plan.h (--mxfp4-layers); the plan and the
// kernel chosen for every layer are kept for the load summary.
//
// Where it runs is ModelLoadOptions::device: the CPU (forward_chunk below), or a CUDA device
// (CUDA builds): then the same layers are built for the device and LlamaCudaExecutor
// (llama_model_cuda.h) runs the forward; make_cache gives caches with device rows.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/dense_linear.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/linear_plan.h"
#include "model/llama/llama_config.h"
#include "model/tensor_source.h"

namespace nibble {

class LlamaCudaExecutor;
// Deletes the executor where its type is complete (llama_model.cpp); a CPU-only build never
// makes one.
struct LlamaCudaExecutorDeleter {
  void operator()(LlamaCudaExecutor* executor) const;
};

class LlamaModel {
 public:
  // Reads every tensor the config needs from `tensors` (Hugging Face names:
  // model.embed_tokens.weight, model.layers.N.self_attn.q_proj.weight, ...), checking shapes.
  // Tensors may be F32, BF16 or F16, or MXFP4 (<name>_blocks / <name>_scales, as written by
  // `nibble quantize`). The source may be closed once build() returns.
  static std::unique_ptr<LlamaModel> build(const LlamaConfig& config, const TensorSource& tensors,
                                           const ModelLoadOptions& options);

  const LlamaConfig& config() const { return config_; }
  // A cache on the model's device (host rows on the CPU, device rows on CUDA).
  KvCache make_cache(size_t capacity) const;
  // Where the forward runs (DeviceKind::cpu, or cuda).
  DeviceKind device() const;

  // Runs tokens[0..n) at positions cache.length() .. cache.length() + n - 1 and advances the
  // cache. logits: [n, vocab] when all_logits, else [1, vocab] for the last token only.
  void forward(std::span<const int32_t> tokens, KvCache& cache, float* logits,
               bool all_logits = false) const;
  // Runs tokens as forward() does and returns the greedy token after the last one: argmax() of
  // its logits (sampler.h), with the same error for non-finite logits. On CUDA the argmax runs
  // on the device (cuda_argmax.h): a decode step copies 8 bytes back instead of the logits.
  // On CUDA it also launches the next decode step (fed this token on the device) before it
  // returns, so that a caller feeding the token back finds it running (llama_model_cuda.h).
  int32_t forward_greedy(std::span<const int32_t> tokens, KvCache& cache) const;
  // Waits for, and drops, a step launched ahead for a call that may not come: before timing or
  // measuring anything else on the device. A no-op on the CPU.
  void drain() const;

  // What each linear layer became at load (format, kernel, reason).
  const std::vector<LinearPlanEntry>& plan() const { return plan_; }
  // Warnings of the layer selection (gates that fired, globs that matched nothing).
  const std::vector<std::string>& warnings() const { return warnings_; }
  // Bytes of every weight the model holds (embedding, norms, linears).
  size_t weight_bytes() const;

 private:
  struct Layer {
    std::vector<float> attn_norm, ffn_norm, q_norm, k_norm;
    LinearGroup qkv;      // q_proj, k_proj, v_proj (fused: self_attn.qkv_proj)
    LinearGroup gate_up;  // gate_proj, up_proj (fused: mlp.gate_up_proj)
    std::unique_ptr<Linear> o, down;
  };
  friend class LlamaCudaExecutor;  // the GPU half reads the weights and layers below
  LlamaModel() = default;
  // q, x: token t's heads at q + t * stride (rows of a LinearGroup's output, layout there).
  void attention(size_t layer, size_t count, size_t start, const float* q, size_t stride,
                 KvCache& cache, float* out) const;
  // forward(), and on CUDA the last chunk's greedy token into *greedy when it is not null.
  void run(std::span<const int32_t> tokens, KvCache& cache, float* logits, bool all_logits,
           int32_t* greedy) const;
  void forward_chunk(std::span<const int32_t> tokens, KvCache& cache, float* logits,
                     bool all_logits) const;
  void rope(float* x, size_t stride, size_t count, size_t start, size_t heads) const;

  // First, so that it outlives the layers built on its device (they use its stream).
  std::unique_ptr<LlamaCudaExecutor, LlamaCudaExecutorDeleter> cuda_;
  LlamaConfig config_;
  size_t max_m_ = 1;
  std::shared_ptr<DenseWeights> embedding_;
  std::vector<Layer> layers_;
  std::vector<float> final_norm_;
  std::unique_ptr<Linear> lm_head_;
  std::vector<float> inv_freq_;
  std::vector<LinearPlanEntry> plan_;
  std::vector<std::string> warnings_;
};

}  // namespace nibble
