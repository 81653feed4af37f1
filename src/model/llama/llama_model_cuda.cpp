#include "model/llama/llama_model_cuda.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "base/error.h"
#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_elementwise.h"
#include "kernels/cuda/cuda_norm.h"
#include "kernels/cuda/cuda_rope.h"
#include "model/cuda/cuda_kv_cache.h"
#include "model/llama/llama_model.h"

namespace nibble {
namespace {

DeviceBuffer upload_floats(const std::vector<float>& v, const std::string& what) {
  return DeviceBuffer::upload(v.data(), v.size() * sizeof(float), what);
}

size_t activation_bytes(ActivationFormat f) { return f == ActivationFormat::bf16 ? 2 : 4; }

OutputFormat as_output(ActivationFormat f) {
  return f == ActivationFormat::bf16 ? OutputFormat::bf16 : OutputFormat::f32;
}

}  // namespace

LlamaCudaExecutor::LlamaCudaExecutor(const LlamaConfig& config, const ModelLoadOptions& options)
    : config_(config),
      max_m_(std::max<size_t>(1, options.max_batch_tokens)),
      activation_(options.activation) {
  NIBBLE_CHECK(max_m_ <= kCudaMaxBatchTokens,
               "the CUDA executor runs at most {} tokens per forward chunk, {} asked",
               kCudaMaxBatchTokens, max_m_);
  NIBBLE_CHECK(config.head_dim <= kAttentionMaxHeadDim,
               "head_dim {} is above the {} the CUDA attention kernel supports", config.head_dim,
               kAttentionMaxHeadDim);
  context_ = std::make_unique<CudaContext>(options.device);
}

LlamaCudaExecutor::~LlamaCudaExecutor() = default;

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
    for (const Linear* lin : {L.q.get(), L.k.get(), L.v.get(), L.o.get(), L.gate.get(),
                              L.up.get(), L.down.get()})
      NIBBLE_CHECK(lin->device() == DeviceKind::cuda, "layer {}: {} was built for {}, not CUDA",
                   l, lin->name(), device_kind_name(lin->device()));
  }
  NIBBLE_CHECK(model.lm_head_->device() == DeviceKind::cuda, "lm_head was not built for CUDA");
  final_norm_ = upload_floats(model.final_norm_, "the final norm");
  inv_freq_ = upload_floats(model.inv_freq_, "the RoPE frequencies");

  const size_t m = max_m_, act = activation_bytes(activation_);
  ids_ = DeviceBuffer(m * sizeof(int32_t), "token ids");
  x_ = DeviceBuffer(m * c.hidden * 4, "the residual stream");
  delta_ = DeviceBuffer(m * c.hidden * 4, "sublayer outputs");
  q_ = DeviceBuffer(m * c.q_width() * 4, "queries");
  gate_ = DeviceBuffer(m * c.ffn * 4, "MLP gate products");
  up_ = DeviceBuffer(m * c.ffn * 4, "MLP up products");
  input_ = DeviceBuffer(m * std::max({c.hidden, c.q_width(), c.ffn}) * act, "linear inputs");
  logits_ = DeviceBuffer(m * c.vocab * 4, "logits");
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

void LlamaCudaExecutor::forward_chunk(std::span<const int32_t> tokens, KvCache& cache,
                                      float* logits, bool all_logits) const {
  const LlamaConfig& c = config_;
  const size_t n = tokens.size(), start = cache.length(), H = c.hidden, kvw = c.kv_width();
  NIBBLE_CHECK(model_ && n >= 1 && n <= max_m_, "CUDA forward chunk of {} tokens (1..{})", n,
               max_m_);
  auto* kv = dynamic_cast<CudaKvStorage*>(cache.storage());
  NIBBLE_CHECK(kv != nullptr, "the KV cache was not made by this model's CUDA executor");
  const cudaStream_t s = context_->stream();
  const ActivationFormat act = activation_;
  const OutputFormat act_out = as_output(act);
  float* x = x_.as<float>();
  float* delta = delta_.as<float>();
  float* q = q_.as<float>();
  void* input = input_.get();
  const ActivationView in{input, n, act};

  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(ids_.get(), tokens.data(), n * sizeof(int32_t),
                                    cudaMemcpyHostToDevice, s));
  EmbeddingGatherLaunch gather;
  gather.table = embedding_->data.get();
  gather.table_bf16 = embedding_->dtype == DType::BF16;
  gather.ids = ids_.as<const int32_t>();
  gather.out = x;
  gather.count = n, gather.cols = H;
  NIBBLE_CUDA_CHECK(cuda_embedding_gather(gather, s));

  // x (+= delta) -> rmsnorm -> out; delta null on the first layer.
  auto norm = [&](float* rows, const float* add, const DeviceBuffer& weight, void* out,
                  OutputFormat format, size_t count, size_t width, const char* what, size_t l) {
    RmsNormLaunch r;
    r.x = rows, r.delta = add, r.weight = weight.as<const float>(), r.out = out;
    r.out_format = format, r.rows = count, r.n = width, r.eps = c.norm_eps;
    NIBBLE_CUDA_CHECK(cuda_rms_norm(r, s), "{} of layer {}", what, l);
  };
  const float scale = 1.0f / std::sqrt(float(c.head_dim));

  for (size_t l = 0; l < c.layers; ++l) {
    const auto& L = model_->layers_[l];
    const DeviceLayer& D = layers_[l];
    float* k_rows = kv->k(l) + start * kvw;
    float* v_rows = kv->v(l) + start * kvw;

    norm(x, l ? delta : nullptr, D.attn_norm, input, act_out, n, H, "input norm", l);
    L.q->forward_on_device(in, OutputView{q, OutputFormat::f32}, s);
    L.k->forward_on_device(in, OutputView{k_rows, OutputFormat::f32}, s);
    L.v->forward_on_device(in, OutputView{v_rows, OutputFormat::f32}, s);
    if (c.qk_norm) {
      norm(q, nullptr, D.q_norm, q, OutputFormat::f32, n * c.heads, c.head_dim, "q norm", l);
      norm(k_rows, nullptr, D.k_norm, k_rows, OutputFormat::f32, n * c.kv_heads, c.head_dim,
           "k norm", l);
    }
    RopeLaunch rope;
    rope.q = q, rope.k = k_rows, rope.inv_freq = inv_freq_.as<const float>();
    rope.tokens = n, rope.q_heads = c.heads, rope.k_heads = c.kv_heads, rope.head_dim = c.head_dim;
    rope.start = start, rope.interleaved = c.rope_interleaved;
    NIBBLE_CUDA_CHECK(cuda_rope(rope, s), "RoPE of layer {}", l);

    AttentionLaunch att;
    att.q = q, att.k = kv->k(l), att.v = kv->v(l), att.out = input, att.out_format = act_out;
    att.tokens = n, att.start = start, att.heads = c.heads, att.kv_heads = c.kv_heads;
    att.head_dim = c.head_dim, att.window = c.window(l), att.scale = scale;
    NIBBLE_CUDA_CHECK(cuda_attention(att, s), "attention of layer {}", l);
    L.o->forward_on_device(in, OutputView{delta, OutputFormat::f32}, s);

    norm(x, delta, D.ffn_norm, input, act_out, n, H, "post-attention norm", l);
    L.gate->forward_on_device(in, OutputView{gate_.get(), OutputFormat::f32}, s);
    L.up->forward_on_device(in, OutputView{up_.get(), OutputFormat::f32}, s);
    NIBBLE_CUDA_CHECK(cuda_silu_mul(gate_.as<const float>(), up_.as<const float>(), input, act_out,
                                    n * c.ffn, s),
                      "SwiGLU of layer {}", l);
    L.down->forward_on_device(in, OutputView{delta, OutputFormat::f32}, s);
  }
  cache.set_length(start + n);
  if (!logits) return;
  // Only the rows whose logits are asked need the last residual add and the final norm.
  const size_t first = all_logits ? 0 : n - 1, rows = n - first;
  norm(x + first * H, delta + first * H, final_norm_, input, act_out, rows, H, "final norm",
       c.layers);
  model_->lm_head_->forward_on_device(ActivationView{input, rows, act},
                                      OutputView{logits_.get(), OutputFormat::f32}, s);
  NIBBLE_CUDA_CHECK(cudaMemcpyAsync(logits, logits_.get(), rows * c.vocab * sizeof(float),
                                    cudaMemcpyDeviceToHost, s),
                    "logits to the host");
  synchronize();
}

}  // namespace nibble
