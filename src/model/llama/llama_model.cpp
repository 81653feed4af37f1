#include "model/llama/llama_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/error.h"
#include "base/thread_pool.h"
#include "model/sampler.h"

#if NIBBLE_WITH_CUDA
#include "model/llama/llama_model_cuda.h"
#endif

namespace nibble {

void LlamaCudaExecutorDeleter::operator()(LlamaCudaExecutor* executor) const {
#if NIBBLE_WITH_CUDA
  delete executor;
#else
  (void)executor;  // never made without CUDA
#endif
}

namespace {

// out[i] = x[i] / rms(x) * w[i], as transformers' LlamaRMSNorm and llama2.c's rmsnorm (F32).
void rms_norm(const float* x, const float* w, size_t n, float eps, float* out) {
  float ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(ss / float(n) + eps);
  for (size_t i = 0; i < n; ++i) out[i] = w[i] * (scale * x[i]);
}

std::vector<float> norm_weights(const TensorSource& t, const std::string& name, size_t n) {
  return tensor_to_f32(t.at(name, {int64_t(n)}), t.where());
}

}  // namespace

std::unique_ptr<LlamaModel> LlamaModel::build(const LlamaConfig& c, const TensorSource& t,
                                              const ModelLoadOptions& load_options) {
  NIBBLE_CHECK(c.heads % c.kv_heads == 0, "{}: {} attention heads are not a multiple of {} KV heads",
               t.where(), c.heads, c.kv_heads);
  NIBBLE_CHECK(c.head_dim % 2 == 0, "{}: head_dim {} must be even for RoPE", t.where(), c.head_dim);
  NIBBLE_CHECK(c.layer_window.empty() || c.layer_window.size() == c.layers,
               "{}: {} attention windows given for {} layers", t.where(), c.layer_window.size(),
               c.layers);
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->config_ = c;
  ModelLoadOptions options = load_options;
  DenseLinearMaker dense;  // empty: DenseLinear on the CPU
  if (options.device.kind == DeviceKind::cuda) {
#if NIBBLE_WITH_CUDA
    // Prompts run in chunks the CUDA kernels serve (llama_model_cuda.h says why).
    options.max_batch_tokens = std::min(options.max_batch_tokens, kCudaMaxBatchTokens);
    m->cuda_.reset(new LlamaCudaExecutor(c, options));
    dense = m->cuda_->dense_maker();
#else
    NIBBLE_THROW("{}: a CUDA device was asked for, but this build of nibble has no CUDA support",
                 t.where());
#endif
  } else {
    NIBBLE_CHECK(options.activation == ActivationFormat::f32,
                 "the CPU model feeds its linear layers F32 activations ({} asked)",
                 activation_format_name(options.activation));
  }
  m->max_m_ = std::max<size_t>(1, options.max_batch_tokens);
  m->inv_freq_ = c.rope_inv_freq();
  const LayerSelection selection(t, c.tied_embeddings, options);
  m->warnings_ = selection.warnings();

  m->embedding_ = dense_weights_from(
      t.at("model.embed_tokens.weight", {int64_t(c.vocab), int64_t(c.hidden)}), t.where());
#if NIBBLE_WITH_CUDA
  if (m->cuda_) m->cuda_->upload_embedding(m->embedding_);
#endif
  m->layers_.resize(c.layers);
  for (size_t l = 0; l < c.layers; ++l) {
    Layer& L = m->layers_[l];
    const std::string p = fmt::format("model.layers.{}.", l);
    L.attn_norm = norm_weights(t, p + "input_layernorm.weight", c.hidden);
    L.ffn_norm = norm_weights(t, p + "post_attention_layernorm.weight", c.hidden);
    if (c.qk_norm) {
      L.q_norm = norm_weights(t, p + "self_attn.q_norm.weight", c.head_dim);
      L.k_norm = norm_weights(t, p + "self_attn.k_norm.weight", c.head_dim);
    }
    auto linear = [&](const char* name, LinearRole role, size_t n, size_t k, bool bias) {
      return make_linear(t, p + name, role, n, k, bias, selection, options, nullptr, m->plan_,
                         dense);
    };
    L.qkv = make_linear_group(t, p + "self_attn.qkv_proj",
                              {{p + "self_attn.q_proj", LinearRole::q, c.q_width()},
                               {p + "self_attn.k_proj", LinearRole::k, c.kv_width()},
                               {p + "self_attn.v_proj", LinearRole::v, c.kv_width()}},
                              c.hidden, c.qkv_bias, selection, options, m->plan_, dense);
    L.o = linear("self_attn.o_proj", LinearRole::o, c.hidden, c.q_width(), c.o_bias);
    L.gate_up = make_linear_group(t, p + "mlp.gate_up_proj",
                                  {{p + "mlp.gate_proj", LinearRole::gate, c.ffn},
                                   {p + "mlp.up_proj", LinearRole::up, c.ffn}},
                                  c.hidden, false, selection, options, m->plan_, dense,
                                  LinearEpilogue::swiglu);
    L.down = linear("mlp.down_proj", LinearRole::down, c.hidden, c.ffn, false);
  }
  m->final_norm_ = norm_weights(t, "model.norm.weight", c.hidden);
  // A checkpoint may carry lm_head.weight even when tied (some exporters write both): the
  // config decides.
  m->lm_head_ = make_linear(t, "lm_head", LinearRole::lm_head, c.vocab, c.hidden, false, selection,
                            options, c.tied_embeddings ? m->embedding_ : nullptr, m->plan_,
                            dense);
#if NIBBLE_WITH_CUDA
  if (m->cuda_) m->cuda_->bind(*m);
#endif
  return m;
}

KvCache LlamaModel::make_cache(size_t capacity) const {
#if NIBBLE_WITH_CUDA
  if (cuda_) return cuda_->make_cache(capacity);
#endif
  return KvCache(config_.layers, capacity, config_.kv_width());
}

DeviceKind LlamaModel::device() const { return cuda_ ? DeviceKind::cuda : DeviceKind::cpu; }

size_t LlamaModel::weight_bytes() const {
  size_t bytes = embedding_->bytes() + final_norm_.size() * 4;
  for (const Layer& L : layers_) {
    bytes += (L.attn_norm.size() + L.ffn_norm.size() + L.q_norm.size() + L.k_norm.size()) * 4;
    bytes += L.qkv.weight_bytes() + L.gate_up.weight_bytes() + L.o->weight_bytes() +
             L.down->weight_bytes();
  }
  if (!config_.tied_embeddings) bytes += lm_head_->weight_bytes();
  return bytes;
}

void LlamaModel::rope(float* x, size_t stride, size_t count, size_t start, size_t heads) const {
  const size_t d = config_.head_dim, half = d / 2;
  for (size_t t = 0; t < count; ++t) {
    const float pos = float(start + t);
    for (size_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq_[i];
      const float c = std::cos(angle), s = std::sin(angle);
      for (size_t h = 0; h < heads; ++h) {
        float* v = x + t * stride + h * d;
        // Interleaved (llama2.c): pairs (2i, 2i+1). Rotate-half (HF): pairs (i, i + d/2).
        float* a = config_.rope_interleaved ? v + 2 * i : v + i;
        float* b = config_.rope_interleaved ? v + 2 * i + 1 : v + i + half;
        const float x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
      }
    }
  }
}

void LlamaModel::attention(size_t layer, size_t count, size_t start, const float* q,
                           size_t q_stride, KvCache& cache, float* out) const {
  const LlamaConfig& c = config_;
  const size_t d = c.head_dim, group = c.heads / c.kv_heads;
  const float scale = 1.0f / std::sqrt(float(d));
  const size_t window = c.window(layer);  // 0: the whole prefix
  ThreadPool& pool = ThreadPool::global();
  std::vector<float> scores(pool.size() * (start + count));
  const size_t stride = start + count;
  auto body = [&](size_t begin, size_t end, size_t thread) {
    float* s = scores.data() + thread * stride;
    for (size_t job = begin; job < end; ++job) {
      const size_t t = job / c.heads, h = job % c.heads, kvh = h / group;
      const size_t pos = start + t;
      const size_t first = window && pos + 1 > window ? pos + 1 - window : 0;
      const float* qh = q + t * q_stride + h * d;
      float max = -INFINITY;
      for (size_t j = first; j <= pos; ++j) {
        const float* kj = cache.k(layer, j) + kvh * d;
        float dot = 0;
        for (size_t i = 0; i < d; ++i) dot += qh[i] * kj[i];
        s[j] = dot * scale;
        max = std::max(max, s[j]);
      }
      float sum = 0;
      for (size_t j = first; j <= pos; ++j) sum += (s[j] = std::exp(s[j] - max));
      const float inv = 1.0f / sum;
      float* oh = out + (t * c.heads + h) * d;
      std::fill(oh, oh + d, 0.0f);
      for (size_t j = first; j <= pos; ++j) {
        const float* vj = cache.v(layer, j) + kvh * d;
        const float w = s[j] * inv;
        for (size_t i = 0; i < d; ++i) oh[i] += w * vj[i];
      }
    }
  };
  const size_t jobs = count * c.heads;
  // Small problems (a decode step of a tiny model) stay on this thread.
  if (jobs * (start + count) * d < (size_t(1) << 15))
    body(0, jobs, 0);
  else
    pool.parallel_for(jobs, 1, body);
}

void LlamaModel::forward(std::span<const int32_t> tokens, KvCache& cache, float* logits,
                         bool all_logits) const {
  run(tokens, cache, logits, all_logits, nullptr);
}

int32_t LlamaModel::forward_greedy(std::span<const int32_t> tokens, KvCache& cache) const {
  NIBBLE_CHECK(!tokens.empty(), "a greedy step needs at least one token");
#if NIBBLE_WITH_CUDA
  if (cuda_) {
    int32_t next = -1;
    run(tokens, cache, nullptr, false, &next);
    return next;
  }
#endif
  std::vector<float> logits(config_.vocab);
  run(tokens, cache, logits.data(), false, nullptr);
  return argmax(logits.data(), logits.size());
}

void LlamaModel::drain() const {
#if NIBBLE_WITH_CUDA
  if (cuda_) cuda_->drop_ahead();
#endif
}

void LlamaModel::run(std::span<const int32_t> tokens, KvCache& cache, float* logits,
                     bool all_logits, int32_t* greedy) const {
  const LlamaConfig& c = config_;
  const size_t total = tokens.size();
  if (total == 0) return;
  NIBBLE_CHECK(cache.layers() == c.layers && cache.kv_width() == c.kv_width(),
               "KV cache shape does not match the model");
  NIBBLE_CHECK(cache.length() + total <= cache.capacity(),
               "sequence of {} tokens exceeds the KV cache capacity of {}", cache.length() + total,
               cache.capacity());
  for (int32_t id : tokens)
    NIBBLE_CHECK(id >= 0 && size_t(id) < c.vocab, "token id {} is outside the vocabulary (0..{})",
                 id, c.vocab - 1);
  NIBBLE_CHECK((cache.storage() != nullptr) == (cuda_ != nullptr),
               "the KV cache holds {} rows but the model runs on {} (make it with make_cache)",
               cache.storage() ? "device" : "host", device_kind_name(device()));
  // Chunks of at most max_batch_tokens (the largest M the kernels were prepared for).
  const size_t chunk = std::min(total, max_m_);
  for (size_t off = 0; off < total; off += chunk) {
    const size_t n = std::min(chunk, total - off);
    const bool last = off + n == total;
    float* out = all_logits ? logits + off * c.vocab : (last ? logits : nullptr);
#if NIBBLE_WITH_CUDA
    if (cuda_) {
      cuda_->forward_chunk(tokens.subspan(off, n), cache, out, all_logits, last ? greedy : nullptr);
      continue;
    }
#endif
    forward_chunk(tokens.subspan(off, n), cache, out, all_logits);
  }
#if NIBBLE_WITH_CUDA
  if (cuda_) cuda_->finish();
#endif
}

void LlamaModel::forward_chunk(std::span<const int32_t> tokens, KvCache& cache, float* logits,
                               bool all_logits) const {
  const LlamaConfig& c = config_;
  const size_t n = tokens.size(), start = cache.length(), H = c.hidden;
  std::vector<float> x(n * H), xb(n * H), qkv(n * c.qkv_width()), att(n * c.q_width()),
      gate_up(n * 2 * c.ffn), act(n * c.ffn);
  for (size_t t = 0; t < n; ++t) embedding_->row_to_f32(size_t(tokens[t]), x.data() + t * H);
  // Member i's row t of a group's output (layout in linear_plan.h).
  auto row = [n](const LinearGroup& g, std::vector<float>& out, size_t i, size_t t) {
    return out.data() + g.offset(i, n) + t * g.stride(i);
  };

  for (size_t l = 0; l < c.layers; ++l) {
    const Layer& L = layers_[l];
    for (size_t t = 0; t < n; ++t)
      rms_norm(x.data() + t * H, L.attn_norm.data(), H, c.norm_eps, xb.data() + t * H);
    // q, k, v are worked on where the product left them (rows stride(i) apart).
    L.qkv.forward(xb.data(), n, qkv.data());
    const size_t d = c.head_dim;
    if (c.qk_norm)
      for (size_t t = 0; t < n; ++t) {
        for (size_t h = 0; h < c.heads; ++h)
          rms_norm(row(L.qkv, qkv, 0, t) + h * d, L.q_norm.data(), d, c.norm_eps,
                   row(L.qkv, qkv, 0, t) + h * d);
        for (size_t h = 0; h < c.kv_heads; ++h)
          rms_norm(row(L.qkv, qkv, 1, t) + h * d, L.k_norm.data(), d, c.norm_eps,
                   row(L.qkv, qkv, 1, t) + h * d);
      }
    rope(row(L.qkv, qkv, 0, 0), L.qkv.stride(0), n, start, c.heads);
    rope(row(L.qkv, qkv, 1, 0), L.qkv.stride(1), n, start, c.kv_heads);
    for (size_t t = 0; t < n; ++t) {
      std::memcpy(cache.k(l, start + t), row(L.qkv, qkv, 1, t), c.kv_width() * 4);
      std::memcpy(cache.v(l, start + t), row(L.qkv, qkv, 2, t), c.kv_width() * 4);
    }
    attention(l, n, start, row(L.qkv, qkv, 0, 0), L.qkv.stride(0), cache, att.data());
    L.o->forward(att.data(), n, xb.data());
    for (size_t i = 0; i < n * H; ++i) x[i] += xb[i];

    for (size_t t = 0; t < n; ++t)
      rms_norm(x.data() + t * H, L.ffn_norm.data(), H, c.norm_eps, xb.data() + t * H);
    L.gate_up.forward(xb.data(), n, gate_up.data());
    for (size_t t = 0; t < n; ++t) {
      const float* gate = row(L.gate_up, gate_up, 0, t);
      const float* up = row(L.gate_up, gate_up, 1, t);
      for (size_t i = 0; i < c.ffn; ++i)
        act[t * c.ffn + i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];  // SiLU(gate) * up
    }
    L.down->forward(act.data(), n, xb.data());
    for (size_t i = 0; i < n * H; ++i) x[i] += xb[i];
  }
  cache.set_length(start + n);
  if (!logits) return;
  const size_t first = all_logits ? 0 : n - 1;
  const size_t rows = n - first;
  for (size_t t = first; t < n; ++t)
    rms_norm(x.data() + t * H, final_norm_.data(), H, c.norm_eps, xb.data() + (t - first) * H);
  lm_head_->forward(xb.data(), rows, logits);
}

}  // namespace nibble
