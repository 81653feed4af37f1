// Tokenizer encode/decode throughput on one core, beside @lenml/tokenizers (the Node.js port of
// transformers.js's tokenizers) on the same text in the same run.
//
//   build/release/bench/tokenizer_bench [--npm data/npm] [--text FILE] [--reps 5] [-o md|csv]
//
// Run from the repository root (defaults: data/npm from scripts/setup, the English part of the
// tokenizer test corpus). Each implementation encodes the text `reps` times after one warm-up
// pass (word caches warm in both); MB/s = input bytes / wall time, mean ± sd over the reps.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "bench_flags.h"
#include "bench_stats.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + p.string());
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// The oracle's encode rate on the same text: {reps} texts in one Node process, warm-up included.
double lenml_mb_s(const std::string& npm, const std::string& name, const std::string& text, int reps) {
  const fs::path tmp = fs::temp_directory_path() / fmt::format("nibble_tokbench_{}_{}", ::getpid(), name);
  fs::create_directories(tmp);
  nlohmann::json warm;
  warm["texts"] = std::vector<std::string>(static_cast<size_t>(reps + 1), text);
  warm["add_special_tokens"] = false;
  std::ofstream(tmp / "req.json") << warm.dump();
  const std::string cmd = fmt::format("node tests/tokenizer/oracle/oracle.mjs '{}' {} '{}' '{}' >/dev/null 2>&1", npm,
                                      name, (tmp / "req.json").string(), (tmp / "out.json").string());
  if (std::system(cmd.c_str()) != 0) {
    fs::remove_all(tmp);
    return NAN;
  }
  const auto answer = nlohmann::json::parse(read_file(tmp / "out.json"));
  fs::remove_all(tmp);
  // The Node time covers reps + 1 passes (the first one warms its cache): report the average.
  const double seconds = answer["seconds"]["encode"].get<double>();
  return static_cast<double>(text.size()) * (reps + 1) / seconds / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  std::string npm = "data/npm", text_path = "tests/tokenizer/corpus/01_english.txt", format = "md";
  int reps = 5;
  CLI::App app{"Tokenizer encode/decode throughput beside @lenml/tokenizers on the same text"};
  app.add_option("--npm", npm, "the npm data directory of scripts/setup")->capture_default_str();
  app.add_option("--text", text_path, "the text to encode")->capture_default_str();
  app.add_option("--reps", reps, "timed repetitions after one warm-up")->check(nibble::bench::positive_integer())->capture_default_str();
  app.add_option("-o", format, "output format")->check(CLI::IsMember({"md", "csv"}))->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  std::string text = read_file(text_path);
  for (size_t p = text.find("\n%%%%\n"); p != std::string::npos; p = text.find("\n%%%%\n", p)) text.replace(p, 6, "\n\n");

  const char* header = format == "csv" ? "tokenizer,bytes,ids,load_s,encode_cold_MB_s,encode_MB_s,encode_sd,decode_MB_s,lenml_encode_MB_s,speedup\n"
                                       : "| tokenizer | text bytes | ids | load s | encode cold MB/s | encode MB/s (mean ± sd) | decode MB/s | @lenml/tokenizers encode MB/s | × lenml |\n"
                                         "|---|---|---|---|---|---|---|---|---|\n";
  fmt::print("{}", header);
  for (const std::string name : {"gptoss", "llama3", "qwen3", "llama2"}) {
    const fs::path dir = fs::path(npm) / "node_modules/@lenml" / ("tokenizer-" + name) / "models";
    const auto t0 = Clock::now();
    const auto tok = nibble::Tokenizer::load(dir);
    const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const auto c0 = Clock::now();
    std::vector<int32_t> ids = tok->encode(text, false);
    const double cold = static_cast<double>(text.size()) / std::chrono::duration<double>(Clock::now() - c0).count() / 1e6;
    std::vector<double> enc, dec;
    for (int r = 0; r < reps; ++r) {
      const auto a = Clock::now();
      ids = tok->encode(text, false);
      enc.push_back(static_cast<double>(text.size()) / std::chrono::duration<double>(Clock::now() - a).count() / 1e6);
      const auto b = Clock::now();
      const std::string back = tok->decode(ids);
      dec.push_back(static_cast<double>(back.size()) / std::chrono::duration<double>(Clock::now() - b).count() / 1e6);
    }
    const nibble::bench::MeanSd e = nibble::bench::mean_sd(enc), d = nibble::bench::mean_sd(dec);
    const double lenml = lenml_mb_s(npm, name, text, reps);
    if (format == "csv")
      fmt::print("{},{},{},{:.2f},{:.1f},{:.1f},{:.1f},{:.1f},{:.2f},{:.1f}\n", name, text.size(), ids.size(), load_s, cold, e.mean,
                 e.sd, d.mean, lenml, e.mean / lenml);
    else
      fmt::print("| {} | {} | {} | {:.2f} | {:.1f} | {:.1f} ± {:.1f} | {:.1f} | {:.2f} | {:.1f}× |\n", name, text.size(), ids.size(),
                 load_s, cold, e.mean, e.sd, d.mean, lenml, e.mean / lenml);
  }
  return 0;
}
