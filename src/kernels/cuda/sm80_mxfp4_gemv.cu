// The device side of sm80_mxfp4_gemv; the layout, the decode and the reasons are in
// sm80_mxfp4_gemv.h. Host plumbing (prepare, checks, the LinearKernel) is in the .cpp.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "kernels/cuda/cuda_launch.cuh"
#include "kernels/cuda/sm80_mxfp4_gemv.h"

namespace nibble {
namespace {

using cuda_detail::pdl_launch_dependents;
using cuda_detail::pdl_wait;

constexpr int kMaxWarps = int(kGemvMaxWarps);
// Chunks a warp keeps in flight in registers (the one being decoded plus the rest ahead).
// The kernel is latency-bound (docs/perf.md): more chunks in flight is faster until registers
// run out. The H200 measured, 16 warps, Llama's gate|up 28672x4096 at M = 1: BF16 activations
// depth 3 23.3 us, depth 4 (128 registers, no spills) 21.7; F32 activations hold twice the
// activation registers: depth 3 spills (31.4 us), depth 2 does not (27.7).
template <typename Act>
constexpr int kPipelineDepth = sizeof(Act) == 2 ? 4 : 2;

struct Params {
  const uint4* weights;
  const uint32_t* scales;
  const void* act;
  const float* bias;
  void* out;
  int n, k, m, k_chunks, n_groups;  // n_groups: tile groups of kTiles tiles
  int team;                         // warps per group (a power of two dividing the CTA's)
  bool out_bf16, act_vector;
  // LinearEpilogue::swiglu. The SwiGLU kernels (kSwiglu) still test it at run time, so they
  // carry both epilogues and compile to f33529e's one kernel (the same SASS): with kSwiglu
  // alone, a smaller kernel with 5 spill accesses where this has 2, their gate|up product took
  // 23.8 us, with the flag 22.9 (H200, M = 1), and the decode 503 -> 514 tokens/s.
  bool swiglu;
  // Folded norms (FoldedNorm, linear_kernel.h). Activations: the rows' sums of squares in
  // in_partials [m][in_slots], of rows in_n wide. Output: residual [m][n], the norm's weight
  // and out_partials [m][out_slots].
  const float* in_partials;
  int in_slots;
  float in_n, in_eps;
  float* residual;
  const float* norm_weight;
  float* out_partials;
  int out_slots;
};

// The activations' folded norm: per-warp sums [warp][m], then the rows' scales (norm_scales).
constexpr size_t kNormSumsBytes = size_t(kMaxWarps) * kGemvMaxM * sizeof(float);

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t sel) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
  return d;
}

// ---- the decode table (sm80_mxfp4_gemv.h) ----------------------------------------------------
// BF16 bits of an E2M1 code: magnitude 0 and 0.5 by hand, the rest 2^(e-1) (1 + m/2).
__device__ __forceinline__ uint32_t e2m1_bf16_bits(uint32_t code) {
  const uint32_t mag = code & 7;
  const uint32_t bits = mag < 2 ? mag * 0x3f00u : (((mag >> 1) + 126) << 7) | ((mag & 1) << 6);
  return bits | (code & 8) << 12;
}

// Row b (256 bytes) holds 32 copies, one per lane, of the bf16x2 of byte b's two codes; the
// other half of the row is unused (the row stride is what one PRMT can produce, see below).
// `table` is 64 KB-aligned in the shared window. Four 16-byte stores per thread at 512.
__device__ __forceinline__ void build_lut(unsigned char* table) {
  for (int e = threadIdx.x; e < 256 * 8; e += blockDim.x) {
    const uint32_t b = e >> 3;
    const uint32_t v = e2m1_bf16_bits(b & 15) | e2m1_bf16_bits(b >> 4) << 16;
    *reinterpret_cast<uint4*>(table + b * 256 + (e & 7) * 16) = make_uint4(v, v, v, v);
  }
}

// One packed word (4 bytes = 4 A-fragment registers) through the table. `lane_entry` is the
// shared address of the lane's copy in row 0 (table + 4 * lane, the table 64 KB-aligned), so
// the address of row b is lane_entry with b as byte 1: one PRMT of the word's byte p into it.
__device__ __forceinline__ void decode_word(uint32_t lane_entry, uint32_t w, uint32_t (&a)[4]) {
#pragma unroll
  for (int p = 0; p < 4; ++p)
    asm volatile("ld.shared.u32 %0, [%1];"
                 : "=r"(a[p])
                 : "r"(prmt(w, lane_entry, 0x7604u | (p << 4))));
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

// ---- one chunk's loads, held in registers ---------------------------------------------------
// The 8 activations act[row][k0 .. k0+7] of a lane per block, as 4 bf16x2 (BF16) or 8 (F32:
// two BF16 terms, hi = bf16(a) and lo = bf16(a - hi), each multiplied by the exact BF16
// weights: about 16 significant bits of every activation survive, where one BF16 term keeps 8).
template <typename Act>
constexpr int kActWords = sizeof(Act) == 2 ? 4 : 8;  // raw 32-bit words per lane and block

template <typename Act, int kTiles>
struct Chunk {
  uint4 w[kTiles];                  // the lane's 16 weight bytes per tile
  uint32_t s[kTiles];               // its scale word per tile
  uint32_t a[2][kActWords<Act>];    // raw activations (BF16 pairs or F32 bits) per block
};

// Raw activations of one block from the lane's activation row: with kFullK (K a multiple of
// the 64-wide chunk, rows 16-byte aligned) always whole 16-byte loads, with no bound checks in
// the loop; otherwise 16-byte loads where rows allow (act_vector: rows 16-byte aligned, K x
// element size a multiple of 16) and the run lies inside K, else element by element; zero
// past K.
template <typename Act>
__device__ __forceinline__ void load_act_vector(const Act* src, uint32_t (&a)[kActWords<Act>]) {
#pragma unroll
  for (int q = 0; q < kActWords<Act> / 4; ++q) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(src) + q);
    a[4 * q] = v.x, a[4 * q + 1] = v.y, a[4 * q + 2] = v.z, a[4 * q + 3] = v.w;
  }
}

template <typename Act, bool kFullK>
__device__ __forceinline__ void load_act(const Params& p, const Act* row, int k0,
                                         uint32_t (&a)[kActWords<Act>]) {
  const Act* src = row + k0;
  if constexpr (kFullK) {
    load_act_vector<Act>(src, a);
  } else {
#pragma unroll
    for (int i = 0; i < kActWords<Act>; ++i) a[i] = 0;
    if (k0 >= p.k) return;
    if (p.act_vector && k0 + 8 <= p.k) return load_act_vector<Act>(src, a);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      if (k0 + i >= p.k) break;
      if constexpr (sizeof(Act) == 2)
        a[i / 2] |= uint32_t(__bfloat16_as_ushort(src[i])) << (16 * (i % 2));
      else
        a[i] = __float_as_uint(src[i]);
    }
  }
}

// The B fragments of one block: BF16 as loaded; F32 split into hi (b[0..3]) and lo (b[4..7]).
template <typename Act>
__device__ __forceinline__ void act_fragments(const uint32_t (&a)[kActWords<Act>],
                                              uint32_t (&b)[kActWords<Act>]) {
  if constexpr (sizeof(Act) == 2) {
#pragma unroll
    for (int i = 0; i < 4; ++i) b[i] = a[i];
  } else {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float x = __uint_as_float(a[2 * i]), y = __uint_as_float(a[2 * i + 1]);
      const __nv_bfloat162 hi = __floats2bfloat162_rn(x, y);
      const float2 back = __bfloat1622float2(hi);
      b[i] = *reinterpret_cast<const uint32_t*>(&hi);
      b[4 + i] = pack_bf16(x - back.x, y - back.y);
    }
  }
}

// One K chunk (two MX blocks) of kTiles tiles into the accumulators: decode, mma, and the
// blocks' power-of-two scales applied to their partial sums (kSpecial: the exact path for
// scale codes 0 and 255).
template <typename Act, int kTiles, bool kSpecial>
__device__ __forceinline__ void accumulate_chunk(uint32_t lane_entry, const Chunk<Act, kTiles>& ch,
                                                 float (&acc)[kTiles][4]) {
  uint32_t b[2][kActWords<Act>];
  act_fragments<Act>(ch.a[0], b[0]);
  act_fragments<Act>(ch.a[1], b[1]);
#pragma unroll
  for (int tt = 0; tt < kTiles; ++tt) {
    const uint32_t words[4] = {ch.w[tt].x, ch.w[tt].y, ch.w[tt].z, ch.w[tt].w};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      uint32_t a[4];
      decode_word(lane_entry, words[2 * j], a);
      mma_bf16(c, a, b[j][0], b[j][1]);
      if constexpr (kActWords<Act> == 8) mma_bf16(c, a, b[j][4], b[j][5]);
      decode_word(lane_entry, words[2 * j + 1], a);
      mma_bf16(c, a, b[j][2], b[j][3]);
      if constexpr (kActWords<Act> == 8) mma_bf16(c, a, b[j][6], b[j][7]);
      const uint32_t e_g = (ch.s[tt] >> (8 * j)) & 0xff;
      const uint32_t e_g8 = (ch.s[tt] >> (8 * j + 16)) & 0xff;
      const float sg = kSpecial ? scale_exact(e_g) : scale_fast(e_g);
      const float sg8 = kSpecial ? scale_exact(e_g8) : scale_fast(e_g8);
      acc[tt][0] = fmaf(c[0], sg, acc[tt][0]);
      acc[tt][1] = fmaf(c[1], sg, acc[tt][1]);
      acc[tt][2] = fmaf(c[2], sg8, acc[tt][2]);
      acc[tt][3] = fmaf(c[3], sg8, acc[tt][3]);
    }
  }
}

// The team's barrier: named barrier 1 + team index over the team's warps (a one-warp team
// needs only its own convergence).
__device__ __forceinline__ void team_sync(int team_index, int team_warps) {
  if (team_warps == 1)
    __syncwarp();
  else
    asm volatile("bar.sync %0, %1;" ::"r"(1 + team_index), "r"(team_warps * 32) : "memory");
}

__device__ __forceinline__ void store_out(const Params& p, size_t at, float v) {
  if (p.out_bf16)
    static_cast<__nv_bfloat16*>(p.out)[at] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p.out)[at] = v;
}

// The activations' folded norm, before the main loop: each thread sums its slots of every row
// in order, each warp its lanes (a fixed shuffle tree), into sums[warp][m]; after a CTA
// barrier thread m adds the warps in order (every CTA gets the same bits) into sums[m], as
// rms_norm's scale 1 / sqrt(mean of squares + eps), which the epilogue reads. One row at a
// time: the H200's decode (M = 1) ran 539 tokens/s so against 514 without the fold, 534 with
// every row's lines first prefetched into L1, and no faster than without the fold with the
// rows summed at once or split over the warps (ptxas schedules the SwiGLU kernels' main loop
// differently for each); at M = 8 the rows' L2 trips in turn cost the prompt ~2 %
// (docs/perf.md).
__device__ __forceinline__ void norm_scales(const Params& p, float* sums) {
#pragma unroll 1
  for (int m = 0; m < p.m; ++m) {
    float sum = 0.0f;
    for (int j = threadIdx.x; j < p.in_slots; j += blockDim.x)
      sum += p.in_partials[m * p.in_slots + j];
    for (int d = 16; d >= 1; d /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, d);
    if ((threadIdx.x & 31) == 0) sums[(threadIdx.x >> 5) * kGemvMaxM + m] = sum;
  }
  __syncthreads();
  float squares = 0.0f;
  if (int(threadIdx.x) < p.m)
    for (int w = 0; w < int(blockDim.x >> 5); ++w) squares += sums[w * kGemvMaxM + threadIdx.x];
  __syncthreads();
  if (int(threadIdx.x) < p.m) sums[threadIdx.x] = 1.0f / sqrtf(squares / p.in_n + p.in_eps);
}

// Cross-warp reduction within a team: red[warp in team][tile][reg][lane] (the team's region of
// team * kTiles * 128 floats), summed in warp order (deterministic); the activations' norm
// scale, bias, the epilogue, the output's folded norm, format, and the output store. Two team
// barriers: the region is free again when it returns.
template <int kTiles, bool kSwiglu>
__device__ __forceinline__ void reduce_and_store(const Params& p, const float (&acc)[kTiles][4],
                                                 float* red, const float* norm_sums,
                                                 int team_index, int tile0) {
  const int lane = threadIdx.x & 31, mate = (threadIdx.x >> 5) % p.team;
  if (!kSwiglu && p.residual && mate == 0) {
    // The folded norm's x rows (one 128-byte line per m) and weights of the group's rows into
    // L1 while the team reduces: below they are read one output at a time.
    const int row0 = tile0 * 16;
    if (lane < p.m)
      asm volatile("prefetch.global.L1 [%0];" ::"l"(p.residual + size_t(lane) * p.n + row0));
    else if (lane == p.m)
      asm volatile("prefetch.global.L1 [%0];" ::"l"(p.norm_weight + row0));
  }
#pragma unroll
  for (int tt = 0; tt < kTiles; ++tt)
#pragma unroll
    for (int r = 0; r < 4; ++r) red[((mate * kTiles + tt) * 4 + r) * 32 + lane] = acc[tt][r];
  team_sync(team_index, p.team);
  const auto team_sum = [&](int i) {
    float sum = 0.0f;
    for (int wi = 0; wi < p.team; ++wi) sum += red[wi * kTiles * 128 + i];
    return sum;
  };
  // Row m's norm scale (norm_scales), where the activations carry a folded norm.
  const auto scale = [&](int m) { return p.in_partials ? norm_sums[m] : 1.0f; };
  if (kSwiglu && p.swiglu) {
    // Registers r and r + 2 of a lane are rows g and g + 8: the gate and up terms of one pair.
    const int half = p.n / 2;
    for (int i = mate * 32 + lane; i < kTiles * 64; i += p.team * 32) {
      const int tt = i / 64, r = (i / 32) % 2, ln = i % 32;
      const int pair = (tile0 + tt) * 8 + (ln >> 2), m = 2 * (ln & 3) + r;
      float gate = scale(m) * team_sum((tt * 4 + r) * 32 + ln);
      float up = scale(m) * team_sum((tt * 4 + r + 2) * 32 + ln);
      if (pair >= half || m >= p.m) continue;
      if (p.bias) gate += p.bias[pair], up += p.bias[half + pair];
      store_out(p, size_t(m) * half + pair, gate / (1.0f + expf(-gate)) * up);  // the models' silu
    }
  } else {
    // The loop's trip count is the warp's (i / 32 is), so the shuffles below see every lane.
    for (int i = mate * 32 + lane; i < kTiles * 128; i += p.team * 32) {
      const int tt = i / 128, r = (i / 32) % 4, ln = i % 32;
      const int row = (tile0 + tt) * 16 + (ln >> 2) + (r >= 2 ? 8 : 0);
      const int m = 2 * (ln & 3) + (r & 1);
      float sum = scale(m) * team_sum(i);
      const bool valid = row < p.n && m < p.m;
      if (valid && p.bias) sum += p.bias[row];
      if (!kSwiglu && p.residual) {
        // The output's folded norm: x += the product, out = weight * x, and the sum of x^2
        // over these 8 rows (lanes 4 apart hold the rows of one m) as the slot row / 8.
        float x = 0.0f;
        if (valid) {
          const size_t at = size_t(m) * p.n + row;
          x = p.residual[at] + sum;
          p.residual[at] = x;
          store_out(p, at, p.norm_weight[row] * x);
        }
        float squares = x * x;
        for (int d = 4; d < 32; d *= 2) squares += __shfl_xor_sync(0xffffffffu, squares, d);
        const int slot = row / 8;
        if (ln < 4 && m < p.m && slot < p.out_slots)
          p.out_partials[m * p.out_slots + slot] = squares;
        continue;
      }
      if (valid) store_out(p, size_t(m) * p.n + row, sum);
    }
  }
  team_sync(team_index, p.team);
}

template <int kTiles>
__host__ __device__ constexpr size_t reduce_bytes(int warps) { return size_t(warps) * kTiles * 128 * sizeof(float); }
// The folded norm's sums, the reduction buffer, then up to 64 KB of padding so the table
// starts 64 KB-aligned in the shared window (its base is not known at compile time: sm_90
// reserves the first 1 KB).
template <int kTiles>
constexpr size_t shared_bytes(int warps) {
  return kNormSumsBytes + reduce_bytes<kTiles>(warps) + 2 * kGemvLutBytes;
}

// The kernel: a persistent grid of CTAs, each split into teams of p.team warps. Team j of CTA
// c takes tile groups c * teams + j, then + grid * teams, ...; within a group the team's warps
// split the K chunks (chunk = mate, mate + team, ...). Long K wants one team of 16 warps;
// short K wants several teams, each reducing less often. Each warp streams its chunks, across
// group boundaries, through a register pipeline: the loads of chunk i + kDepth - 1 are issued
// before chunk i is decoded, so they are in flight while it is (and while a group is reduced).
// The loop is unrolled by kDepth so every pipeline slot is a fixed set of registers.
template <typename Act, int kTiles, bool kSpecial, bool kFullK, bool kSwiglu>
__global__ void __launch_bounds__(kMaxWarps * 32) mxfp4_gemv_kernel(const Params p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int team = warp / p.team, mate = warp % p.team, teams = warps / p.team;
  float* norm_sums = reinterpret_cast<float*>(smem);
  float* red = reinterpret_cast<float*>(smem + kNormSumsBytes) + team * p.team * kTiles * 128;
  const uint32_t after_red =
      shared_address(smem) + uint32_t(kNormSumsBytes + reduce_bytes<kTiles>(warps));
  const uint32_t table = (after_red + kGemvLutBytes - 1) & ~uint32_t(kGemvLutBytes - 1);
  const uint32_t lane_entry = table + 4 * lane;

  const int first = blockIdx.x * teams + team, stride = gridDim.x * teams;
  const int per_group = mate < p.k_chunks ? (p.k_chunks - mate + p.team - 1) / p.team : 0;
  const int groups = first < p.n_groups ? (p.n_groups - 1 - first) / stride + 1 : 0;
  const int total = per_group * groups;
  const int k_first = mate * 64 + 8 * t;  // the lane's first activation of chunk `mate`
  // The load cursor, in consumption order: the next chunk's uint4 offset in tile 0 of its group
  // (32 bits reach 64 GB of weights; its scale word is that offset / 4: chunk * 8 + g) and its
  // index in the group. A step is `team` chunks; after a group's last, the cursor jumps to
  // chunk `mate` of the next group.
  const uint32_t first_chunk = uint32_t(first * kTiles) * uint32_t(p.k_chunks) + mate;
  const uint32_t group_jump = uint32_t(stride * kTiles) * uint32_t(p.k_chunks) - uint32_t(per_group * p.team);
  uint32_t next_w = first_chunk * 32 + lane;
  int next_index = 0;
  // Weights and scales, which no kernel writes; then the activations, which the kernel before
  // this one may. The lane's row is g; lanes of rows >= M load row M - 1 instead, so every load
  // is unconditional: B's columns >= M then hold a copy, and their outputs are never stored.
  const auto load_weights = [&](Chunk<Act, kTiles>& ch) {
#pragma unroll
    for (int tt = 0; tt < kTiles; ++tt) {
      const uint32_t at = next_w + uint32_t(tt * p.k_chunks) * 32;
      ch.w[tt] = __ldcs(p.weights + at);  // streamed once: evict first
      ch.s[tt] = __ldg(p.scales + (at >> 2));
    }
  };
  const auto load_acts = [&](Chunk<Act, kTiles>& ch, int index) {
    const Act* row = static_cast<const Act*>(p.act) + size_t(min(g, p.m - 1)) * p.k;
    const int k0 = k_first + index * p.team * 64;
    load_act<Act, kFullK>(p, row, k0, ch.a[0]);
    load_act<Act, kFullK>(p, row, k0 + 32, ch.a[1]);
  };
  const auto advance = [&] {
    next_w += uint32_t(p.team) * 32;
    if (++next_index == per_group) next_index = 0, next_w += group_jump * 32;
  };
  const auto load = [&](Chunk<Act, kTiles>& ch) {
    load_weights(ch);
    load_acts(ch, next_index);
    advance();
  };

  // Chained (cuda_launch.cuh): the first weights and the table while the kernel before this
  // one finishes; its output (our activations) and our output buffer only after pdl_wait.
  pdl_launch_dependents();
  constexpr int kDepth = kPipelineDepth<Act>;
  Chunk<Act, kTiles> slot[kDepth];
#pragma unroll
  for (int d = 0; d < kDepth - 1; ++d)
    if (d < total) load_weights(slot[d]), advance();
  build_lut(smem + (table - shared_address(smem)));  // while the first loads are in flight
  pdl_wait();
#pragma unroll
  for (int d = 0; d < kDepth - 1; ++d)  // the cursor started at index 0 of the first group
    if (d < total) load_acts(slot[d], d % per_group);
  if (p.in_partials) norm_scales(p, norm_sums);  // its loads beside the activations'
  __syncthreads();

  // Warps with no chunks (K shorter than the team) still take part in every reduction.
  if (total == 0) {
    const float zero[kTiles][4] = {};
    for (int group = first; group < p.n_groups; group += stride)
      reduce_and_store<kTiles, kSwiglu>(p, zero, red, norm_sums, team, group * kTiles);
    return;
  }
  float acc[kTiles][4] = {};
  int left = per_group, group = first;  // chunks left in the current group
  // Chunk i + d from slot d, refilled first with chunk i + d + kDepth - 1 when there is one.
  const auto step = [&](int d, bool refill) {
    if (refill) load(slot[(d + kDepth - 1) % kDepth]);
    accumulate_chunk<Act, kTiles, kSpecial>(lane_entry, slot[d], acc);
    if (--left == 0) {
      reduce_and_store<kTiles, kSwiglu>(p, acc, red, norm_sums, team, group * kTiles);
#pragma unroll
      for (int tt = 0; tt < kTiles; ++tt)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[tt][r] = 0.0f;
      left = per_group, group += stride;
    }
  };
  int i = 0;
  // While every refill of a round exists, the round checks no bounds; the last rounds do.
  for (; i + 2 * kDepth - 2 < total; i += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) step(d, true);
  }
  for (; i < total; i += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      if (i + d >= total) break;
      step(d, i + d + kDepth - 1 < total);
    }
  }
}

// Per instantiated kernel, once: the opt-in to more than 48 KB of dynamic shared memory (up
// to the device's limit), and how many CTAs of each warp count fit on one SM.
struct KernelSlot {
  std::atomic<int> opt_in{0};  // 0 unknown, 1 done, -error
  std::atomic<int> per_sm[kMaxWarps + 1];
};

template <typename Act, int kTiles, bool kSpecial, bool kFullK, bool kSwiglu>
cudaError_t launch_one(const Params& p, int warps, int multiprocessors, bool chained,
                       cudaStream_t stream) {
  static KernelSlot slot;
  const auto kernel = mxfp4_gemv_kernel<Act, kTiles, kSpecial, kFullK, kSwiglu>;
  const size_t smem = shared_bytes<kTiles>(warps);
  if (slot.opt_in.load() == 0) {
    int device = 0, most = 0;
    cudaError_t e = cudaGetDevice(&device);
    if (e == cudaSuccess)
      e = cudaDeviceGetAttribute(&most, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    if (e == cudaSuccess)
      e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, most);
    slot.opt_in.store(e == cudaSuccess ? 1 : -int(e));
  }
  if (slot.opt_in.load() < 0) return cudaError_t(-slot.opt_in.load());
  int per_sm = slot.per_sm[warps].load();
  if (per_sm == 0) {
    const cudaError_t e =
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, warps * 32, smem);
    if (e != cudaSuccess) return e;
    if (per_sm == 0) return cudaErrorInvalidConfiguration;  // does not fit on this device
    slot.per_sm[warps].store(per_sm);
  }
  const int teams = warps / p.team;
  const int grid = std::min((p.n_groups + teams - 1) / teams, per_sm * multiprocessors);
  return cuda_detail::launch(kernel, dim3(grid), dim3(warps * 32), smem, stream, chained, p);
}

// The instantiated configurations: tiles 2 (the default: two tiles share each activation
// load, halving the L2 -> SM activation traffic) and 1 (the benchmark's --sweep), each with
// the fast and the exact scale path, and with and without the whole-chunk activation loads;
// the SwiGLU epilogue with two tiles only.
template <typename Act, int kTiles, bool kSwiglu>
cudaError_t launch_tiles(const Params& p, int warps, bool special, bool full_k, int sms, bool chained,
                         cudaStream_t stream) {
  if (full_k)
    return special ? launch_one<Act, kTiles, true, true, kSwiglu>(p, warps, sms, chained, stream)
                   : launch_one<Act, kTiles, false, true, kSwiglu>(p, warps, sms, chained, stream);
  return special ? launch_one<Act, kTiles, true, false, kSwiglu>(p, warps, sms, chained, stream)
                 : launch_one<Act, kTiles, false, false, kSwiglu>(p, warps, sms, chained, stream);
}

// swiglu: the LinearEpilogue::swiglu kernels (kSwiglu; the plain ones carry no code for it).
template <typename Act>
cudaError_t launch_for(const Params& p, int tiles, int warps, bool special, bool swiglu, int sms,
                       bool chained, cudaStream_t stream) {
  const bool full_k = p.act_vector && p.k % int(kGemvChunkK) == 0;
  if (swiglu) return launch_tiles<Act, 2, true>(p, warps, special, full_k, sms, chained, stream);
  return tiles == 2 ? launch_tiles<Act, 2, false>(p, warps, special, full_k, sms, chained, stream)
                    : launch_tiles<Act, 1, false>(p, warps, special, full_k, sms, chained, stream);
}

bool act_vector_possible(const GemvLaunch& l) {
  const size_t elem = activation_format_bytes(l.activation);
  return reinterpret_cast<uintptr_t>(l.act) % 16 == 0 && (l.k * elem) % 16 == 0;
}

}  // namespace

void mxfp4_gemv_default_config(const GemvLaunch& l, int* tiles_per_cta, int* warps, int* team) {
  // Two tiles per CTA and 16 warps: one CTA per SM holds the 64 KB table, so that CTA's warps
  // are all the SM's memory parallelism (on the H200, time fell 1.4x from 8 to 16 warps and
  // no further at 20). The team size minimizes the busiest warp's time: its groups times (its
  // share of K + one reduction, which costs about 0.7 chunk), with as many CTAs as the groups
  // need up to one per SM; ties go to the smaller team. Measured on the H200 (docs/perf.md):
  // the 201088-row lm_head 142.7 us with one team of 16, 110.3 with 16 teams of 1; 2880-row
  // layers (90 groups) want all 16 warps on each group, or half the SMs idle.
  *tiles_per_cta = 2;
  *warps = kMaxWarps;
  const size_t groups = std::max<size_t>(l.n_pad / kGemvRowsPerTile / 2, 1);
  const size_t sms = size_t(std::max(l.multiprocessors, 1)), chunks = std::max<size_t>(l.k_chunks, 1);
  size_t best = SIZE_MAX;
  for (int t = kMaxWarps; t >= 1; t /= 2) {
    const size_t teams = kMaxWarps / t, grid = std::min((groups + teams - 1) / teams, sms);
    const size_t work = (groups + teams * grid - 1) / (teams * grid) * (10 * ((chunks + t - 1) / t) + 7);
    if (work <= best) best = work, *team = t;
  }
}

int mxfp4_gemv_launch(const GemvLaunch& l, void* stream) {
  if (l.m == 0 || l.n == 0) return cudaSuccess;
  if (l.m > kGemvMaxM || l.n_pad % kGemvRowPad != 0) return cudaErrorInvalidValue;
  int tiles = l.tiles_per_cta, warps = l.warps, team = l.team;
  int def_tiles = 0, def_warps = 0, def_team = 0;
  mxfp4_gemv_default_config(l, &def_tiles, &def_warps, &def_team);
  if (tiles == 0) tiles = def_tiles;
  if (warps == 0) warps = def_warps;
  if (team == 0) team = std::min(def_team, warps);
  if ((tiles != 1 && tiles != 2) || warps < 1 || warps > kMaxWarps || team < 1 ||
      warps % team != 0)
    return cudaErrorInvalidValue;
  const bool vector_possible = act_vector_possible(l);
  if (l.act_vector == 1 && !vector_possible) return cudaErrorInvalidValue;

  Params p{};
  p.weights = static_cast<const uint4*>(l.weights);
  p.scales = static_cast<const uint32_t*>(l.scales);
  p.act = l.act;
  p.bias = l.bias;
  p.out = l.out;
  p.n = int(l.n), p.k = int(l.k), p.m = int(l.m);
  p.k_chunks = int(l.k_chunks);
  p.n_groups = int(l.n_pad / kGemvRowsPerTile / tiles);
  p.team = team;
  p.out_bf16 = l.output == OutputFormat::bf16;
  p.act_vector = vector_possible && l.act_vector != 0;
  const bool swiglu = p.swiglu = l.epilogue == LinearEpilogue::swiglu;
  if (swiglu && (l.n % 2 != 0 || tiles != 2)) return cudaErrorInvalidValue;
  if (const FoldedNorm& in = l.act_norm; in.partials) {
    if (in.n == 0 || folded_norm_slots(in.n) >= (size_t(1) << 31) / kGemvMaxM)
      return cudaErrorInvalidValue;
    p.in_partials = in.partials;
    p.in_slots = int(folded_norm_slots(in.n));
    p.in_n = float(in.n), p.in_eps = in.eps;
  }
  if (const FoldedNorm& out = l.out_norm; out.partials) {
    if (swiglu || out.n != l.n || !out.residual || !out.weight) return cudaErrorInvalidValue;
    p.residual = out.residual, p.norm_weight = out.weight, p.out_partials = out.partials;
    p.out_slots = int(folded_norm_slots(l.n));
  }
  const auto s = static_cast<cudaStream_t>(stream);
  return l.activation == ActivationFormat::bf16
             ? launch_for<__nv_bfloat16>(p, tiles, warps, l.special_scales, swiglu,
                                         l.multiprocessors, l.chained, s)
             : launch_for<float>(p, tiles, warps, l.special_scales, swiglu, l.multiprocessors,
                                 l.chained, s);
}

int mxfp4_gemv_binary_version() {
  cudaFuncAttributes attr{};
  const cudaError_t status =
      cudaFuncGetAttributes(&attr, mxfp4_gemv_kernel<__nv_bfloat16, 2, false, true, false>);
  if (status != cudaSuccess) {
    cudaGetLastError();
    return -int(status);
  }
  return attr.binaryVersion;
}

}  // namespace nibble
