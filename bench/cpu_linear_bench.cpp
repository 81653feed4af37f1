// cpu_linear_bench: the CPU MXFP4 linear kernels on real layer shapes, against the machine's
// read bandwidth and an OpenBLAS F32 GEMV/GEMM, all measured in the same run. Not a test.
//
//   cpu_linear_bench [--kernel cpu_avx2_w4a8,cpu_simd] [--reps 5] [--shapes 4096x14336,2880x2880]
//                    [--m 1,2,4,8,64,512] [--threads 1,2]
//
// --kernel: one or more kernels, compared in the same run (default: every CPU kernel this
// machine supports but cpu_ref, which is the oracle and 10-100x slower).
// Each (thread count, shape) runs in a child process (NIBBLE_THREADS=t; the thread pool is
// sized once per process), which measures its own read bandwidth first: a shape measured after
// others in one process ran ~12 % slower at M = 1 (docs/perf.md), so no point inherits
// another's memory history. Weights are "cold": the MXFP4
// layer is prepared into enough copies to pass >= 256 MB and each repetition uses the next
// copy, so the 32 MB L3 cannot hold them (the F32 baseline's weights are >= 33 MB per copy
// and rotate through 2 copies). Figures are medians of the repetitions. Output: a markdown
// table (us, GB/s of MXFP4 weights, % of the measured read bandwidth, GFLOP/s, x OpenBLAS).
#include <CLI/CLI.hpp>
#include <cblas.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/thread_pool.h"
#include "bench_flags.h"
#include "bench_stats.h"
#include "format/mxfp4.h"
#include "kernels/registry.h"

namespace nibble {
namespace {

using Clock = std::chrono::steady_clock;
using bench::median;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Streaming read of a 1 GiB buffer (>> L3) split over the pool's threads: GB/s, median of 5.
double read_bandwidth_gbs() {
  const size_t bytes = size_t(1) << 30, words = bytes / sizeof(uint64_t);
  std::vector<uint64_t> buffer(words);
  ThreadPool::global().parallel_for(words, 1 << 20, [&](size_t b, size_t e, size_t) {
    for (size_t i = b; i < e; ++i) buffer[i] = i;
  });
  std::vector<double> rates;
  std::vector<uint64_t> sums(64);
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    ThreadPool::global().parallel_for(words, 1 << 20, [&](size_t b, size_t e, size_t t) {
      uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      size_t i = b;
      for (; i + 4 <= e; i += 4) {
        s0 += buffer[i];
        s1 += buffer[i + 1];
        s2 += buffer[i + 2];
        s3 += buffer[i + 3];
      }
      for (; i < e; ++i) s0 += buffer[i];
      sums[t] += s0 + s1 + s2 + s3;
    });
    rates.push_back(bytes / seconds_since(t0) / 1e9);
  }
  if (sums[0] == 42) std::puts("");  // keep the sums alive
  return median(rates);
}

struct Shape {
  size_t n, k;
};

// "NxK" with positive N and K, or nullopt.
std::optional<Shape> parse_shape(const std::string& s) {
  const size_t x = s.find('x');
  if (x == std::string::npos) return std::nullopt;
  Shape shape{};
  const char* end = s.data() + s.size();
  const auto n = std::from_chars(s.data(), s.data() + x, shape.n);
  const auto k = std::from_chars(s.data() + x + 1, end, shape.k);
  if (n.ec != std::errc() || n.ptr != s.data() + x || k.ec != std::errc() || k.ptr != end ||
      shape.n == 0 || shape.k == 0)
    return std::nullopt;
  return shape;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  for (size_t start = 0; start < s.size();) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::string default_kernels() {
  std::string names;
  for (const LinearKernel* k : KernelRegistry::builtin().kernels(DeviceKind::cpu))
    if (k->name() != "cpu_ref" && k->is_supported(cpu_device_info()).ok)
      names += (names.empty() ? "" : ",") + std::string(k->name());
  return names;
}

void run_child(const std::string& kernel_names, const std::vector<Shape>& shapes,
               const std::vector<size_t>& ms, int reps) {
  const size_t threads = ThreadPool::global().size();
  openblas_set_num_threads(int(threads));
  const double bw = read_bandwidth_gbs();
  fmt::print(stderr, "threads {}: read bandwidth {:.1f} GB/s\n", threads, bw);
  const DeviceInfo device = cpu_device_info();
  const std::vector<std::string> kernels = split(kernel_names);
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);

  for (const Shape& s : shapes) {
    const size_t bpr = mxfp4_blocks_per_row(s.k);
    std::vector<float> w(s.n * s.k);
    for (auto& v : w) v = normal(rng);
    std::vector<uint8_t> blocks(s.n * bpr * 16), scales(s.n * bpr);
    mxfp4_quantize(w.data(), DType::F32, s.n, s.k, blocks.data(), scales.data());
    const double weight_bytes = double(blocks.size() + scales.size());
    const size_t max_m = *std::max_element(ms.begin(), ms.end());
    LinearDesc desc;
    desc.name = fmt::format("{}x{}", s.n, s.k);
    desc.n = s.n;
    desc.k = s.k;
    desc.max_m = max_m;
    const size_t copies = std::clamp<size_t>(size_t(256e6 / weight_bytes) + 1, 2, 64);
    std::map<std::string, std::vector<std::unique_ptr<Mxfp4Linear>>> layers;
    for (const std::string& kernel : kernels)
      for (size_t c = 0; c < copies; ++c)
        layers[kernel].push_back(std::make_unique<Mxfp4Linear>(
            desc, Mxfp4HostWeights{blocks.data(), scales.data(), s.n, s.k}, nullptr, device,
            KernelOverrides::parse(kernel)));
    // F32 baseline weights: the dequantized matrix, two copies.
    std::vector<std::vector<float>> wf(2, std::vector<float>(s.n * s.k));
    for (auto& copy : wf) mxfp4_dequantize(blocks.data(), scales.data(), s.n, s.k, copy.data(), DType::F32);
    std::vector<float> act(max_m * s.k), out(max_m * s.n);
    for (auto& v : act) v = normal(rng);

    for (size_t m : ms) {
      const double flops = 2.0 * m * s.n * s.k;
      const int r = flops > 2e10 ? std::max(3, reps / 2) : reps;
      // Our kernels first: OpenBLAS's threads spin for a while after each call and would
      // take the cores from the kernel measured next.
      std::vector<double> times;
      for (const std::string& kernel : kernels) {
        std::vector<double> ours;
        size_t next = 0;
        for (int rep = -1; rep < r; ++rep) {  // rep -1: warm-up
          const Mxfp4Linear& layer = *layers[kernel][next++ % copies];
          const auto t0 = Clock::now();
          layer.forward({act.data(), m, ActivationFormat::f32}, {out.data(), OutputFormat::f32});
          if (rep >= 0) ours.push_back(seconds_since(t0));
        }
        times.push_back(median(ours));
      }
      std::vector<double> blas;
      for (int rep = -1; rep < r; ++rep) {
        const float* wb = wf[size_t(rep + 1) % 2].data();
        const auto t0 = Clock::now();
        if (m == 1)
          cblas_sgemv(CblasRowMajor, CblasNoTrans, int(s.n), int(s.k), 1.0f, wb, int(s.k), act.data(), 1,
                      0.0f, out.data(), 1);
        else
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(s.n), int(s.k), 1.0f,
                      act.data(), int(s.k), wb, int(s.k), 0.0f, out.data(), int(s.n));
        if (rep >= 0) blas.push_back(seconds_since(t0));
      }
      const double tb = median(blas);
      std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let OpenBLAS's threads sleep
      for (size_t i = 0; i < kernels.size(); ++i) {
        const double t = times[i], gbs = weight_bytes / t / 1e9;
        fmt::print("| {} | {}x{} | {} | {} | {:.0f} | {:.1f} | {:.0f}% | {:.1f} | {:.0f} | {:.2f}x |\n", kernels[i],
                   s.n, s.k, m, threads, t * 1e6, gbs, 100 * gbs / bw, flops / t / 1e9, tb * 1e6, tb / t);
      }
      std::fflush(stdout);
    }
  }
  fmt::print("| read bandwidth, {} threads | | | | | {:.1f} GB/s | | | | |\n", threads, bw);
}

}  // namespace
}  // namespace nibble

int main(int argc, char** argv) {
  using namespace nibble;
  std::string kernel = default_kernels();
  std::vector<std::string> shape_items = {"4096x14336", "5120x2880", "2880x4096", "5760x2880", "2880x2880"};
  std::vector<size_t> ms = {1, 2, 4, 8, 64, 512}, thread_counts = {1, 2};
  size_t reps = 7;
  bool child = false;
  const CLI::Validator shape_check(
      [](std::string& s) -> std::string {
        return parse_shape(s) ? "" : "a shape is NxK with positive N and K, not '" + s + "'";
      },
      "NxK");
  CLI::App app{"The CPU MXFP4 linear kernels against the read bandwidth and OpenBLAS F32, same run"};
  app.add_option("--kernel", kernel, "kernels to compare, comma-separated")->capture_default_str();
  app.add_option("--shapes", shape_items, "layer shapes NxK, comma-separated")
      ->delimiter(',')->check(shape_check)->capture_default_str();
  app.add_option("--m", ms, "activation rows, comma-separated")
      ->delimiter(',')->check(bench::positive_integer())->capture_default_str();
  app.add_option("--threads", thread_counts, "thread counts, comma-separated (a child process per thread count and shape)")
      ->delimiter(',')->check(bench::positive_integer())->capture_default_str();
  app.add_option("--reps", reps, "repetitions per point (the median is kept)")
      ->check(bench::positive_integer())->capture_default_str();
  app.add_flag("--child", child, "one thread count's and shape's measurement (how the parent runs its children)")
      ->group("");
  CLI11_PARSE(app, argc, argv);
  std::vector<Shape> shapes;
  for (const std::string& item : shape_items) shapes.push_back(*parse_shape(item));
  try {
    if (child) {
      run_child(kernel, shapes, ms, int(reps));
      return 0;
    }
    fmt::print("kernels {} on {} (SIMD target {}); medians of {} reps, weights cold\n\n", kernel,
               cpu_device_info().name, cpu_device_info().cpu_simd_target, reps);
    fmt::print("| kernel | shape NxK | M | threads | us | GB/s weights | % read BW | GFLOP/s | OpenBLAS F32 us | x OpenBLAS |\n");
    fmt::print("|---|---|---|---|---|---|---|---|---|---|\n");
    std::fflush(stdout);
    for (size_t t : thread_counts)
      for (const std::string& shape : shape_items) {
        // OPENBLAS_THREAD_TIMEOUT=4: OpenBLAS's idle threads spin 2^4 cycles, not 2^28, before
        // they sleep, so they do not compete with the kernel timed after them.
        const std::string cmd = fmt::format("NIBBLE_THREADS={} OPENBLAS_NUM_THREADS={} OPENBLAS_THREAD_TIMEOUT=4 '{}' --child --kernel {} --shapes {} --m {} --reps {}",
                                            t, t, argv[0], kernel, shape, fmt::join(ms, ","), reps);
        if (std::system(cmd.c_str()) != 0) {
          std::fprintf(stderr, "child for %zu threads, shape %s failed\n", t, shape.c_str());
          return 1;
        }
      }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cpu_linear_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
