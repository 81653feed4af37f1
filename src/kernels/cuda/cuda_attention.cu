// The device side of cuda_attention.h (the work split is described there).
#include <cfloat>
#include <cstdint>

#include "kernels/cuda/cuda_attention.h"
#include "kernels/cuda/cuda_common.cuh"
#include "kernels/cuda/cuda_launch.cuh"

namespace nibble {
namespace {

using namespace cuda_detail;

// 8 warps per (head, token), each taking kBatch positions per trip: the kBatch key rows (then
// value rows) of a trip are independent loads, so a warp keeps kBatch rows in flight instead of
// one (a decode step is latency-bound: ~100-1000 positions, one block per head). kPerLane
// elements of a row per lane: 4 up to head_dim 128, with 8 positions a warp (64 positions a
// trip, so a context up to 64 needs no merge), 8 up to 256 with 4. 8 x (256 + 2) floats of
// shared memory for the merge.
constexpr int kWarps = 8;
static_assert(kWarps * 32 >= int(kAttentionMaxHeadDim), "the merge takes one element a thread");
// Partial results of a row the merging block loads at once.
constexpr int kMergeBatch = 8;
// RoPE pairs element e (a of its pair, or b) with its partner; the pair's frequency is
// inv_freq[rope_pair(e)].
__device__ __forceinline__ size_t rope_partner(const AttentionLaunch& p, size_t e) {
  const size_t half = p.head_dim / 2;
  return p.interleaved ? e ^ 1 : e < half ? e + half : e - half;
}
__device__ __forceinline__ size_t rope_pair(const AttentionLaunch& p, size_t e) {
  const size_t half = p.head_dim / 2;
  return p.interleaved ? e / 2 : e < half ? e : e - half;
}

// A head's row of a product, element lane + 32 r in own[r] and its RoPE partner in mate[r]
// (0 past head_dim).
template <int kPerLane>
__device__ __forceinline__ void load_row_pairs(const AttentionLaunch& p, const float* x,
                                               float (&own)[kPerLane], float (&mate)[kPerLane]) {
  const size_t lane = threadIdx.x % 32;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const size_t e = lane + 32 * r;
    own[r] = e < p.head_dim ? x[e] : 0.0f;
    mate[r] = e < p.head_dim ? x[rope_partner(p, e)] : 0.0f;
  }
}

// The rotation of the lane's elements lane + 32 r at one position.
template <int kPerLane>
struct RopeAngles {
  float sine[kPerLane], cosine[kPerLane];
};

template <int kPerLane>
__device__ __forceinline__ RopeAngles<kPerLane> rope_angles(const AttentionLaunch& p, size_t at) {
  const size_t lane = threadIdx.x % 32;
  RopeAngles<kPerLane> angles;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const size_t e = lane + 32 * r;
    const float freq = e < p.head_dim ? __ldg(p.inv_freq + rope_pair(p, e)) : 0.0f;
    sincosf(float(at) * freq, &angles.sine[r], &angles.cosine[r]);
  }
  return angles;
}

// That row through the per-head norm (null weights: none) and RoPE by `angles`, as element
// lane + 32 r in out[r] (0 past head_dim): the whole warp takes part.
template <int kPerLane>
__device__ __forceinline__ void rotate_row(const AttentionLaunch& p, const float (&own)[kPerLane],
                                           const float (&mate)[kPerLane], const float* norm,
                                           const RopeAngles<kPerLane>& angles,
                                           float (&out)[kPerLane]) {
  const size_t d = p.head_dim, lane = threadIdx.x % 32;
  float scale = 1.0f;
  if (norm) {
    float squares = 0.0f;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) squares += own[r] * own[r];
    scale = 1.0f / sqrtf(warp_sum(squares) / float(d) + p.eps);
  }
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const size_t e = lane + 32 * r;
    out[r] = 0.0f;
    if (e >= d) continue;
    const bool second = p.interleaved ? (e & 1) != 0 : e >= d / 2;  // b of its pair (a, b)
    float x = own[r], y = mate[r];
    if (norm) x = __ldg(norm + e) * (scale * x), y = __ldg(norm + rope_partner(p, e)) * (scale * y);
    const float sine = angles.sine[r], cosine = angles.cosine[r];
    out[r] = second ? y * sine + x * cosine : x * cosine - y * sine;
  }
}

// Two blocks an SM up to head_dim 128 (128 registers, a few spilled): attention then holds half
// as many SMs, so more of the next product's CTAs, which each need a whole SM, start and load
// their weights while it runs. The H200's decode: 547 against 538 tokens/s (docs/perf.md).
template <int kPerLane, int kBatch>
__global__ void __launch_bounds__(kWarps * 32, kPerLane == 4 ? 2 : 1)
    attention_kernel(AttentionLaunch p) {
  constexpr size_t kTrip = size_t(kWarps) * kBatch;  // positions a block reads per trip
  __shared__ float s_acc[kWarps][kAttentionMaxHeadDim];
  __shared__ float s_max[kWarps], s_sum[kWarps];
  pdl_launch_dependents();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const size_t h = blockIdx.x, t = blockIdx.y, d = p.head_dim;
  const size_t kvh = h / (p.heads / p.kv_heads), kv_width = p.kv_heads * d;
  const size_t start = size_t(*p.position), pos = start + t;
  const size_t visible_from = p.window && pos + 1 > p.window ? pos + 1 - p.window : 0;
  // The splits this row uses: one per trip's worth of positions, at most p.splits (a short
  // context then needs no merge, or a small one). Blocks past them have nothing to do.
  const size_t visible = pos + 1 - visible_from;
  const size_t splits = min(p.splits, (visible + kTrip - 1) / kTrip);
  if (blockIdx.z >= splits) return;
  // This block's share of the visible positions (all of them when splits = 1): [first, last].
  const size_t span = (visible + splits - 1) / splits;
  const size_t first = visible_from + blockIdx.z * span;
  const size_t last = pos < first + span - 1 ? pos : first + span - 1;  // first > last: none

  // The key and value rows of a trip, in registers. Rows j < start (the step's first
  // position) were written by earlier forwards, which completed before this one began (the
  // position too is written before the first kernel), so the first trip's are loaded before
  // the wait: a decode step's cache reads then overlap the kernels before this one. The rows
  // of this chunk (start .. start + tokens - 1) are rotated from the k product after it.
  float kr[kBatch][kPerLane] = {}, vr[kBatch][kPerLane] = {};
  // Cache rows j0 .. j0 + kBatch - 1 of a trip that lie before start and are visible.
  const auto load_rows = [&](size_t j0) {
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const size_t j = j0 + b;
      const bool take = j <= last && j < start;
      const float* kj = p.k_cache + j * kv_width + kvh * d;
      const float* vj = p.v_cache + j * kv_width + kvh * d;
#pragma unroll
      for (int r = 0; r < kPerLane; ++r) {
        const size_t i = size_t(lane + 32 * r);
        if (take && i < d) kr[b][r] = kj[i], vr[b][r] = vj[i];
      }
    }
  };
  // The rotation at the query's position (that of the new key row of a decode step too), from
  // the frequencies the model wrote at load time: before the wait, off the path after it.
  const RopeAngles<kPerLane> at_pos = rope_angles<kPerLane>(p, pos);
  // This chunk's rows among j0 .. j0 + kBatch - 1: from the products, the key rotated. The
  // first head of a group writes its own query's row into the cache (each row once).
  const bool writer = h % (p.heads / p.kv_heads) == 0;
  const auto new_rows = [&](size_t j0) {
    const size_t below = min(j0 + kBatch, last + 1);
    for (size_t j = max(j0, start); j < below; ++j) {
      const size_t row = j - start;
      float own[kPerLane], mate[kPerLane], key[kPerLane], value[kPerLane];
      load_row_pairs<kPerLane>(p, p.k + row * p.k_stride + kvh * d, own, mate);
      const float* vj = p.v + row * p.v_stride + kvh * d;
#pragma unroll
      for (int r = 0; r < kPerLane; ++r) {
        const size_t i = size_t(lane + 32 * r);
        value[r] = i < d ? vj[i] : 0.0f;
      }
      rotate_row<kPerLane>(p, own, mate, p.k_norm, j == pos ? at_pos : rope_angles<kPerLane>(p, j),
                           key);
#pragma unroll
      for (int r = 0; r < kPerLane; ++r) {
        const size_t i = size_t(lane + 32 * r);
        if (writer && j == pos && i < d)
          p.k_cache[j * kv_width + kvh * d + i] = key[r], p.v_cache[j * kv_width + kvh * d + i] = value[r];
      }
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        if (j0 + b == j)
#pragma unroll
          for (int r = 0; r < kPerLane; ++r) kr[b][r] = key[r], vr[b][r] = value[r];
    }
  };
  size_t j0 = first + size_t(warp) * kBatch;
  if (j0 <= last) load_rows(j0);
  pdl_wait();  // chained launches (cuda_launch.cuh): the products after it, and cache writes

  // The query's products first, so their loads are in flight while this warp's new key rows
  // are rotated.
  float q_own[kPerLane], q_mate[kPerLane], qr[kPerLane], acc[kPerLane];
  load_row_pairs<kPerLane>(p, p.q + t * p.q_stride + h * d, q_own, q_mate);
  if (j0 <= last) new_rows(j0);
  rotate_row<kPerLane>(p, q_own, q_mate, p.q_norm, at_pos, qr);
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) acc[r] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  // NOTES: j0 <= last, so position j0 of every trip is valid and m_new below is finite; a
  // position past last scores -inf (weight 0). Validity is the same on every lane of the warp,
  // so the shuffles of warp_sum are never divergent.
  for (bool first_trip = true; j0 <= last; j0 += kTrip, first_trip = false) {
    if (!first_trip) load_rows(j0), new_rows(j0);
    float s[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const size_t j = j0 + b;
      float dot = 0.0f;
      if (j <= last) {
#pragma unroll
        for (int r = 0; r < kPerLane; ++r) {
          const size_t i = size_t(lane + 32 * r);
          if (i < d) dot += qr[r] * kr[b][r];
        }
      }
      s[b] = j <= last ? warp_sum(dot) * p.scale : -INFINITY;
    }
    float m_new = m;
#pragma unroll
    for (int b = 0; b < kBatch; ++b) m_new = fmaxf(m_new, s[b]);
    const float correction = expf(m - m_new);  // 0 on the first trip (m = -inf)
    l *= correction;
#pragma unroll
    for (int r = 0; r < kPerLane; ++r) acc[r] *= correction;
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const size_t j = j0 + b;
      if (j > last) continue;
      const float w = expf(s[b] - m_new);
      l += w;
#pragma unroll
      for (int r = 0; r < kPerLane; ++r) {
        const size_t i = size_t(lane + 32 * r);
        if (i < d) acc[r] += w * vr[b][r];
      }
    }
    m = m_new;
  }

  // Merge the warps: M = max of their maxima, each warp's part scaled by exp(m_w - M).
  if (lane == 0) s_max[warp] = m, s_sum[warp] = l;
#pragma unroll
  for (int r = 0; r < kPerLane; ++r) {
    const size_t i = size_t(lane + 32 * r);
    if (i < d) s_acc[warp][i] = acc[r];
  }
  __syncthreads();
  float total_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) total_max = fmaxf(total_max, s_max[w]);
  float total = 0.0f;
  float factor[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    // A warp that saw no position (fewer than kWarps x kBatch of them) has m = -inf, l = 0.
    factor[w] = s_sum[w] > 0.0f ? expf(s_max[w] - total_max) : 0.0f;
    total += s_sum[w] * factor[w];
  }
  const bool bf16 = p.out_format == OutputFormat::bf16;
  const size_t row = t * p.heads + h;  // the (token, head) this block works for
  if (splits == 1) {
    const float inv = 1.0f / total;
    for (size_t i = threadIdx.x; i < d; i += blockDim.x) {
      float o = 0.0f;
      for (int w = 0; w < kWarps; ++w) o += s_acc[w][i] * factor[w];
      store(p.out, row * d + i, o * inv, bf16);
    }
    return;
  }

  // Flash-decoding: this split's (max, sum, unnormalized values) to the scratch; the last
  // split of the row to arrive merges them all and resets the row's counter.
  float* part = p.scratch + (row * p.splits + blockIdx.z) * (d + 2);
  for (size_t i = threadIdx.x; i < d; i += blockDim.x) {
    float o = 0.0f;
    for (int w = 0; w < kWarps; ++w) o += s_acc[w][i] * factor[w];
    part[2 + i] = o;
  }
  if (threadIdx.x == 0) part[0] = total_max, part[1] = total;
  __threadfence();
  __syncthreads();
  __shared__ bool s_last;
  if (threadIdx.x == 0) s_last = atomicAdd(p.counters + row, 1u) == unsigned(splits - 1);
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  // Thread i merges element i of every split, in load batches of kMergeBatch splits (their
  // max, sum and value at once: one trip to L2 per batch), with a running max as in the
  // softmax above. An empty split (sum 0, max -inf) weighs nothing.
  const float* parts = p.scratch + row * p.splits * (d + 2);
  const size_t i = threadIdx.x;
  if (i < d) {
    float merged_max = -INFINITY, merged_sum = 0.0f, o = 0.0f;
    for (size_t z0 = 0; z0 < splits; z0 += kMergeBatch) {
      float part_max[kMergeBatch], part_sum[kMergeBatch], value[kMergeBatch];
#pragma unroll
      for (int b = 0; b < kMergeBatch; ++b) {
        const float* pz = parts + (z0 + b) * (d + 2);
        const bool in = z0 + b < splits;
        part_max[b] = in ? __ldcg(pz) : -INFINITY;
        part_sum[b] = in ? __ldcg(pz + 1) : 0.0f;
        value[b] = in ? __ldcg(pz + 2 + i) : 0.0f;
      }
      float batch_max = merged_max;
#pragma unroll
      for (int b = 0; b < kMergeBatch; ++b)
        if (part_sum[b] > 0.0f) batch_max = fmaxf(batch_max, part_max[b]);
      const float correction = merged_sum > 0.0f ? expf(merged_max - batch_max) : 0.0f;
      merged_sum *= correction, o *= correction;
#pragma unroll
      for (int b = 0; b < kMergeBatch; ++b) {
        if (!(part_sum[b] > 0.0f)) continue;
        const float w = expf(part_max[b] - batch_max);
        merged_sum += part_sum[b] * w, o += value[b] * w;
      }
      merged_max = batch_max;
    }
    store(p.out, row * d + i, o / merged_sum, bf16);
  }
  if (threadIdx.x == 0) p.counters[row] = 0;  // ready for the next launch
}

}  // namespace

cudaError_t cuda_attention(const AttentionLaunch& p, cudaStream_t stream) {
  if (p.tokens == 0 || p.heads == 0) return cudaSuccess;
  if (!p.q || !p.k || !p.v || !p.inv_freq || !p.k_cache || !p.v_cache || !p.out || !p.position ||
      p.kv_heads == 0 || p.heads % p.kv_heads != 0 || p.head_dim == 0 || p.head_dim % 2 != 0 ||
      p.head_dim > kAttentionMaxHeadDim || p.tokens > 65535 || p.heads >= (size_t(1) << 31) ||
      p.splits == 0 || p.splits > kAttentionMaxSplits || (p.splits > 1 && (!p.scratch || !p.counters)))
    return cudaErrorInvalidValue;
  const dim3 grid(unsigned(p.heads), unsigned(p.tokens), unsigned(p.splits));
  const auto kernel = p.head_dim <= 128 ? attention_kernel<4, 8> : attention_kernel<8, 4>;
  return launch(kernel, grid, dim3(kWarps * 32), 0, stream, true, p);
}

}  // namespace nibble
