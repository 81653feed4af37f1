// Whole-checkpoint quantization throughput and memory: `nibble quantize` on a synthetic
// multi-GB BF16 Llama-shaped checkpoint, next to a plain file copy of the same files measured
// in the same run (read + write + fsync, as the safetensors writer does), and the quantizer's
// peak RSS (from wait4) against the bound "1 GB + the largest tensor".
//
//   quantize_checkpoint_bench [--gb 3] [--dir DIR] [--nibble PATH] [--runs 2] [--threads N] [--keep 1]
//
// Prints a markdown table per run and a summary (mean +- sd over the runs; "x copy" is the mean
// of each run's ratio to the copy measured just before it) for docs/perf.md, "Quantizer". The
// files are deleted at the end.
#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <string>
#include <vector>

#include "base/error.h"
#include "bench_flags.h"
#include "bench_stats.h"
#include "format/float16.h"
#include "format/safetensors.h"

namespace fs = std::filesystem;
using nibble::DType;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Cheap deterministic-per-tensor values, roughly the spread of trained weights.
void fill_bf16(uint8_t* out, size_t nbytes, uint64_t seed) {
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  uint16_t* p = reinterpret_cast<uint16_t*>(out);
  for (size_t i = 0; i < nbytes / 2; ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    const float u = float(int32_t(x >> 32)) * (1.0f / 2147483648.0f);  // [-1, 1)
    p[i] = nibble::f32_to_bf16(0.04f * u * u * u + 0.01f * u);
  }
}

struct Shape {
  int64_t hidden = 4096, ffn = 14336, vocab = 32000;
};

// Writes a Llama-shaped BF16 checkpoint of about `gb` GB; returns the largest tensor's bytes.
size_t write_synthetic(const fs::path& dir, double gb, Shape s) {
  fs::create_directories(dir);
  std::vector<nibble::TensorSpec> specs;
  uint64_t seed = 1;
  auto add = [&](const std::string& name, std::vector<int64_t> shape) {
    specs.push_back({name, DType::BF16, std::move(shape),
                     [seed = seed++](uint8_t* out, size_t n) { fill_bf16(out, n, seed); }});
  };
  add("model.embed_tokens.weight", {s.vocab, s.hidden});
  add("lm_head.weight", {s.vocab, s.hidden});
  add("model.norm.weight", {s.hidden});
  const double layer_bytes = 2.0 * (4 * s.hidden * s.hidden + 3 * s.hidden * s.ffn);
  const int layers = std::max(1, int((gb * 1e9 - 4.0 * s.vocab * s.hidden) / layer_bytes + 0.5));
  for (int i = 0; i < layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"})
      add(p + "self_attn." + n + ".weight", {s.hidden, s.hidden});
    add(p + "mlp.gate_proj.weight", {s.ffn, s.hidden});
    add(p + "mlp.up_proj.weight", {s.ffn, s.hidden});
    add(p + "mlp.down_proj.weight", {s.hidden, s.ffn});
    add(p + "input_layernorm.weight", {s.hidden});
    add(p + "post_attention_layernorm.weight", {s.hidden});
  }
  size_t largest = 0;
  for (const auto& t : specs) largest = std::max(largest, t.nbytes());
  nibble::write_checkpoint(dir, specs, {{"format", "pt"}}, size_t(2) << 30);
  std::ofstream(dir / "config.json") << fmt::format(
      R"({{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": {}, "intermediate_size": {},
  "num_hidden_layers": {}, "vocab_size": {}, "tie_word_embeddings": false}})",
      s.hidden, s.ffn, layers, s.vocab);
  return largest;
}

uint64_t directory_bytes(const fs::path& dir) {
  uint64_t n = 0;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file()) n += e.file_size();
  return n;
}

// A plain copy of every file: read() and write() in 16 MB chunks, fsync each file.
double copy_directory(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  std::vector<char> buffer(size_t(16) << 20);
  const double t0 = now();
  for (const auto& e : fs::directory_iterator(from)) {
    if (!e.is_regular_file()) continue;
    const int in = ::open(e.path().c_str(), O_RDONLY);
    const int out = ::open((to / e.path().filename()).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    NIBBLE_CHECK(in >= 0 && out >= 0, "copy {}: {}", e.path().string(), std::strerror(errno));
    while (true) {
      const ssize_t r = ::read(in, buffer.data(), buffer.size());
      NIBBLE_CHECK(r >= 0, "read {}: {}", e.path().string(), std::strerror(errno));
      if (r == 0) break;
      for (ssize_t done = 0; done < r;) {
        const ssize_t w = ::write(out, buffer.data() + done, size_t(r - done));
        NIBBLE_CHECK(w > 0, "write: {}", std::strerror(errno));
        done += w;
      }
    }
    NIBBLE_CHECK(::fsync(out) == 0, "fsync: {}", std::strerror(errno));
    ::close(in);
    ::close(out);
  }
  return now() - t0;
}

struct RunStats {
  double seconds = 0;
  long peak_rss_kb = 0;
};

RunStats run_quantize(const std::string& nibble, const fs::path& in, const fs::path& out, const std::string& layers,
                      const std::string& threads) {
  std::vector<std::string> args = {nibble, "quantize", in.string(), "-o", out.string(), "--mxfp4-layers", layers, "-q"};
  if (!threads.empty()) args.insert(args.end(), {"--threads", threads});
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const double t0 = now();
  const pid_t pid = fork();
  if (pid == 0) {
    execv(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  rusage usage{};
  NIBBLE_CHECK(wait4(pid, &status, 0, &usage) == pid, "wait4 failed");
  RunStats s;
  s.seconds = now() - t0;
  s.peak_rss_kb = usage.ru_maxrss;
  NIBBLE_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "nibble quantize failed (status {})", status);
  return s;
}

std::string cpu_name() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

}  // namespace

int main(int argc, char** argv) {
  double gb = 3;
  int runs = 2;
  fs::path dir = fs::temp_directory_path() / fmt::format("nibble-quant-bench-{}", getpid());
  std::string nibble = (fs::path(argv[0]).parent_path() / ".." / "tools" / "nibble").lexically_normal().string();
  std::string threads;
  bool keep = false;
  CLI::App app{"Whole-checkpoint quantization throughput and peak RSS beside a plain copy"};
  app.add_option("--gb", gb, "size of the synthetic BF16 checkpoint")->check(nibble::bench::positive_number())->capture_default_str();
  std::string dir_arg;
  app.add_option("--dir", dir_arg, "where to write it (default: the temp directory)");
  app.add_option("--nibble", nibble, "the nibble binary")->capture_default_str();
  app.add_option("--runs", runs, "alternated runs of every case")->check(nibble::bench::positive_integer())->capture_default_str();
  app.add_option("--threads", threads, "passed to nibble quantize --threads");
  app.add_option("--keep", keep, "keep the files (1)");
  CLI11_PARSE(app, argc, argv);
  if (!dir_arg.empty()) dir = fs::path(dir_arg) / fmt::format("nibble-quant-bench-{}", getpid());
  try {
    const fs::path in = dir / "in", copy = dir / "copy", out = dir / "out";
    fmt::print(stderr, "writing a {:.1f} GB synthetic checkpoint to {}\n", gb, in.string());
    const size_t largest = write_synthetic(in, gb, {});
    const uint64_t bytes = directory_bytes(in);
    struct Row {
      std::string what;
      double seconds;
      long rss_kb;
    };
    std::vector<Row> rows;
    // Each case starts from the same state: the previous output deleted, the disk synced and
    // given a moment (deleting gigabytes of fresh files keeps the journal busy otherwise).
    const auto settle = [] {
      ::sync();
      ::sleep(2);
    };
    for (int r = 0; r < runs; ++r) {
      settle();
      rows.push_back({"plain copy (read+write+fsync)", copy_directory(in, copy), 0});
      fs::remove_all(copy);
      for (const char* layers : {"all", "moe"}) {
        settle();
        const RunStats s = run_quantize(nibble, in, out, layers, threads);
        rows.push_back({fmt::format("nibble quantize --mxfp4-layers {}", layers), s.seconds, s.peak_rss_kb});
        fs::remove_all(out);
      }
    }
    fmt::print("machine: {}, {} hardware threads; input {:.2f} GB in {} files, largest tensor {:.0f} MB; "
               "RSS bound 1 GB + largest = {:.0f} MB\n\n",
               cpu_name(), std::thread::hardware_concurrency(), double(bytes) / 1e9,
               std::distance(fs::directory_iterator(in), fs::directory_iterator()), double(largest) / 1e6,
               1000 + double(largest) / 1e6);
    fmt::print("| run | case | seconds | input GB/s | x copy (same run) | peak RSS MB |\n|---|---|---|---|---|---|\n");
    for (int r = 0; r < runs; ++r) {
      const double copy_s = rows[size_t(r) * 3].seconds;
      for (int c = 0; c < 3; ++c) {
        const Row& row = rows[size_t(r) * 3 + size_t(c)];
        fmt::print("| {} | {} | {:.2f} | {:.3f} | {:.2f} | {} |\n", r + 1, row.what, row.seconds,
                   double(bytes) / 1e9 / row.seconds, copy_s / row.seconds,
                   row.rss_kb ? fmt::format("{:.0f}", double(row.rss_kb) / 1024) : "-");
      }
    }
    // The disk is shared and its write-back time varies between runs: the summary gives the
    // spread, and ratios are taken within a run, against the copy measured just before.
    fmt::print("\n| case (mean +- sd of {} runs) | seconds | input GB/s | x copy (same run) | peak RSS MB |\n"
               "|---|---|---|---|---|\n", runs);
    for (int c = 0; c < 3; ++c) {
      std::vector<double> seconds, ratios;
      long rss = 0;
      for (int r = 0; r < runs; ++r) {
        const Row& row = rows[size_t(r) * 3 + size_t(c)];
        seconds.push_back(row.seconds);
        ratios.push_back(rows[size_t(r) * 3].seconds / row.seconds);
        rss = std::max(rss, row.rss_kb);
      }
      const nibble::bench::MeanSd t = nibble::bench::mean_sd(seconds), x = nibble::bench::mean_sd(ratios);
      fmt::print("| {} | {:.2f} +- {:.2f} | {:.3f} | {:.2f} +- {:.2f} | {} |\n", rows[size_t(c)].what, t.mean, t.sd,
                 double(bytes) / 1e9 / t.mean, x.mean, x.sd, rss ? fmt::format("{:.0f}", double(rss) / 1024) : "-");
    }
    if (keep)
      fmt::print(stderr, "kept {}\n", dir.string());
    else
      fs::remove_all(dir);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    fmt::print(stderr, "bench failed: {}\n", e.what());
    return 1;
  }
  return 0;
}
