// The README's main command (the `nibble run` line scripts/quickstart ends with) on the bundled
// stories260K: the text, the speed line and the layer summary; the full-precision run equals
// the reference C implementation's greedy text; --device cuda runs on the GPU or says why not.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include "test_files.h"

namespace {

namespace fs = std::filesystem;

using nibble::test::read_text;

struct Result {
  int status = -1;
  std::string out, err;
};

// Runs `args` (after the binary) in the source directory, with a fresh conversion cache.
Result run_nibble(const std::string& args, const fs::path& cache) {
  const fs::path dir = fs::path(NIBBLE_BINARY_DIR) / "test_tmp";
  fs::create_directories(dir);
  const std::string tag = std::to_string(std::random_device{}());
  const fs::path out = dir / ("run-" + tag + ".out"), err = dir / ("run-" + tag + ".err");
  const std::string cmd = "cd '" NIBBLE_SOURCE_DIR "' && NIBBLE_CACHE_DIR='" + cache.string() +
                          "' '" NIBBLE_BIN "' " + args + " >'" + out.string() + "' 2>'" +
                          err.string() + "'";
  Result r;
  r.status = std::system(cmd.c_str());
  r.out = read_text(out);
  r.err = read_text(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

// The `nibble run ...` arguments of scripts/quickstart's last command.
std::string quickstart_run_args() {
  std::istringstream script(read_text(fs::path(NIBBLE_SOURCE_DIR) / "scripts/quickstart"));
  std::string line, last;
  while (std::getline(script, line))
    if (line.find("nibble run ") != std::string::npos) last = line;
  const size_t at = last.find("nibble run ");
  EXPECT_NE(at, std::string::npos) << "scripts/quickstart has no `nibble run` line";
  return last.substr(at + std::string("nibble ").size());
}

fs::path fresh_cache() {
  const fs::path p = fs::path(NIBBLE_BINARY_DIR) / "test_tmp" /
                     ("cache-" + std::to_string(std::random_device{}()));
  fs::remove_all(p);
  return p;
}

TEST(Quickstart, RunsStoriesInMxfp4WithSpeedAndSummary) {
  const std::string args = quickstart_run_args();
  ASSERT_NE(args.find("-m models/stories260K"), std::string::npos) << args;
  ASSERT_NE(args.find("--mxfp4-layers all"), std::string::npos) << args;
  const fs::path cache = fresh_cache();
  const Result r = run_nibble(args, cache);
  ASSERT_EQ(r.status, 0) << r.err;
  // The text: the prompt, then a story.
  EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;
  EXPECT_GT(r.out.size(), 300u) << r.out;
  EXPECT_EQ(r.out.find('\xef'), std::string::npos) << "replacement character in: " << r.out;
  // The speed line.
  const std::regex speed(
      R"(speed: prompt \d+ tokens, [0-9.]+ tokens/s \| generated (\d+) tokens, [0-9.]+ tokens/s, [0-9.]+ ms/token \| peak memory [0-9.]+ MiB)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.err, m, speed)) << r.err;
  EXPECT_GT(std::stoi(m[1]), 20);
  // The summary: 35 MXFP4 layers (5 x q,k,v,o,gate,up,down), the padded down projection, and
  // the tied classifier in full precision with its reason.
  const std::regex summary(
      R"(layers: MXFP4: 35 layers \(qkv,o,mlp\) on \w+, zero-padded last block: down \(K = 172 padded to 192\) \| full precision: 1 layer \(lm_head\): tied to the embedding table: MXFP4 refused)");
  EXPECT_TRUE(std::regex_search(r.err, summary)) << r.err;
  // First run, into a fresh cache: converts, and says so (not "using cached").
  EXPECT_NE(r.err.find("nibble: converted models/stories260K/stories260K.bin (llama2.c) with "
                       "nibble convert into cache " + cache.string()),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("using cached conversion"), std::string::npos) << r.err;
  // Second run: from the cache, says so (not "converted"), same text (greedy).
  const Result again = run_nibble(args, cache);
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(again.out, r.out);
  EXPECT_NE(again.err.find("nibble: using cached conversion " + cache.string()), std::string::npos)
      << again.err;
  EXPECT_EQ(again.err.find("converted"), std::string::npos) << again.err;
  fs::remove_all(cache);
}

TEST(Quickstart, FullPrecisionEqualsReferenceImplementation) {
  const fs::path cache = fresh_cache();
  // run.c prints one token per step, 256 steps: the 4 prompt tokens after BOS, then 252.
  const Result r = run_nibble(
      "run -m models/stories260K -p \"Once upon a time\" -n 252 --mxfp4-layers none", cache);
  ASSERT_EQ(r.status, 0) << r.err;
  const std::string expected =
      read_text(fs::path(NIBBLE_SOURCE_DIR) / "models/stories260K/greedy_once_upon_a_time.txt");
  EXPECT_EQ(r.out, expected);
  EXPECT_NE(r.err.find("MXFP4: none | full precision: 35 layers (qkv,o,mlp): not selected "
                       "(--mxfp4-layers none); 1 layer (lm_head): tied"),
            std::string::npos)
      << r.err;
  fs::remove_all(cache);
}

// --device cuda runs on the GPU where there is one (the greedy text of full precision is the
// reference's, on cuBLAS F32), and elsewhere fails with the reason: never a silent CPU run.
TEST(Quickstart, CudaDeviceRunsOnTheGpuOrSaysWhyNot) {
  const fs::path cache = fresh_cache();
  const Result r = run_nibble(
      "run -m models/stories260K -p \"Once upon a time\" -n 8 --mxfp4-layers none --device cuda",
      cache);
  if (r.status == 0) {
    EXPECT_EQ(r.out.rfind("Once upon a time", 0), 0u) << r.out;
    EXPECT_NE(r.err.find("cublas_f32"), std::string::npos) << r.err;
  } else {
    // A sentence for the user (what is missing), no project-internal references, no output.
    EXPECT_NE(r.status, 0) << r.err;
    EXPECT_EQ(r.err.rfind("nibble: error: --device cuda: ", 0), 0u) << r.err;
    EXPECT_TRUE(r.err.find("no CUDA device") != std::string::npos ||
                r.err.find("built without CUDA") != std::string::npos)
        << r.err;
    EXPECT_EQ(r.err.find("issue"), std::string::npos) << r.err;
    EXPECT_EQ(r.out, "") << r.out;
  }
  // A CUDA-only flag on the CPU is refused, not ignored.
  const Result bf16 = run_nibble(
      "run -m models/stories260K -p x -n 1 --device cpu --cuda-activations bf16", cache);
  EXPECT_NE(bf16.status, 0);
  EXPECT_NE(bf16.err.find("--cuda-activations bf16 needs --device cuda"), std::string::npos)
      << bf16.err;
  fs::remove_all(cache);
}

TEST(Quickstart, BadFlagsAreNamed) {
  const fs::path cache = fresh_cache();
  const Result r = run_nibble("run -m models/stories260K -p x --mxfp4-layers qkv,bogus", cache);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.err.find("bogus"), std::string::npos) << r.err;
  const Result missing = run_nibble("run -m models/nope -p x", cache);
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.err.find("models/nope"), std::string::npos) << missing.err;
  fs::remove_all(cache);
}

}  // namespace
