// BF16 -> MXFP4 tensor quantize and MXFP4 -> BF16 dequantize throughput, 1 and 2 threads, next
// to a multi-threaded memcpy of the same BF16 bytes measured in the same run. Cold: the buffers
// are several times larger than the L3 cache, so every pass streams from memory.
//
//   format_quantize_bench [--mib 256] [--k 2880] [--reps 7] [--threads 1,2] [--help]
//
// The header line names the commit, the build type, the CPU and the Highway target the codec
// dispatched to. Flags are parsed by CLI11: an unknown flag, a flag without its value or a
// value that is not a positive number is refused with CLI11's message and a non-zero exit.
// GB/s counts the BF16 bytes (input of quantize, output of dequantize); "x copy" is the copy's
// time over the op's time for the same bytes and threads. Median and sd over the repetitions,
// which are interleaved across the ops so that all of them see the same machine load.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "base/cpu_features.h"
#include "base/thread_pool.h"
#include "bench_flags.h"
#include "bench_stats.h"
#include "build_info.h"
#include "format/float16.h"
#include "format/mxfp4.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Stats {
  double median_s, sd_s;
};

Stats stats_of(const std::vector<double>& t) {  // sd: of the population (n), as recorded
  double mean = 0, var = 0;
  for (double x : t) mean += x / t.size();
  for (double x : t) var += (x - mean) * (x - mean) / t.size();
  return {nibble::bench::median(t), std::sqrt(var)};
}

// Times every op `reps` times, interleaved (op 1, op 2, ..., op 1, ...), so that the baseline
// and the ops see the same machine conditions (on a shared machine, load comes and goes).
std::vector<Stats> time_interleaved(size_t reps, const std::vector<std::function<void()>>& ops) {
  for (const auto& op : ops) op();  // warm-up: page faults, thread start
  std::vector<std::vector<double>> t(ops.size());
  for (size_t r = 0; r < reps; ++r) {
    for (size_t i = 0; i < ops.size(); ++i) {
      const auto start = Clock::now();
      ops[i]();
      t[i].push_back(std::chrono::duration<double>(Clock::now() - start).count());
    }
  }
  std::vector<Stats> out;
  for (auto& v : t) out.push_back(stats_of(v));
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  size_t mib = 256, k = 2880, reps = 7;
  std::vector<size_t> thread_counts = {1, 2};
  CLI::App app{"MXFP4 quantize / dequantize throughput of the format core beside memcpy"};
  app.add_option("--mib", mib, "size of the BF16 source in MiB (keep it several times the L3)")
      ->check(nibble::bench::positive_integer())->capture_default_str();
  app.add_option("--k", k, "row length, elements")->check(nibble::bench::positive_integer())->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions per op, interleaved")
      ->check(nibble::bench::positive_integer())->capture_default_str();
  app.add_option("--threads", thread_counts, "thread counts to run, comma-separated")
      ->delimiter(',')->check(nibble::bench::positive_integer())->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  const size_t rows = std::max<size_t>(1, (mib << 20) / (2 * k));
  const size_t n = rows * k, bytes = n * 2, rb = nibble::mxfp4_blocks_per_row(k);

  // Gaussian weights in BF16, like a checkpoint's.
  std::vector<uint16_t> source(n), copy(n), out(n);
  std::vector<uint8_t> blocks(rows * rb * 16), scales(rows * rb);
  {
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 0.02f);
    for (auto& v : source) v = nibble::f32_to_bf16(normal(rng));
  }
  std::memset(copy.data(), 1, bytes);
  std::memset(out.data(), 1, bytes);

  const nibble::BuildInfo& build = nibble::build_info();
  std::printf("nibble %s, commit %s (%s build); CPU: %s, MXFP4 codec SIMD target %s\n",
              build.version, build.commit, build.build_type, nibble::cpu_model_name().c_str(),
              nibble::mxfp4_simd_target().c_str());
  std::printf("[%zu, %zu] BF16 = %.0f MiB (scales and blocks %.0f MiB); medians of %zu reps\n\n",
              rows, k, bytes / 1048576.0, (blocks.size() + scales.size()) / 1048576.0, reps);
  std::printf("| op | threads | median ms | sd ms | GB/s (BF16 bytes) | x copy |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (size_t threads : thread_counts) {
    nibble::ThreadPool pool(threads);
    nibble::Mxfp4QuantizeOptions ocp, ceil;
    ocp.pool = ceil.pool = &pool;
    ceil.rule = nibble::ScaleRule::ceil;
    const auto t = time_interleaved(reps, {
        [&] {
          pool.parallel_for(n, 1 << 16, [&](size_t b, size_t e, size_t) {
            std::memcpy(copy.data() + b, source.data() + b, (e - b) * 2);
          });
        },
        [&] {
          nibble::mxfp4_quantize(source.data(), nibble::DType::BF16, rows, k, blocks.data(),
                                 scales.data(), ocp);
        },
        [&] {
          nibble::mxfp4_quantize(source.data(), nibble::DType::BF16, rows, k, blocks.data(),
                                 scales.data(), ceil);
        },
        [&] {
          nibble::mxfp4_dequantize(blocks.data(), scales.data(), rows, k, out.data(),
                                   nibble::DType::BF16, &pool);
        },
    });
    const Stats& copy_t = t[0];
    const auto row = [&](const char* op, const Stats& s) {
      std::printf("| %s | %zu | %.2f | %.2f | %.2f | %.2f |\n", op, threads, s.median_s * 1e3,
                  s.sd_s * 1e3, bytes / s.median_s / 1e9, copy_t.median_s / s.median_s);
    };
    row("memcpy (baseline)", copy_t);
    row("quantize BF16->MXFP4, ocp", t[1]);
    row("quantize BF16->MXFP4, ceil", t[2]);
    row("dequantize MXFP4->BF16", t[3]);
  }
  // A checksum, so that no pass can be optimised away.
  unsigned sum = 0;
  for (size_t i = 0; i < scales.size(); i += 97) sum += scales[i];
  for (size_t i = 0; i < n; i += 4099) sum += out[i] + copy[i];
  std::printf("\nchecksum %u\n", sum);
  return 0;
}
