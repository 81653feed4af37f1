#include "model/llama/llama_model_cuda.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "base/error.h"
#include "kernels/cuda/cuda_argmax.h"
#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_elementwise.h"
#include "kernels/cuda/cuda_norm.h"
#include "model/cuda/cuda_kv_cache.h"
#include "model/llama/llama_model.h"
#include "model/sampler.h"

namespace nibble {
namespace {

DeviceBuffer upload_floats(const std::vector<float>& v, const std::string& what) {
  return DeviceBuffer::upload(v.data(), v.size() * sizeof(float), what);
}

// Attention blocks per (head, token): enough that a long context is read by many SMs, about
// 32 positions each when the cache is full, at most 16 (a decode step then runs heads x 16
// blocks; the merge reads 16 partial results).
constexpr size_t kAttentionSplitsMax = 16;
size_t attention_splits(size_t capacity) {
  return std::clamp<size_t>((capacity + 31) / 32, 1, kAttentionSplitsMax);
}

}  // namespace

LlamaCudaExecutor::LlamaCudaExecutor(const LlamaConfig& config, const ModelLoadOptions& options)
    : config_(config),
      max_m_(std::max<size_t>(1, options.max_batch_tokens)),
      activation_(options.activation),
      fold_norms_(options.fuse_linears),
      use_graphs_(options.cuda_graphs) {
  NIBBLE_CHECK(max_m_ <= kCudaMaxBatchTokens,
               "the CUDA executor runs at most {} tokens per forward chunk, {} asked",
               kCudaMaxBatchTokens, max_m_);
  NIBBLE_CHECK(config.head_dim <= kAttentionMaxHeadDim,
               "head_dim {} is above the {} the CUDA attention kernel supports", config.head_dim,
               kAttentionMaxHeadDim);
  context_ = std::make_unique<CudaContext>(options.device);
}

struct LlamaCudaExecutor::Graph {
  GraphKey key;
  cudaGraphExec_t exec = nullptr;
  Graph(const GraphKey& k, cudaGraphExec_t e) : key(k), exec(e) {}
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  ~Graph() { cudaGraphExecDestroy(exec); }
};

LlamaCudaExecutor::~LlamaCudaExecutor() {
  if (ahead_) cudaStreamSynchronize(context_->stream());  // no throw here; its errors are moot
}

void LlamaCudaExecutor::upload_embedding(const std::shared_ptr<const DenseWeights>& host) {
  embedding_host_ = host;
  embedding_ = CudaDenseWeights::upload(*host, "the embedding table");
}

DenseLinearMaker LlamaCudaExecutor::dense_maker() {
  return [this](const std::string& name, std::shared_ptr<const DenseWeights> weights,
                std::vector<float> bias) -> std::unique_ptr<Linear> {
    // A tied classifier reads the embedding table: the same device copy, not a second one.
    std::shared_ptr<const CudaDenseWeights> device =
        weights == embedding_host_ && embedding_ ? embedding_
                                                 : CudaDenseWeights::upload(*weights, "weights of " + name);
    return std::make_unique<CudaDenseLinear>(name, std::move(device), std::move(bias), *context_,
                                             max_m_, activation_);
  };
}

void LlamaCudaExecutor::bind(const LlamaModel& model) {
  const LlamaConfig& c = config_;
  model_ = &model;
  NIBBLE_CHECK(embedding_, "the CUDA executor was bound before the embedding was uploaded");
  layers_.resize(c.layers);
  for (size_t l = 0; l < c.layers; ++l) {
    const auto& L = model.layers_[l];
    DeviceLayer& D = layers_[l];
    const std::string p = fmt::format("layer {} ", l);
    D.attn_norm = upload_floats(L.attn_norm, p + "input norm");
    D.ffn_norm = upload_floats(L.ffn_norm, p + "post-attention norm");
    if (c.qk_norm) {
      D.q_norm = upload_floats(L.q_norm, p + "q norm");
      D.k_norm = upload_floats(L.k_norm, p + "k norm");
    }
    std::vector<const Linear*> linears = L.qkv.linears();
    for (const Linear* lin : L.gate_up.linears()) linears.push_back(lin);
    linears.push_back(L.o.get());
    linears.push_back(L.down.get());
    for (const Linear* lin : linears)
      NIBBLE_CHECK(lin->device() == DeviceKind::cuda, "layer {}: {} was built for {}, not CUDA",
                   l, lin->name(), device_kind_name(lin->device()));
  }
  NIBBLE_CHECK(model.lm_head_->device() == DeviceKind::cuda, "lm_head was not built for CUDA");
  for (size_t l = 0; fold_norms_ && l < c.layers; ++l) {
    const auto& L = model.layers_[l];
    layers_[l].fold_ffn_norm = L.o->folds_norm() && L.gate_up.folds_norm();
    layers_[l].fold_next_norm = L.down->folds_norm() && (l + 1 < c.layers
                                                             ? model.layers_[l + 1].qkv.folds_norm()
                                                             : model.lm_head_->folds_norm());
  }
  final_norm_ = upload_floats(model.final_norm_, "the final norm");
  inv_freq_ = upload_floats(model.inv_freq_, "the RoPE frequencies");

  const size_t m = max_m_, act = activation_format_bytes(activation_);
  step_ = DeviceBuffer((1 + m) * sizeof(int32_t), "the position and token ids");
  x_ = DeviceBuffer(m * c.hidden * 4, "the residual stream");
  delta_ = DeviceBuffer(m * c.hidden * 4, "sublayer outputs");
  qkv_ = DeviceBuffer(m * c.qkv_width() * 4, "q|k|v products");
  gate_up_ = DeviceBuffer(m * 2 * c.ffn * 4, "MLP gate|up products");
  attention_scratch_ = DeviceBuffer(
      attention_scratch_floats(m, c.heads, kAttentionSplitsMax, c.head_dim) * sizeof(float),
      "attention partial results");
  attention_counters_ = DeviceBuffer(m * c.heads * sizeof(unsigned), "attention merge counters");
  NIBBLE_CUDA_CHECK(cudaMemset(attention_counters_.get(), 0, attention_counters_.bytes()),
                    "zeroing the attention merge counters");
  normed_ = DeviceBuffer(m * c.hidden * act, "the norms' output");
  input_ = DeviceBuffer(m * std::max(c.q_width(), c.ffn) * act, "linear inputs");
  norm_partials_ = DeviceBuffer(m * folded_norm_slots(c.hidden) * sizeof(float),
                                "the folded norms' partial sums");
  logits_ = DeviceBuffer(m * c.vocab * 4, "logits");
  greedy_key_ = DeviceBuffer(sizeof(unsigned long long), "the greedy token's key");
  key_slots_ = std::make_unique<KeySlots>();
}

KvCache LlamaCudaExecutor::make_cache(size_t capacity) const {
  const LlamaConfig& c = config_;
  NIBBLE_CHECK(capacity > 0, "KV cache needs a capacity > 0");
  return KvCache(c.layers, capacity, c.kv_width(),
                 std::make_unique<CudaKvStorage>(c.layers, capacity, c.kv_width()));
}

void LlamaCudaExecutor::synchronize() const {
  NIBBLE_CUDA_CHECK(cudaStreamSynchronize(context_->stream()), "the forward on {}",
                    context_->device().name);
}

void LlamaCudaExecutor::finish() const {
  if (!ahead_) synchronize();
}

void LlamaCudaExecutor::forward_chunk(std::span<const int32_t> tokens, KvCache& cache,
                                      float* logits, bool all_logits, int32_t* greedy) const {
  const LlamaConfig& c = config_;
  const size_t n = tokens.size(), start = cache.length();
  NIBBLE_CHECK(model_ && n >= 1 && n <= max_m_, "CUDA forward chunk of {} tokens (1..{})", n,
               max_m_);
  NIBBLE_CHECK(start + n < (size_t(1) << 31), "position {} is beyond int32", start + n);
  NIBBLE_CHECK(!(logits && greedy), "a CUDA forward chunk returns logits or a greedy token, not both");
  auto* kv = dynamic_cast<CudaKvStorage*>(cache.storage());
  NIBBLE_CHECK(kv != nullptr, "the KV cache was not made by this model's CUDA executor");
  const cudaStream_t s = context_->stream();
  const size_t logit_rows = logits || greedy ? (all_logits ? n : 1) : 0;
  const GraphKey key = graph_key(n, logit_rows, greedy != nullptr, *kv, cache.capacity());

  // The step launched ahead is this one when this asks for the greedy step it guessed.
  int slot = 0;
  if (ahead_ && greedy && n == 1 && tokens[0] == ahead_->token && kv->id() == ahead_->cache_id &&
      start == ahead_->position) {
    slot = ahead_->slot;
    ahead_.reset();
  } else {
    drop_ahead();
    launch(key, tokens, cache);
    if (greedy) copy_key(slot);
  }
  cache.set_length(start + n);
  if (logits) {
    NIBBLE_CUDA_CHECK(cudaMemcpyAsync(logits, logits_.get(), key.logit_rows * c.vocab * sizeof(float),
                                      cudaMemcpyDeviceToHost, s),
                      "logits to the host");
    synchronize();
    return;
  }
  if (!greedy) return;
  // The next decode step goes in before this one's token is read: the GPU has it queued.
  launch_ahead(*kv, start + n, cache.capacity(), slot);
  float value = 0.0f;
  uint32_t index = 0;
  try {
    NIBBLE_CUDA_CHECK(cudaEventSynchronize(key_slots_->copied[slot].get()), "the forward on {}",
                      context_->device().name);
    decode_argmax_key(key_slots_->keys.as<unsigned long long>()[slot], &value, &index);
    check_best_logit(value);
  } catch (...) {
    drop_ahead();
    throw;
  }
  *greedy = int32_t(index);
  if (ahead_) ahead_->token = *greedy;
}

LlamaCudaExecutor::GraphKey LlamaCudaExecutor::graph_key(size_t tokens, size_t logit_rows,
                                                          bool greedy, const CudaKvStorage& kv,
                                                          size_t capacity) {
  return GraphKey{tokens, logit_rows, greedy, kv.k(0), kv.v(0), capacity};
}

const LlamaCudaExecutor::Graph* LlamaCudaExecutor::held_graph(const GraphKey& key) const {
  const auto held = std::find_if(graphs_.begin(), graphs_.end(),
                                 [&](const auto& g) { return g->key == key; });
  return held == graphs_.end() ? nullptr : held->get();
}

void LlamaCudaExecutor::launch(const GraphKey& key, std::span<const int32_t> tokens,
                               KvCache& cache) const {
  const cudaStream_t s = context_->stream();
  const size_t n = tokens.size();
  // Pageable memory: cudaMemcpyAsync stages it before returning, so `step` may go.
  std::array<int32_t, 1 + kCudaMaxBatchTokens> step{};
  step[0] = int32_t(cache.length());
  std::copy(tokens.begin(), tokens.end(), step.begin() + 1);
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(step_.get(), step.data(), (1 + n) * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, s),
                    "the position and token ids");

  if (const Graph* held = held_graph(key)) {
    NIBBLE_CUDA_CHECK(cudaGraphLaunch(held->exec, s), "the captured forward");
  } else if (!use_graphs_ || std::find(seen_.begin(), seen_.end(), key) == seen_.end()) {
    if (use_graphs_) {
      constexpr size_t kMaxSeen = 64;  // a long-lived model sees many caches: forget the oldest
      if (seen_.size() == kMaxSeen) seen_.erase(seen_.begin());
      seen_.push_back(key);
    }
    enqueue(key, cache);
  } else {
    // Second run of this shape: capture it (thread-local mode: other threads' CUDA calls are
    // not this capture's business), then replay it from now on.
    NIBBLE_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal),
                      "capturing the forward");
    cudaGraph_t graph = nullptr;
    try {
      enqueue(key, cache);
    } catch (...) {
      cudaStreamEndCapture(s, &graph);
      if (graph) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    NIBBLE_CUDA_CHECK(cudaStreamEndCapture(s, &graph), "capturing the forward");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t made = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    NIBBLE_CUDA_CHECK(made, "instantiating the captured forward");
    // A few shapes (decode, a prompt chunk, their logits variants) per cache; a new cache
    // retires the oldest graphs.
    constexpr size_t kMaxGraphs = 16;
    if (graphs_.size() == kMaxGraphs) graphs_.erase(graphs_.begin());
    graphs_.push_back(std::make_unique<Graph>(key, exec));
    NIBBLE_CUDA_CHECK(cudaGraphLaunch(exec, s), "the captured forward");
  }
}

void LlamaCudaExecutor::copy_key(int slot) const {
  const cudaStream_t s = context_->stream();
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(key_slots_->keys.as<unsigned long long>() + slot,
                                    greedy_key_.get(), sizeof(unsigned long long),
                                    cudaMemcpyDeviceToHost, s),
                    "the greedy token to the host");
  NIBBLE_CUDA_CHECK(cudaEventRecord(key_slots_->copied[slot].get(), s), "marking the copy");
}

void LlamaCudaExecutor::launch_ahead(const CudaKvStorage& kv, size_t position, size_t capacity,
                                     int slot) const {
  if (position >= capacity) return;  // the step would write row `position`
  const Graph* next = held_graph(graph_key(1, 1, true, kv, capacity));
  if (!next) return;  // decode runs eagerly until its graph is captured
  NIBBLE_CUDA_CHECK(cudaGraphLaunch(next->exec, context_->stream()), "the next decode step");
  copy_key(1 - slot);
  ahead_ = Ahead{kv.id(), position, -1, 1 - slot};
}

void LlamaCudaExecutor::drop_ahead() const {
  if (!ahead_) return;
  ahead_.reset();
  synchronize();
}

void LlamaCudaExecutor::enqueue(const GraphKey& key, KvCache& cache) const {
  const LlamaConfig& c = config_;
  const size_t n = key.tokens, H = c.hidden;
  auto* kv = static_cast<CudaKvStorage*>(cache.storage());
  const cudaStream_t s = context_->stream();
  const ActivationFormat act = activation_;
  const OutputFormat act_out = as_output_format(act);
  float* x = x_.as<float>();
  float* delta = delta_.as<float>();
  float* qkv = qkv_.as<float>();
  float* gate_up = gate_up_.as<float>();
  void* input = input_.get();
  const ActivationView in{input, n, act};
  // The norms' output from row `first` on, as the products after a norm read it: plain, or
  // with its fold.
  const auto normed_rows = [&](size_t first) {
    return static_cast<char*>(normed_.get()) + first * H * activation_format_bytes(act);
  };
  const auto normed_view = [&](bool folded, size_t first, size_t rows) {
    ActivationView v{normed_rows(first), rows, act};
    if (folded)
      v.norm = FoldedNorm{norm_partials_.as<float>() + first * folded_norm_slots(H), H, c.norm_eps};
    return v;
  };
  // A product before a norm: into delta, or with the norm folded (x += it; w * x to normed).
  const auto residual_out = [&](bool folded, const DeviceBuffer& weight) {
    if (!folded) return OutputView{delta, OutputFormat::f32};
    const FoldedNorm fold{norm_partials_.as<float>(), H, c.norm_eps, x, weight.as<const float>()};
    return OutputView{normed_.get(), act_out, fold};
  };
  const int32_t* position = step_.as<const int32_t>();
  // Zeroed here, long before the argmax: a memset just before it would break the chain.
  if (key.greedy)
    NIBBLE_CUDA_CHECK(cudaMemsetAsync(greedy_key_.get(), 0, greedy_key_.bytes(), s),
                      "resetting the greedy token's key");

  EmbeddingGatherLaunch gather;
  gather.table = embedding_->data.get();
  gather.table_bf16 = embedding_->dtype == DType::BF16;
  gather.ids = position + 1;
  gather.out = x;
  gather.count = n, gather.cols = H;
  NIBBLE_CUDA_CHECK(cuda_embedding_gather(gather, s));

  // Rows first .. first + count of x (+= delta when `add`) -> rmsnorm -> normed.
  auto norm = [&](size_t first, bool add, const DeviceBuffer& weight, size_t count,
                  const char* what, size_t l) {
    RmsNormLaunch r;
    r.x = x + first * H, r.delta = add ? delta + first * H : nullptr;
    r.weight = weight.as<const float>(), r.out = normed_rows(first);
    r.out_format = act_out, r.rows = count, r.n = H, r.eps = c.norm_eps;
    NIBBLE_CUDA_CHECK(cuda_rms_norm(r, s), "{} of layer {}", what, l);
  };
  const float scale = 1.0f / std::sqrt(float(c.head_dim));

  for (size_t l = 0; l < c.layers; ++l) {
    const auto& L = model_->layers_[l];
    const DeviceLayer& D = layers_[l];

    const bool input_folded = l > 0 && layers_[l - 1].fold_next_norm;
    if (!input_folded) norm(0, l > 0, D.attn_norm, n, "input norm", l);
    L.qkv.forward_on_device(normed_view(input_folded, 0, n), OutputView{qkv, OutputFormat::f32}, s);
    AttentionLaunch att;
    att.q = qkv + L.qkv.offset(0, n), att.q_stride = L.qkv.stride(0);
    att.k = qkv + L.qkv.offset(1, n), att.k_stride = L.qkv.stride(1);
    att.v = qkv + L.qkv.offset(2, n), att.v_stride = L.qkv.stride(2);
    if (c.qk_norm) att.q_norm = D.q_norm.as<const float>(), att.k_norm = D.k_norm.as<const float>();
    att.eps = c.norm_eps;
    att.inv_freq = inv_freq_.as<const float>(), att.interleaved = c.rope_interleaved;
    att.k_cache = kv->k(l), att.v_cache = kv->v(l), att.out = input;
    att.out_format = act_out, att.position = position;
    att.tokens = n, att.heads = c.heads, att.kv_heads = c.kv_heads;
    att.head_dim = c.head_dim, att.window = c.window(l), att.scale = scale;
    att.splits = attention_splits(key.capacity);
    att.scratch = attention_scratch_.as<float>(), att.counters = attention_counters_.as<unsigned>();
    NIBBLE_CUDA_CHECK(cuda_attention(att, s), "attention of layer {}", l);
    L.o->forward_on_device(in, residual_out(D.fold_ffn_norm, D.ffn_norm), s);

    if (!D.fold_ffn_norm) norm(0, true, D.ffn_norm, n, "post-attention norm", l);
    const ActivationView ffn_in = normed_view(D.fold_ffn_norm, 0, n);
    const DeviceBuffer& next_norm = l + 1 < c.layers ? layers_[l + 1].attn_norm : final_norm_;
    const OutputView down_out = residual_out(D.fold_next_norm, next_norm);
    if (L.gate_up.epilogue() == LinearEpilogue::swiglu) {
      // silu(gate) * up straight from the product, into the gate|up buffer, in the
      // activation format: down's input.
      L.gate_up.forward_on_device(ffn_in, OutputView{gate_up, act_out}, s);
      L.down->forward_on_device(ActivationView{gate_up, n, act}, down_out, s);
    } else {
      L.gate_up.forward_on_device(ffn_in, OutputView{gate_up, OutputFormat::f32}, s);
      SiluMulLaunch swiglu;
      swiglu.gate = gate_up + L.gate_up.offset(0, n), swiglu.gate_stride = L.gate_up.stride(0);
      swiglu.up = gate_up + L.gate_up.offset(1, n), swiglu.up_stride = L.gate_up.stride(1);
      swiglu.out = input, swiglu.out_format = act_out, swiglu.rows = n, swiglu.cols = c.ffn;
      NIBBLE_CUDA_CHECK(cuda_silu_mul(swiglu, s), "SwiGLU of layer {}", l);
      L.down->forward_on_device(in, down_out, s);
    }
  }
  if (key.logit_rows == 0) return;
  // Only the rows whose logits are asked need the last residual add and the final norm
  // (folded: the last down product did them for every row).
  const size_t first = n - key.logit_rows;
  const bool final_folded = !layers_.empty() && layers_.back().fold_next_norm;
  if (!final_folded)
    norm(first, true, final_norm_, key.logit_rows, "final norm", c.layers);
  model_->lm_head_->forward_on_device(normed_view(final_folded, first, key.logit_rows),
                                      OutputView{logits_.get(), OutputFormat::f32}, s);
  if (!key.greedy) return;
  ArgmaxLaunch argmax;
  argmax.logits = logits_.as<const float>() + (key.logit_rows - 1) * c.vocab;
  argmax.rows = 1, argmax.cols = c.vocab;
  argmax.keys = greedy_key_.as<unsigned long long>();
  NIBBLE_CUDA_CHECK(cuda_argmax_rows(argmax, s), "the greedy token's argmax");
  GreedyFeedLaunch feed;
  feed.key = greedy_key_.as<const unsigned long long>();
  feed.step = step_.as<int32_t>(), feed.advance = int32_t(n), feed.vocab = uint32_t(c.vocab);
  NIBBLE_CUDA_CHECK(cuda_greedy_feed(feed, s), "the next step's position and token");
}

}  // namespace nibble
