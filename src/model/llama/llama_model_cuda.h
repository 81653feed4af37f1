// The GPU half of LlamaModel (CUDA builds only): the same LlamaConfig, the same load plan and
// the same Linear layers (MXFP4 ones on the registry's CUDA kernel, full-precision ones on
// cuBLAS, both built by make_linear for the CUDA device), run by a forward that launches the
// op kernels of src/kernels/cuda/ on one stream. LlamaModel::build creates it when
// ModelLoadOptions::device is a CUDA device and forwards every call to it.
//
// One chunk of n <= kCudaMaxBatchTokens tokens at positions p.. (p read from device memory),
// per layer (F32 unless marked "act": the activation format the linear layers are fed, F32 or
// BF16 by ModelLoadOptions::activation):
//
//   x  = embed(tokens)                                 gather, F32 residual stream [n, hidden]
//   a  = rmsnorm(x += delta)            act            (delta: the previous layer's MLP output)
//   q|k|v = Wqkv a                                     one fused product, or three (LinearGroup)
//   q = rope(qnorm(q));  K[p..] = rope(knorm(k));  V[p..] = v
//   a  = attention(q, K, V, window of this layer)  act   with the line above one launch
//                                                       (cuda_attention.h), split over
//                                                       positions (flash-decoding)
//   delta = Wo a
//   a  = rmsnorm(x += delta)            act
//   gate|up = Wgate_up a;  a = silu(gate) * up   act   one launch where the fused product
//                                                       applies SwiGLU (LinearGroup::epilogue)
//   delta = Wdown a
// then logits = lm_head(rmsnorm(x += delta)) for the rows asked, copied to the host, or for a
// greedy step only their argmax (cuda_argmax.h).
//
// Where the product before a norm (o, down) and every product after it take a FoldedNorm
// (kernels/linear_kernel.h; ModelLoadOptions::fuse_linears), that rmsnorm is no launch of its
// own: the product before it does the residual add and writes w * x with its rows' sums of
// squares, the products after it scale their rows by the norm's factor. The first layer's
// input norm (after the gather) is always a kernel.
//
// CUDA graphs (ModelLoadOptions::cuda_graphs): that sequence is captured once per shape (n,
// logit rows, KV cache) and replayed; every launch's arguments are fixed pointers, and the
// position and token ids are uploaded into one device buffer before each replay. A shape runs
// eagerly the first time (its one-time setup: cuBLAS and kernel attributes, outside any
// capture) and is captured the second. At decode that saves the host ~10 launches a layer
// and the GPU the gaps between them.
//
// Greedy decode runs one step ahead: after a greedy step's graph, a small kernel writes the
// next position and the argmax into the step buffer, and forward_chunk launches the next
// decode step's graph before it waits for this step's token (copied into pinned memory), so
// the GPU never idles while the host reads a token and launches the next step. When the caller
// then asks for that step (the token just returned, the same cache at the next position) it is
// already running; any other call first waits for it and drops it (its KV row lies beyond the
// cache's length, and the step that is asked for writes that row again).
//
// Prompts run in chunks of kCudaMaxBatchTokens = 8 tokens: sm80_mxfp4_gemv serves M = 1..8
// (decode); a tensor-core GEMM for prefill is a later issue. Every buffer (activations, the
// logits of one chunk, the full-precision layers' scratch) is allocated here once, at load;
// KV caches once per cache. NOTES: one executor runs one forward at a time (its buffers and
// graphs are shared between calls); a batched engine will hold one set per batch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "kernels/cuda/sm80_mxfp4_gemv.h"
#include "model/cuda/cuda_context.h"
#include "model/cuda/cuda_dense_linear.h"
#include "model/cuda/cuda_kv_cache.h"
#include "model/kv_cache.h"
#include "model/linear_plan.h"
#include "model/llama/llama_config.h"

namespace nibble {

class LlamaModel;

inline constexpr size_t kCudaMaxBatchTokens = kGemvMaxM;

class LlamaCudaExecutor {
 public:
  // Opens options.device (made current) and checks that the config is one the kernels run
  // (head_dim <= kAttentionMaxHeadDim). options.max_batch_tokens <= kCudaMaxBatchTokens.
  LlamaCudaExecutor(const LlamaConfig& config, const ModelLoadOptions& options);
  LlamaCudaExecutor(const LlamaCudaExecutor&) = delete;
  LlamaCudaExecutor& operator=(const LlamaCudaExecutor&) = delete;
  ~LlamaCudaExecutor();

  // Uploads the embedding table; a tied lm_head built by dense_maker() shares this copy.
  void upload_embedding(const std::shared_ptr<const DenseWeights>& host);
  // make_linear's maker of full-precision layers: CudaDenseLinear on this device.
  DenseLinearMaker dense_maker();
  // Once the model's layers are built: uploads the norms and RoPE frequencies, allocates the
  // activation buffers.
  void bind(const LlamaModel& model);

  KvCache make_cache(size_t capacity) const;
  // One chunk (tokens.size() <= kCudaMaxBatchTokens) at positions cache.length() ..; advances
  // the cache. logits: null, or [n, vocab] (all_logits) / [1, vocab] host memory, written
  // before return. greedy: null, or where the last token's greedy next token goes (argmax on
  // the device; logits then null). Inputs were validated by LlamaModel::forward.
  void forward_chunk(std::span<const int32_t> tokens, KvCache& cache, float* logits,
                     bool all_logits, int32_t* greedy = nullptr) const;
  // How many forward shapes are held as CUDA graphs (for tests and logs).
  size_t captured_graphs() const { return graphs_.size(); }
  // Waits for the stream; reports any asynchronous error of the forward.
  void synchronize() const;
  // The end of a model call: synchronize(), unless a decode step runs ahead of the next call
  // (forward_chunk has then waited for what it returns, and waiting for the stream would take
  // the step ahead's lead away).
  void finish() const;
  // Waits for the step launched ahead, if any, and forgets it.
  void drop_ahead() const;
  const DeviceInfo& device() const { return context_->device(); }

 private:
  struct DeviceLayer {
    DeviceBuffer attn_norm, ffn_norm, q_norm, k_norm;
    // The norms folded into the products around them: the post-attention one (o -> gate|up),
    // the next layer's input norm or the final one (down -> q|k|v or lm_head).
    bool fold_ffn_norm = false, fold_next_norm = false;
  };
  // What a captured forward depends on beyond its fixed buffers.
  struct GraphKey {
    size_t tokens = 0, logit_rows = 0;  // logit_rows 0: no logits
    bool greedy = false;                // the last row's argmax too
    const float* k_rows = nullptr;      // the cache's first layer; with capacity, all its rows
    const float* v_rows = nullptr;
    size_t capacity = 0;
    bool operator==(const GraphKey&) const = default;
  };
  struct Graph;  // an instantiated cudaGraphExec_t (owned)

  // Enqueues the forward of `key` on the stream (no host synchronization, capturable).
  void enqueue(const GraphKey& key, KvCache& cache) const;
  // Uploads the position and token ids, then runs `key`'s forward: its held graph, eagerly the
  // first time, captured the second.
  void launch(const GraphKey& key, std::span<const int32_t> tokens, KvCache& cache) const;
  // The key of a forward of `tokens` rows on cache `kv` (forward_chunk's, and the decode step
  // launch_ahead looks for).
  static GraphKey graph_key(size_t tokens, size_t logit_rows, bool greedy,
                            const CudaKvStorage& kv, size_t capacity);
  // The held graph of `key`, or null.
  const Graph* held_graph(const GraphKey& key) const;
  // A greedy step's argmax key into pinned slot `slot`, and that slot's event after it.
  void copy_key(int slot) const;
  // Launches the greedy decode step at `position` of `kv` (the step before it, whose key went
  // to `slot`, fed its token on the device) where its graph is held and the cache has the
  // row; sets ahead_.
  void launch_ahead(const CudaKvStorage& kv, size_t position, size_t capacity, int slot) const;

  LlamaConfig config_;
  size_t max_m_;
  ActivationFormat activation_;
  bool fold_norms_;
  std::unique_ptr<CudaContext> context_;
  const LlamaModel* model_ = nullptr;
  std::shared_ptr<const DenseWeights> embedding_host_;  // to recognise a tied lm_head
  std::shared_ptr<const CudaDenseWeights> embedding_;
  std::vector<DeviceLayer> layers_;
  DeviceBuffer final_norm_, inv_freq_;
  // The step's position then its token ids (int32, uploaded before each forward), and the
  // activations of one chunk (max_m_ rows each): the residual stream x, the sublayer output
  // delta, the q|k|v and gate|up products, the norms' output and the other linear layers'
  // input (act format), the folded norms' partial sums, the logits.
  DeviceBuffer step_, x_, delta_, qkv_, gate_up_, normed_, input_, norm_partials_, logits_;
  // Flash-decoding's partial results and merge counters (cuda_attention.h), for any layer.
  DeviceBuffer attention_scratch_, attention_counters_;
  DeviceBuffer greedy_key_;  // the greedy token's argmax key (cuda_argmax.h)
  // The decode step launched ahead (see above): the cache it runs on, its position, the token
  // it reads (set once the step before it is read) and the pinned slot of its key.
  struct Ahead {
    uint64_t cache_id = 0;
    size_t position = 0;
    int32_t token = -1;
    int slot = 0;
  };
  mutable std::optional<Ahead> ahead_;
  // Where greedy steps' keys are copied: two pinned slots (a step's and the one ahead), each
  // with an event after its copy. Made in bind(), on the executor's device.
  struct KeySlots {
    PinnedBuffer keys{2 * sizeof(unsigned long long), "the greedy tokens' keys"};
    CudaEvent copied[2];
  };
  std::unique_ptr<KeySlots> key_slots_;  // a step asked for uses slot 0, one ahead the other
  bool use_graphs_;
  mutable std::vector<GraphKey> seen_;              // shapes run once, eagerly
  mutable std::vector<std::unique_ptr<Graph>> graphs_;  // oldest first
};

}  // namespace nibble
