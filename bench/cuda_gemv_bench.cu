// cuda_gemv_bench: the MXFP4 decode GEMV (sm80_mxfp4_gemv) against cuBLAS BF16 (cublasLt) and
// the device's copy bandwidth, measured in one process.
//
//   cuda_gemv_bench [--json FILE] [--reps N] [--sweep] [--quick] [--llama] [--activations f32]
//
// Per shape N x K and M in {1, 2, 4, 8}, BF16 activations (ours F32 with --activations f32,
// the same values) and BF16 output:
//   - ours: CUDA-graph replays of G launches that rotate through copies of the packed weights
//     (>= 200 MB in all, so no launch finds its weights in L2); per launch = replay / G;
//     the median over --reps replays;
//   - cuBLAS BF16: cublasLt TN GEMM (W [N,K] BF16 x act^T, FP32 compute, BF16 out), the
//     heuristic's top 8 algorithms each timed the same way, the fastest kept;
//   - copy: cudaMemcpyAsync device to device of 1 GiB, bandwidth = (read + written) / time.
//   - read: a kernel that only streams the same packed weight and scale bytes (16-byte loads,
//     as many CTAs as fit), timed the same way: what any kernel over these bytes costs on this
//     device, launch and ramp-up included, for the small shapes where those weigh;
//   - element: ours with the activations read element by element instead of 16 bytes at a time;
//   - chained: ours launched chained (PDL, as a model's forward launches it): each launch's
//     first weight loads and decode table overlap the launch before it.
// Floor = (packed weight + scale + activation + output bytes) / copy bandwidth.
// --sweep also times configurations of ours (tiles per CTA, warps per CTA, warps per team).
// --llama: the decode products of a Llama-3-8B-shaped model instead of the issue's shapes,
// gate|up twice: plain, and with the SwiGLU epilogue as the model runs it (output N/2 rows).
#include <CLI/CLI.hpp>
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_stats.h"
#include "format/float16.h"
#include "kernels/cuda/sm80_mxfp4_gemv.h"

namespace {

void check(cudaError_t s, const char* what, int line) {
  if (s != cudaSuccess) {
    std::fprintf(stderr, "cuda_gemv_bench:%d: CUDA error %d %s (%s) in %s\n", line, int(s),
                 cudaGetErrorName(s), cudaGetErrorString(s), what);
    std::exit(1);
  }
}
void check_lt(cublasStatus_t s, const char* what, int line) {
  if (s != CUBLAS_STATUS_SUCCESS) {
    std::fprintf(stderr, "cuda_gemv_bench:%d: cuBLAS error %d in %s\n", line, int(s), what);
    std::exit(1);
  }
}
#define CHECK(x) check((x), #x, __LINE__)
#define CHECK_LT(x) check_lt((x), #x, __LINE__)

constexpr size_t kRotateBytes = size_t(200) << 20;

uint64_t g_rng = 0x9e3779b97f4a7c15ull;
uint64_t next_random() {  // xorshift64*: fast enough for 600 MB of random weights
  g_rng ^= g_rng >> 12, g_rng ^= g_rng << 25, g_rng ^= g_rng >> 27;
  return g_rng * 0x2545f4914f6cdd1dull;
}
void fill_random(uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = next_random();
    std::memcpy(p + i, &v, std::min<size_t>(8, n - i));
  }
}
uint16_t random_bf16() {  // roughly N(0,1)-sized values, never zero
  const float f = (float(next_random() >> 40) / float(1 << 24) - 0.5f) * 4.0f + 1e-3f;
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return uint16_t(b >> 16);
}

// Median per-call microseconds of `launch(i)` for i = 0..G-1 captured in one graph.
template <typename F>
double time_graph(cudaStream_t stream, int calls, int reps, F launch) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < calls; ++i) launch(i);
  CHECK(cudaStreamEndCapture(stream, &graph));
  CHECK(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  for (int w = 0; w < 3; ++w) CHECK(cudaGraphLaunch(exec, stream));  // warm-up
  std::vector<double> us;
  for (int r = 0; r < reps; ++r) {
    CHECK(cudaEventRecord(start, stream));
    CHECK(cudaGraphLaunch(exec, stream));
    CHECK(cudaEventRecord(stop, stream));
    CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    us.push_back(ms * 1000.0 / calls);
  }
  CHECK(cudaGetLastError());
  CHECK(cudaGraphExecDestroy(exec));
  CHECK(cudaGraphDestroy(graph));
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  return nibble::bench::median(us);
}

__global__ void copy_kernel(const uint4* __restrict__ a, uint4* __restrict__ b, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x)
    b[i] = a[i];
}

// The better of cudaMemcpyAsync and a 16-byte-per-thread copy kernel (the memcpy engine path
// measured ~2.4 TB/s on the H100 where a kernel reaches more): the floor must not flatter us.
double copy_bandwidth(cudaStream_t stream, int reps) {
  const size_t bytes = size_t(1) << 30;
  void *a, *b;
  CHECK(cudaMalloc(&a, bytes));
  CHECK(cudaMalloc(&b, bytes));
  CHECK(cudaMemset(a, 1, bytes));
  const double memcpy_us = time_graph(stream, 4, reps, [&](int) {
    CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  int sms = 0;
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const double kernel_us = time_graph(stream, 4, reps, [&](int) {
    copy_kernel<<<sms * 8, 512, 0, stream>>>(static_cast<const uint4*>(a), static_cast<uint4*>(b),
                                              bytes / 16);
  });
  std::printf("copy: cudaMemcpyAsync %.0f GB/s, copy kernel %.0f GB/s (read + written)\n",
              2.0 * double(bytes) / (memcpy_us * 1e-6) / 1e9,
              2.0 * double(bytes) / (kernel_us * 1e-6) / 1e9);
  const double us = std::min(memcpy_us, kernel_us);
  CHECK(cudaFree(a));
  CHECK(cudaFree(b));
  return 2.0 * double(bytes) / (us * 1e-6);  // bytes/s, read + written
}

// Reads n 16-byte words of weights and m of scales once; stores only if the XOR of all of
// them hits a value chosen so it never does, which keeps every load.
__global__ void read_kernel(const uint4* __restrict__ w, size_t n, const uint4* __restrict__ s,
                            size_t m, uint32_t* sink) {
  uint32_t x = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n + m; i += stride) {
    const uint4 v = __ldcs(i < n ? w + i : s + (i - n));
    x ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (x == 0x9e3779b9u && threadIdx.x == 0x3ff) *sink = x;
}

struct Shape {
  size_t n, k;
  const char* name;
  nibble::LinearEpilogue epilogue = nibble::LinearEpilogue::none;
};

struct Result {
  Shape shape;
  size_t m;
  double ours_us, element_us, chained_us, read_us, cublas_us, floor_us, bytes;
  int tiles, warps, team;
};

// cuBLAS BF16: out[M,N] = act[M,K] W[N,K]^T as column-major C[N,M] = op_T(W[K,N]) act[K,M].
struct LtGemm {
  cublasLtHandle_t handle;
  void* workspace;
  size_t workspace_bytes = size_t(32) << 20;
  LtGemm() {
    CHECK_LT(cublasLtCreate(&handle));
    CHECK(cudaMalloc(&workspace, workspace_bytes));
  }
  ~LtGemm() {
    cublasLtDestroy(handle);
    cudaFree(workspace);
  }
  double best_us(cudaStream_t stream, size_t n, size_t k, size_t m,
                 const std::vector<void*>& weights, const void* act, void* out, int reps,
                 int calls) {
    cublasLtMatmulDesc_t op;
    CHECK_LT(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    CHECK_LT(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    cublasLtMatrixLayout_t la, lb, lc;
    CHECK_LT(cublasLtMatrixLayoutCreate(&la, CUDA_R_16BF, k, n, k));
    CHECK_LT(cublasLtMatrixLayoutCreate(&lb, CUDA_R_16BF, k, m, k));
    CHECK_LT(cublasLtMatrixLayoutCreate(&lc, CUDA_R_16BF, n, m, n));
    cublasLtMatmulPreference_t pref;
    CHECK_LT(cublasLtMatmulPreferenceCreate(&pref));
    CHECK_LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &workspace_bytes, sizeof workspace_bytes));
    cublasLtMatmulHeuristicResult_t heur[8];
    int found = 0;
    CHECK_LT(cublasLtMatmulAlgoGetHeuristic(handle, op, la, lb, lc, lc, pref, 8, heur, &found));
    const float alpha = 1.0f, beta = 0.0f;
    double best = 1e30;
    for (int a = 0; a < found; ++a) {
      if (heur[a].state != CUBLAS_STATUS_SUCCESS) continue;
      const double us = time_graph(stream, calls, reps, [&](int i) {
        CHECK_LT(cublasLtMatmul(handle, op, &alpha, weights[i % weights.size()], la, act, lb,
                                &beta, out, lc, out, lc, &heur[a].algo, workspace,
                                workspace_bytes, stream));
      });
      best = std::min(best, us);
    }
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
    return best;
  }
};

}  // namespace

int main(int argc, char** argv) {
  using namespace nibble;
  std::string json_path;
  int reps = 30;
  bool sweep = false, quick = false, llama = false;
  CLI::App app{"The MXFP4 decode GEMV against cuBLAS BF16, a read-only kernel and the copy bandwidth"};
  app.add_option("--json", json_path, "also write every row as JSON to this file");
  app.add_option("--reps", reps, "graph replays per measurement (the median is kept)")
      ->check(CLI::Range(3, 100000))->capture_default_str();
  app.add_flag("--sweep", sweep, "also time configurations of ours (tiles, warps, teams)");
  app.add_flag("--quick", quick, "the first two shapes only");
  std::string only;
  app.add_option("--shape", only, "only the shapes whose name contains this (e.g. down, for a profiler)");
  app.add_flag("--llama", llama,
               "Llama-3-8B's decode products instead (q|k|v and gate|up fused, as the model runs them)");
  std::string activations = "bf16";
  app.add_option("--activations", activations, "our activation format (cuBLAS stays BF16)")
      ->check(CLI::IsMember({"bf16", "f32"}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const bool f32_act = activations == "f32";
  const size_t act_bytes = f32_act ? 4 : 2;

  int device = 0;
  CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, device));
  int sm_clock_khz = 0, mem_clock_khz = 0;
  cudaDeviceGetAttribute(&sm_clock_khz, cudaDevAttrClockRate, device);
  cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, device);
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const double bw = copy_bandwidth(stream, reps);
  uint32_t* sink;
  CHECK(cudaMalloc(&sink, 4));
  std::printf("device: %s, sm_%d%d, %d SMs, L2 %d MB, SM clock %d MHz, memory clock %d MHz\n",
              prop.name, prop.major, prop.minor, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              sm_clock_khz / 1000, mem_clock_khz / 1000);
  std::printf("copy bandwidth (read + written): %.0f GB/s\n\n", bw / 1e9);

  std::vector<Shape> shapes = {{4096, 14336, "ffn 4096x14336"}, {5120, 2880, "qkv 5120x2880"},
                               {2880, 4096, "o 2880x4096"},     {5760, 2880, "gate_up 5760x2880"},
                               {2880, 2880, "down 2880x2880"},  {201088, 2880, "lm_head 201088x2880"}};
  if (llama)
    shapes = {{6144, 4096, "llama qkv 6144x4096"},
              {4096, 4096, "llama o 4096x4096"},
              {28672, 4096, "llama gate_up 28672x4096"},
              {28672, 4096, "llama gate_up+silu 28672x4096", LinearEpilogue::swiglu},
              {4096, 14336, "llama down 4096x14336"},
              {128256, 4096, "llama lm_head 128256x4096"}};
  if (quick) shapes.resize(2);
  std::erase_if(shapes, [&](const Shape& s) { return std::string(s.name).find(only) == std::string::npos; });
  if (shapes.empty()) {
    std::fprintf(stderr, "--shape %s: no shape's name contains it\n", only.c_str());
    return 2;
  }
  const size_t ms[] = {1, 2, 4, 8};
  std::vector<Result> results;
  LtGemm lt;

  for (const Shape& s : shapes) {
    // Random MXFP4 weights (every code, scales 2^-9..2^7), packed once, copied R times.
    const size_t bpr = (s.k + 31) / 32;
    std::vector<uint8_t> blocks(s.n * bpr * 16), scales(s.n * bpr);
    fill_random(blocks.data(), blocks.size());
    for (auto& e : scales) e = uint8_t(118 + next_random() % 17);
    LinearDesc desc;
    desc.n = s.n, desc.k = s.k, desc.epilogue = s.epilogue;
    const bool swiglu = s.epilogue == LinearEpilogue::swiglu;
    const GemvPacked packed = mxfp4_gemv_pack({blocks.data(), scales.data(), s.n, s.k}, s.epilogue);
    const size_t packed_bytes = packed.weights.size() + packed.scales.size();
    const size_t copies = std::max<size_t>(2, (kRotateBytes + packed_bytes - 1) / packed_bytes);
    std::vector<void*> w(copies), sc(copies);
    for (size_t c = 0; c < copies; ++c) {
      CHECK(cudaMalloc(&w[c], packed.weights.size()));
      CHECK(cudaMalloc(&sc[c], packed.scales.size()));
      CHECK(cudaMemcpy(w[c], packed.weights.data(), packed.weights.size(), cudaMemcpyHostToDevice));
      CHECK(cudaMemcpy(sc[c], packed.scales.data(), packed.scales.size(), cudaMemcpyHostToDevice));
    }
    // BF16 weights for cuBLAS, rotated the same way.
    const size_t bf16_bytes = s.n * s.k * 2;
    const size_t bf16_copies = std::max<size_t>(1, (kRotateBytes + bf16_bytes - 1) / bf16_bytes);
    std::vector<void*> wb(bf16_copies);
    {
      std::vector<uint16_t> host(s.n * s.k);
      for (auto& v : host) v = random_bf16();
      for (auto& p : wb) {
        CHECK(cudaMalloc(&p, bf16_bytes));
        CHECK(cudaMemcpy(p, host.data(), bf16_bytes, cudaMemcpyHostToDevice));
      }
    }
    void *act, *out;
    void* act_ours;  // cuBLAS's BF16 activations, or the same values in F32 for ours
    {
      std::vector<uint16_t> host(8 * s.k);
      for (auto& v : host) v = random_bf16();
      CHECK(cudaMalloc(&act, host.size() * 2));
      CHECK(cudaMemcpy(act, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
      act_ours = act;
      if (f32_act) {
        std::vector<float> host_f32(host.size());
        for (size_t i = 0; i < host.size(); ++i) host_f32[i] = bf16_to_f32(host[i]);
        CHECK(cudaMalloc(&act_ours, host_f32.size() * 4));
        CHECK(cudaMemcpy(act_ours, host_f32.data(), host_f32.size() * 4, cudaMemcpyHostToDevice));
      }
      CHECK(cudaMalloc(&out, 8 * s.n * 2));
    }
    const int calls = int(std::max<size_t>(copies, 20));
    const double read_us = time_graph(stream, calls, reps, [&](int i) {
      read_kernel<<<prop.multiProcessorCount * 4, 512, 0, stream>>>(
          static_cast<const uint4*>(w[i % copies]), packed.weights.size() / 16,
          static_cast<const uint4*>(sc[i % copies]), packed.scales.size() / 16, sink);
    });

    for (size_t m : ms) {
      GemvLaunch l;
      l.act = act_ours, l.out = out, l.n = s.n, l.k = s.k, l.m = m;
      l.n_pad = packed.n_pad, l.k_chunks = packed.k_chunks;
      l.activation = f32_act ? ActivationFormat::f32 : ActivationFormat::bf16;
      l.output = OutputFormat::bf16;
      l.epilogue = s.epilogue;
      l.multiprocessors = prop.multiProcessorCount;
      const auto ours = [&](int tiles, int warps, int team, int act_vector = -1, bool chained = false) {
        GemvLaunch li = l;
        li.tiles_per_cta = tiles, li.warps = warps, li.team = team, li.act_vector = act_vector;
        li.chained = chained;
        return time_graph(stream, calls, reps, [&](int i) {
          li.weights = w[i % copies], li.scales = sc[i % copies];
          CHECK(cudaError_t(mxfp4_gemv_launch(li, stream)));
        });
      };
      Result r{s, m, 0, 0, 0, read_us, 0, 0, 0, 0, 0, 0};
      mxfp4_gemv_default_config(l, &r.tiles, &r.warps, &r.team);
      r.ours_us = ours(r.tiles, r.warps, r.team);
      r.element_us = ours(r.tiles, r.warps, r.team, 0);
      r.chained_us = ours(r.tiles, r.warps, r.team, -1, true);
      if (sweep) {
        std::printf("  sweep %-22s M=%zu:", s.name, m);
        for (int tiles : {1, 2})
          for (int team : {1, 2, 4, 8, 16})
            if (tiles == 2 || !swiglu)  // the epilogue pairs rows across two tiles
              std::printf(" t%dw16g%d=%.2f", tiles, team, ours(tiles, 16, team));
        for (int warps : {4, 8})
          std::printf(" t2w%dg%d=%.2f", warps, warps, ours(2, warps, warps));
        std::printf("  (default t%dw%dg%d)\n", r.tiles, r.warps, r.team);
      }
      r.cublas_us = lt.best_us(stream, s.n, s.k, m, wb, act, out, std::max(5, reps / 3), calls);
      r.bytes = double(s.n) * s.k / 2 + double(s.n) * bpr + double(m) * s.k * act_bytes +
                double(m) * desc.out_features() * 2;
      r.floor_us = r.bytes / bw * 1e6;
      results.push_back(r);
    }
    for (size_t c = 0; c < copies; ++c) CHECK(cudaFree(w[c])), CHECK(cudaFree(sc[c]));
    for (auto* p : wb) CHECK(cudaFree(p));
    if (act_ours != act) CHECK(cudaFree(act_ours));
    CHECK(cudaFree(act));
    CHECK(cudaFree(out));
  }

  std::printf("\n| shape | M | ours us | GB/s | %% of floor | floor us | read us | cuBLAS BF16 us | x cuBLAS | element us | chained us | config |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const Result& r : results)
    std::printf("| %s | %zu | %.2f | %.0f | %.0f%% | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | t%dw%dg%d |\n",
                r.shape.name, r.m, r.ours_us, r.bytes / (r.ours_us * 1e-6) / 1e9,
                100.0 * r.floor_us / r.ours_us, r.floor_us, r.read_us, r.cublas_us,
                r.cublas_us / r.ours_us, r.element_us, r.chained_us, r.tiles, r.warps, r.team);
  if (!json_path.empty()) {
    FILE* f = std::fopen(json_path.c_str(), "w");
    if (!f) {
      std::fprintf(stderr, "cuda_gemv_bench: cannot write %s\n", json_path.c_str());
      return 1;
    }
    std::fprintf(f, "{\"device\": \"%s\", \"sm\": %d, \"multiprocessors\": %d, \"copy_gbps\": %.1f, "
                    "\"results\": [\n", prop.name, prop.major * 10 + prop.minor,
                 prop.multiProcessorCount, bw / 1e9);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f, "  {\"n\": %zu, \"k\": %zu, \"m\": %zu, \"ours_us\": %.3f, \"cublas_bf16_us\": %.3f, "
                      "\"floor_us\": %.3f, \"bytes\": %.0f, \"pct_floor\": %.1f, \"x_cublas\": %.3f, "
                      "\"element_us\": %.3f, \"chained_us\": %.3f, \"read_us\": %.3f, \"tiles_per_cta\": %d, \"warps\": %d, \"team\": %d}%s\n",
                   r.shape.n, r.shape.k, r.m, r.ours_us, r.cublas_us, r.floor_us, r.bytes,
                   100.0 * r.floor_us / r.ours_us, r.cublas_us / r.ours_us, r.element_us, r.chained_us, r.read_us, r.tiles,
                   r.warps, r.team, i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "]}\n");
    std::fclose(f);
  }
  CHECK(cudaFree(sink));
  CHECK(cudaStreamDestroy(stream));
  return 0;
}
