// The device side of sm80_mxfp4_gemv; the layout, the decode and the reasons are in
// sm80_mxfp4_gemv.h. Host plumbing (prepare, checks, the LinearKernel) is in the .cpp.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "kernels/cuda/sm80_mxfp4_gemv.h"

namespace nibble {
namespace {

// K chunks each warp keeps in flight per loop trip (4 x 16 B weights + activations): with
// ~8-16 warps per SM that is 16-32 KB of weights in flight per SM, what the HBM latency x
// bandwidth product needs (3 TB/s x ~0.7 us over 132 SMs).
constexpr int kUnroll = 4;
constexpr int kMaxWarps = 16;

struct Params {
  const uint4* weights;
  const uint32_t* scales;
  const void* act;
  const float* bias;
  void* out;
  int n, k, m, k_chunks, n_tiles;
  bool out_bf16, act_vector, special_scales;
};

// E2M1 magnitude -> bf16 byte tables (sm80_mxfp4_gemv.h).
constexpr uint32_t kHiLo = 0x3f3f3f00u, kHiHi = 0x40404040u;
constexpr uint32_t kLoLo = 0xc0800000u, kLoHi = 0xc0804000u;

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// One packed word -> the four bf16x2 A-fragment registers (E0,E1) (E2,E3) (E4,E5) (E6,E7).
__device__ __forceinline__ void decode_word(uint32_t w, uint32_t (&a)[4]) {
  const uint32_t mag = w & 0x77777777u;
  const uint32_t mag_hi = mag >> 16;
  uint32_t hi0 = prmt(kHiLo, kHiHi, mag), lo0 = prmt(kLoLo, kLoHi, mag);
  uint32_t hi1 = prmt(kHiLo, kHiHi, mag_hi), lo1 = prmt(kLoLo, kLoHi, mag_hi);
  hi0 |= w & 0x80808080u;         // signs of E0..E3 (one LOP3)
  hi1 |= (w << 4) & 0x80808080u;  // signs of E4..E7
  a[0] = prmt(lo0, hi0, 0x5140);
  a[1] = prmt(lo0, hi0, 0x7362);
  a[2] = prmt(lo1, hi1, 0x5140);
  a[3] = prmt(lo1, hi1, 0x7362);
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// E8M0 byte -> float. Fast: codes 1..254 are 2^(e-127) = the bits e << 23. Exact: 0 is
// 2^-127 (an F32 subnormal), 255 is NaN.
__device__ __forceinline__ float scale_fast(uint32_t e) { return __uint_as_float(e << 23); }
__device__ __forceinline__ float scale_exact(uint32_t e) {
  return e == 0 ? __uint_as_float(0x00400000u) : e == 255 ? __uint_as_float(0x7fc00000u)
                                                          : __uint_as_float(e << 23);
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// The 8 activations act[row][k0 .. k0+7] as 4 bf16x2; zero past K and for rows >= M.
// F32 activations become two BF16 terms, hi = bf16(a) and lo = bf16(a - hi), each multiplied
// by the (exact) BF16 weights: about 16 significant bits of every activation survive, where
// one BF16 term keeps 8 (NMSE ~1e-6, too coarse for an F32 path).
template <typename Act>
constexpr int kActRegs = sizeof(Act) == 2 ? 4 : 8;

__device__ __forceinline__ void pack_split(const float (&v)[8], uint32_t (&b)[8]) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const __nv_bfloat162 hi = __floats2bfloat162_rn(v[2 * i], v[2 * i + 1]);
    const float2 back = __bfloat1622float2(hi);
    b[i] = *reinterpret_cast<const uint32_t*>(&hi);
    b[4 + i] = pack_bf16(v[2 * i] - back.x, v[2 * i + 1] - back.y);
  }
}

template <typename Act>
__device__ __forceinline__ void load_act(const Params& p, int row, int k0,
                                         uint32_t (&b)[kActRegs<Act>]) {
#pragma unroll
  for (int i = 0; i < kActRegs<Act>; ++i) b[i] = 0;
  if (row >= p.m) return;
  const Act* src = static_cast<const Act*>(p.act) + size_t(row) * p.k + k0;
  if (p.act_vector && k0 + 8 <= p.k) {
    if constexpr (sizeof(Act) == 2) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(src));
      b[0] = v.x, b[1] = v.y, b[2] = v.z, b[3] = v.w;
    } else {
      const float4 x = __ldg(reinterpret_cast<const float4*>(src));
      const float4 y = __ldg(reinterpret_cast<const float4*>(src) + 1);
      const float v[8] = {x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w};
      if constexpr (kActRegs<Act> == 8) pack_split(v, b);
    }
    return;
  }
  float v[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    v[i] = 0.0f;
    if (k0 + i < p.k) {
      if constexpr (sizeof(Act) == 2)
        v[i] = __bfloat162float(src[i]);
      else
        v[i] = src[i];
    }
  }
  if constexpr (kActRegs<Act> == 8) {
    pack_split(v, b);
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) b[i] = pack_bf16(v[2 * i], v[2 * i + 1]);
  }
}

// One K chunk (two MX blocks) of kTiles tiles into the accumulators: decode, mma, and the
// blocks' power-of-two scales applied to their partial sums.
template <typename Act, int kTiles>
__device__ __forceinline__ void accumulate_chunk(const Params& p, const uint4 (&w)[kTiles],
                                                 const uint32_t (&s)[kTiles],
                                                 const uint32_t (&b)[2][kActRegs<Act>],
                                                 float (&acc)[kTiles][4]) {
#pragma unroll
  for (int tt = 0; tt < kTiles; ++tt) {
    const uint32_t words[4] = {w[tt].x, w[tt].y, w[tt].z, w[tt].w};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      uint32_t a[4];
      decode_word(words[2 * j], a);
      mma_bf16(c, a, b[j][0], b[j][1]);
      if constexpr (kActRegs<Act> == 8) mma_bf16(c, a, b[j][4], b[j][5]);
      decode_word(words[2 * j + 1], a);
      mma_bf16(c, a, b[j][2], b[j][3]);
      if constexpr (kActRegs<Act> == 8) mma_bf16(c, a, b[j][6], b[j][7]);
      const uint32_t e_g = (s[tt] >> (8 * j)) & 0xff;
      const uint32_t e_g8 = (s[tt] >> (8 * j + 16)) & 0xff;
      float sg, sg8;
      if (p.special_scales) {
        sg = scale_exact(e_g), sg8 = scale_exact(e_g8);
      } else {
        sg = scale_fast(e_g), sg8 = scale_fast(e_g8);
      }
      acc[tt][0] = fmaf(c[0], sg, acc[tt][0]);
      acc[tt][1] = fmaf(c[1], sg, acc[tt][1]);
      acc[tt][2] = fmaf(c[2], sg8, acc[tt][2]);
      acc[tt][3] = fmaf(c[3], sg8, acc[tt][3]);
    }
  }
}

// Cross-warp reduction: red[warp][tile][reg][lane] (blockDim.x / 32 * kTiles * 128 floats of
// shared memory), summed in warp order (deterministic); bias, format, and the output store.
template <int kTiles>
__device__ __forceinline__ void reduce_and_store(const Params& p, const float (&acc)[kTiles][4],
                                                 float* red, int tile0) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int tt = 0; tt < kTiles; ++tt)
#pragma unroll
    for (int r = 0; r < 4; ++r) red[((warp * kTiles + tt) * 4 + r) * 32 + lane] = acc[tt][r];
  __syncthreads();
  for (int i = threadIdx.x; i < kTiles * 128; i += blockDim.x) {
    float sum = 0.0f;
    for (int wi = 0; wi < warps; ++wi) sum += red[wi * kTiles * 128 + i];
    const int tt = i / 128, r = (i / 32) % 4, ln = i % 32;
    const int row = (tile0 + tt) * 16 + (ln >> 2) + (r >= 2 ? 8 : 0);
    const int m = 2 * (ln & 3) + (r & 1);
    if (row >= p.n || m >= p.m) continue;
    if (p.bias) sum += p.bias[row];
    const size_t at = size_t(m) * p.n + row;
    if (p.out_bf16)
      static_cast<__nv_bfloat16*>(p.out)[at] = __float2bfloat16_rn(sum);
    else
      static_cast<float*>(p.out)[at] = sum;
  }
}

// One CTA: kTiles tiles of 16 rows; its warps split the K chunks (chunk = warp, warp + W, ...),
// each keeping kUnroll chunks of loads in flight, then reduce through shared memory.
template <typename Act, int kTiles>
__global__ void __launch_bounds__(kMaxWarps * 32)
    mxfp4_gemv_kernel(const Params p) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tile0 = blockIdx.x * kTiles;

  float acc[kTiles][4] = {};
  for (int base = warp; base < p.k_chunks; base += warps * kUnroll) {
    uint4 w[kUnroll][kTiles];
    uint32_t s[kUnroll][kTiles];
    uint32_t b[kUnroll][2][kActRegs<Act>];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int chunk = base + u * warps;
      if (chunk < p.k_chunks) {
#pragma unroll
        for (int tt = 0; tt < kTiles; ++tt) {
          const size_t at = size_t(tile0 + tt) * p.k_chunks + chunk;
          w[u][tt] = __ldcs(p.weights + at * 32 + lane);  // streamed once: evict first
          s[u][tt] = __ldg(p.scales + at * 8 + g);
        }
        load_act<Act>(p, g, chunk * 64 + 8 * t, b[u][0]);
        load_act<Act>(p, g, chunk * 64 + 32 + 8 * t, b[u][1]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + u * warps >= p.k_chunks) break;
      accumulate_chunk<Act, kTiles>(p, w[u], s[u], b[u], acc);
    }
  }

  extern __shared__ float red[];
  reduce_and_store<kTiles>(p, acc, red, tile0);
}


// ---- the pipelined variant (BF16 activations) ------------------------------------------------
// The kernel above waits for each trip's loads before it decodes them, so a warp's loads and
// its math never overlap: the memory system idles while the SMs decode (docs/perf.md). Here
// every warp streams its chunks through a ring of kStages shared-memory stages filled by
// cp.async: while it decodes chunk i, chunks i+1 .. i+kStages-1 are in flight, and the loads
// hold no registers. Each lane copies exactly the bytes it later reads (its 16 weight bytes
// per tile, its scale word, its two 16-byte activation runs), so a lane only waits for its
// own copies (cp.async.wait_group): no barrier inside the loop.
//
//   ring of warp w: kStages x [ weights kTiles x 32 lanes x 16 B | activations 2 x 32 x 16 B |
//                               scales kTiles x 32 lanes x 4 B ]
//
// Needs BF16 activation rows that are 16-byte aligned with K % 8 == 0 (every 16-byte run lies
// inside a row; runs past K are zero-filled by cp.async's src-size).
constexpr int kStages = 4;  // 3 chunks in flight per warp: 24-48 KB per SM at 8-16 warps

template <int kTiles>
constexpr int kStageBytes = kTiles * 512 + 2 * 512 + kTiles * 128;

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(shared_address(dst)), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(shared_address(dst)), "l"(src)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kPending) : "memory");
}

template <int kTiles>
__global__ void __launch_bounds__(kMaxWarps * 32)
    mxfp4_gemv_pipelined_kernel(const Params p) {
  using Act = __nv_bfloat16;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int tile0 = blockIdx.x * kTiles;
  extern __shared__ __align__(16) unsigned char smem[];
  unsigned char* ring = smem + size_t(warp) * kStages * kStageBytes<kTiles>;
  const bool has_row = g < p.m;  // B column g: activation row g, zero for rows >= M
  const Act* act_row = static_cast<const Act*>(p.act) + size_t(has_row ? g : 0) * p.k;

  const auto weights_at = [&](int stage) { return reinterpret_cast<uint4*>(ring + stage * kStageBytes<kTiles>); };
  const auto acts_at = [&](int stage) { return weights_at(stage) + kTiles * 32; };
  const auto scales_at = [&](int stage) { return reinterpret_cast<uint32_t*>(acts_at(stage) + 64); };
  const auto issue = [&](int stage, int chunk) {
#pragma unroll
    for (int tt = 0; tt < kTiles; ++tt) {
      const size_t at = size_t(tile0 + tt) * p.k_chunks + chunk;
      cp_async16(weights_at(stage) + tt * 32 + lane, p.weights + at * 32 + lane, 16);
      cp_async4(scales_at(stage) + tt * 32 + lane, p.scales + at * 8 + g);
    }
    if (has_row)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int k0 = chunk * 64 + 32 * j + 8 * t;
        const int bytes = k0 < p.k ? 2 * min(8, p.k - k0) : 0;
        cp_async16(acts_at(stage) + j * 32 + lane, bytes ? act_row + k0 : act_row, bytes);
      }
  };

  // This warp's chunks: warp, warp + warps, ...
  const int mine = warp < p.k_chunks ? (p.k_chunks - warp + warps - 1) / warps : 0;
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    if (i < mine) issue(i, warp + i * warps);
    cp_async_commit();  // empty groups too: the wait below counts groups
  }
  float acc[kTiles][4] = {};
  for (int i = 0; i < mine; ++i) {
    const int ahead = i + kStages - 1;
    if (ahead < mine) issue(ahead % kStages, warp + ahead * warps);
    cp_async_commit();
    cp_async_wait<kStages - 1>();  // chunk i's group is complete
    const int stage = i % kStages;
    uint4 w[kTiles];
    uint32_t s[kTiles];
    uint32_t b[2][kActRegs<Act>];
#pragma unroll
    for (int tt = 0; tt < kTiles; ++tt) {
      w[tt] = weights_at(stage)[tt * 32 + lane];
      s[tt] = scales_at(stage)[tt * 32 + lane];
    }
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const uint4 v = has_row ? acts_at(stage)[j * 32 + lane] : make_uint4(0, 0, 0, 0);
      b[j][0] = v.x, b[j][1] = v.y, b[j][2] = v.z, b[j][3] = v.w;
    }
    accumulate_chunk<Act, kTiles>(p, w, s, b, acc);
  }
  cp_async_wait<0>();
  __syncthreads();  // the rings become the reduction buffer
  reduce_and_store<kTiles>(p, acc, reinterpret_cast<float*>(smem), tile0);
}

size_t pipelined_smem_bytes(int tiles, int warps) {
  const size_t ring = size_t(warps) * kStages * (tiles == 2 ? kStageBytes<2> : kStageBytes<1>);
  const size_t red = size_t(warps) * tiles * 128 * sizeof(float);
  return std::max(ring, red);
}

// The instantiated configurations, and why each exists:
//   <bf16, 2>, <f32, 2>: the default: two tiles share each activation load, halving the
//                        L2 -> SM activation traffic (N / 16 CTAs x M x K x 2 bytes at
//                        one tile), fastest or tied on every measured shape.
//   <bf16, 1>, <f32, 1>: kept for the benchmark's --sweep (within 5% on qkv/gate_up).
//   pipelined <2>, <1>:  BF16 activations, 16-byte aligned rows, K % 8 == 0: the default
//                        where it applies (docs/perf.md); the plain kernel stays for F32
//                        activations, odd K and the benchmark's comparison.
template <typename Act>
cudaError_t launch_for(const Params& p, int tiles, int warps, bool pipelined, cudaStream_t stream) {
  const int ctas = (p.n_tiles + tiles - 1) / tiles;
  if constexpr (sizeof(Act) == 2) {
    if (pipelined) {
      const size_t smem = pipelined_smem_bytes(tiles, warps);
      // Above 48 KB of dynamic shared memory a kernel must opt in, once per device.
      static const cudaError_t opt_in = [] {
        const int most = int(pipelined_smem_bytes(2, kMaxWarps));
        cudaError_t e = cudaFuncSetAttribute(mxfp4_gemv_pipelined_kernel<2>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, most);
        if (e == cudaSuccess)
          e = cudaFuncSetAttribute(mxfp4_gemv_pipelined_kernel<1>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, most);
        return e;
      }();
      if (opt_in != cudaSuccess) return opt_in;
      if (tiles == 2)
        mxfp4_gemv_pipelined_kernel<2><<<ctas, warps * 32, smem, stream>>>(p);
      else
        mxfp4_gemv_pipelined_kernel<1><<<ctas, warps * 32, smem, stream>>>(p);
      return cudaGetLastError();
    }
  }
  const size_t smem = size_t(warps) * tiles * 128 * sizeof(float);
  if (tiles == 2)
    mxfp4_gemv_kernel<Act, 2><<<ctas, warps * 32, smem, stream>>>(p);
  else
    mxfp4_gemv_kernel<Act, 1><<<ctas, warps * 32, smem, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

void mxfp4_gemv_default_config(const GemvLaunch& l, int* tiles_per_cta, int* warps) {
  // Measured on an H100 (docs/perf.md, the --sweep table): two tiles per CTA won or tied on
  // every shape, and the best warp count kept about 1500-2000 warps in the grid (16 warps for
  // N = 2880..4096, 8 for 5120..5760, 2 for the 201088-row lm_head).
  const size_t ctas = std::max<size_t>(l.n_pad / kGemvRowsPerTile / 2, 1);
  const size_t warps_wanted = std::clamp<size_t>(2048 / ctas, 2, kMaxWarps);
  size_t pow2 = 1;
  while (pow2 * 2 <= warps_wanted) pow2 *= 2;
  *tiles_per_cta = 2;
  *warps = int(std::clamp<size_t>(std::min(pow2, l.k_chunks), 1, kMaxWarps));
}

int mxfp4_gemv_launch(const GemvLaunch& l, void* stream) {
  if (l.m == 0 || l.n == 0) return cudaSuccess;
  if (l.m > kGemvMaxM || l.n_pad % kGemvRowPad != 0) return cudaErrorInvalidValue;
  int tiles = l.tiles_per_cta, warps = l.warps;
  int def_tiles = 0, def_warps = 0;
  mxfp4_gemv_default_config(l, &def_tiles, &def_warps);
  if (tiles == 0) tiles = def_tiles;
  if (warps == 0) warps = def_warps;
  if ((tiles != 1 && tiles != 2) || warps < 1 || warps > kMaxWarps) return cudaErrorInvalidValue;

  Params p{};
  p.weights = static_cast<const uint4*>(l.weights);
  p.scales = static_cast<const uint32_t*>(l.scales);
  p.act = l.act;
  p.bias = l.bias;
  p.out = l.out;
  p.n = int(l.n), p.k = int(l.k), p.m = int(l.m);
  p.k_chunks = int(l.k_chunks);
  p.n_tiles = int(l.n_pad / kGemvRowsPerTile);
  p.out_bf16 = l.output == OutputFormat::bf16;
  p.special_scales = l.special_scales;
  const size_t elem = l.activation == ActivationFormat::bf16 ? 2 : 4;
  p.act_vector = (reinterpret_cast<uintptr_t>(l.act) % 16 == 0) && (l.k * elem) % 16 == 0;
  const bool can_pipeline = l.activation == ActivationFormat::bf16 && p.act_vector;
  if (l.pipelined == 1 && !can_pipeline) return cudaErrorInvalidValue;
  const bool pipelined = can_pipeline && l.pipelined != 0;
  const auto s = static_cast<cudaStream_t>(stream);
  return l.activation == ActivationFormat::bf16
             ? launch_for<__nv_bfloat16>(p, tiles, warps, pipelined, s)
             : launch_for<float>(p, tiles, warps, false, s);
}

int mxfp4_gemv_binary_version() {
  cudaFuncAttributes attr{};
  const cudaError_t status = cudaFuncGetAttributes(&attr, mxfp4_gemv_kernel<__nv_bfloat16, 1>);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return -int(status);
  }
  return attr.binaryVersion;
}

}  // namespace nibble
