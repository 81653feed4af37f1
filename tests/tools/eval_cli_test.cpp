// nibble eval, convert and synth from the command line: eval's report on the shipped
// validation text (the figures docs/quality.md quotes, within the same bounds as
// tests/model/eval_test.cpp), convert's output directory, synth's checkpoint, and their errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <sstream>

#include <nlohmann/json.hpp>

#include "test_files.h"

namespace {

namespace fs = std::filesystem;

using nibble::test::read_text;

struct Result {
  int status = -1;
  std::string out, err;
};

fs::path scratch(const std::string& name) {
  const fs::path p = fs::path(NIBBLE_BINARY_DIR) / "test_tmp" /
                     (name + "-" + std::to_string(std::random_device{}()));
  fs::remove_all(p);
  return p;
}

Result nibble(const std::string& args, const fs::path& cache) {
  const fs::path out = scratch("eval.out"), err = scratch("eval.err");
  fs::create_directories(out.parent_path());
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

double number_after(const std::string& text, const std::string& label) {
  const std::regex re(label + R"( ([0-9.]+))");
  std::smatch m;
  if (!std::regex_search(text, m, re)) return NAN;
  return std::stod(m[1]);
}

TEST(EvalCli, ReferenceReportOnValidationText) {
  const fs::path cache = scratch("cache");
  const Result r = nibble(
      "eval -m models/stories260K --data models/stories260K/validation.txt --reference "
      "--mxfp4-layers all",
      cache);
  ASSERT_EQ(r.status, 0) << r.err;
  const double ppl = number_after(r.out, "perplexity:");
  const double fp = number_after(r.out, "full precision");
  const double mean = number_after(r.out, "mean"), median = number_after(r.out, "median"),
               p99 = number_after(r.out, "p99");
  const double top1 = number_after(r.out, "top-1 agreement:");
  EXPECT_GT(ppl, fp) << r.out;
  EXPECT_LT(ppl / fp, 1.30) << r.out;
  EXPECT_GT(mean, 0.0) << r.out;
  EXPECT_LT(mean, 0.30) << r.out;
  EXPECT_GT(median, 0.0) << r.out;  // NaN (not printed) fails both
  EXPECT_LT(median, 0.18) << r.out;
  EXPECT_LT(p99, 2.0) << r.out;
  EXPECT_GT(top1, 68.0) << r.out;
  EXPECT_NE(r.out.find("2098 predictions"), std::string::npos) << r.out;

  const Result plain = nibble(
      "eval -m models/stories260K --data models/stories260K/validation.txt --mxfp4-layers none",
      cache);
  ASSERT_EQ(plain.status, 0) << plain.err;
  EXPECT_NEAR(number_after(plain.out, "perplexity:"), fp, 1e-3) << plain.out;
  EXPECT_EQ(plain.out.find("KLD"), std::string::npos);

  const Result missing = nibble("eval -m models/stories260K --data nope.txt", cache);
  EXPECT_NE(missing.status, 0);
  EXPECT_NE(missing.err.find("nope.txt"), std::string::npos) << missing.err;
  fs::remove_all(cache);
}

// eval --tokens on a `synth --check` checkpoint reproduces the check's own logits bit for bit
// and its greedy continuation (what scripts/device/llama_gpu_check.sh compares --device cuda
// against), in full precision and in MXFP4 on the check's kernel; misuse is refused.
TEST(EvalCli, TokensDumpLogitsAndGreedyAsSynthCheck) {
  const fs::path cache = scratch("cache"), dir = scratch("synth-tokens");
  const Result made = nibble("synth --arch qwen3 --hidden 128 --heads 4 --kv-heads 2 --head-dim 32 "
                             "--ffn 96 --vocab 200 --check 11 -o '" + dir.string() + "'",
                             cache);
  ASSERT_EQ(made.status, 0) << made.err;
  const nlohmann::json check = nlohmann::json::parse(read_text(dir / "nibble_check.json"));
  std::string ids;
  for (const auto& t : check["tokens"]) ids += (ids.empty() ? "" : ",") + std::to_string(int(t));
  for (const auto& [tag, flags] : {std::pair<std::string, std::string>{"fp", "--mxfp4-layers none"},
                                   {"mxfp4", "--mxfp4-layers all --mxfp4-kernel cpu_simd"}}) {
    SCOPED_TRACE(tag);
    const fs::path dump = scratch("logits-" + tag);
    const Result r = nibble("eval -m '" + dir.string() + "' " + flags + " --tokens " + ids +
                                " --dump-logits '" + dump.string() + "' --greedy 32",
                            cache);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(read_text(dump), read_text(dir / ("nibble_logits_" + tag + ".f32")));
    std::string greedy;
    for (const auto& t : check["greedy_" + tag]) greedy += (greedy.empty() ? "" : " ") + std::to_string(int(t));
    EXPECT_NE(r.out.find("greedy: " + greedy + "\n"), std::string::npos) << r.out << "want " << greedy;
    EXPECT_NE(r.err.find("speed: prompt 11 tokens"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("generated 32 tokens"), std::string::npos) << r.err;
    fs::remove(dump);
  }
  const Result alone = nibble("eval -m '" + dir.string() + "' --tokens " + ids, cache);
  EXPECT_NE(alone.status, 0);
  EXPECT_NE(alone.err.find("--tokens needs --dump-logits FILE and/or --greedy N"), std::string::npos)
      << alone.err;
  const Result both = nibble("eval -m '" + dir.string() + "' --tokens 1 --greedy 2 --data x", cache);
  EXPECT_NE(both.status, 0);
  EXPECT_NE(both.err.find("without --data"), std::string::npos) << both.err;
  const Result stray = nibble("eval -m models/stories260K --data models/stories260K/validation.txt "
                              "--greedy 3",
                              cache);
  EXPECT_NE(stray.status, 0);
  EXPECT_NE(stray.err.find("need --tokens"), std::string::npos) << stray.err;
  const Result range = nibble("eval -m '" + dir.string() + "' --tokens 1,200 --greedy 1", cache);
  EXPECT_NE(range.status, 0);
  EXPECT_NE(range.err.find("token id 200 is outside the vocabulary"), std::string::npos) << range.err;
  fs::remove_all(dir);
  fs::remove_all(cache);
}

TEST(ConvertCli, WritesAHuggingFaceDirectory) {
  const fs::path out = scratch("converted"), cache = scratch("cache");
  const Result r = nibble("convert models/stories260K -o '" + out.string() + "'", cache);
  ASSERT_EQ(r.status, 0) << r.err;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                        "generation_config.json"})
    EXPECT_TRUE(fs::exists(out / f)) << f;
  // The converted directory runs directly, with the same text as the llama2.c directory.
  const Result a = nibble("run -m '" + out.string() + "' -p \"Once upon a time\" -n 40", cache);
  const Result b = nibble("run -m models/stories260K -p \"Once upon a time\" -n 40", cache);
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  const Result bad = nibble("convert README.md -o '" + out.string() + "x'", cache);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("README.md"), std::string::npos) << bad.err;
  fs::remove_all(out);
  fs::remove_all(cache);
}

// stories260K through `nibble convert` and `nibble quantize`: the MXFP4 checkpoint runs, its 30
// MXFP4 layers (quantize keeps K = 172 in BF16) read from the file whatever --mxfp4-layers says,
// with the same text as quantizing the same layers at load.
TEST(QuantizedCli, QuantizedStoriesRunsLikeQuantizingAtLoad) {
  const fs::path hf = scratch("hf"), q = scratch("quantized"), cache = scratch("cache");
  ASSERT_EQ(nibble("convert models/stories260K -o '" + hf.string() + "'", cache).status, 0);
  const Result qr = nibble("quantize '" + hf.string() + "' -o '" + q.string() +
                               "' --mxfp4-layers qkv,o,mlp -q",
                           cache);
  ASSERT_EQ(qr.status, 0) << qr.err;
  const Result pre = nibble("run -m '" + q.string() + "' -p \"Once upon a time\" -n 60 --mxfp4-layers none", cache);
  ASSERT_EQ(pre.status, 0) << pre.err;
  EXPECT_NE(pre.err.find("MXFP4: 30 layers (qkv,o,mlp)"), std::string::npos) << pre.err;
  const Result at_load = nibble(
      "run -m models/stories260K -p \"Once upon a time\" -n 60 --mxfp4-layers qkv,o,mlp "
      "--exclude '*down_proj'",
      cache);
  ASSERT_EQ(at_load.status, 0) << at_load.err;
  EXPECT_EQ(pre.out, at_load.out);
  EXPECT_EQ(pre.out.rfind("Once upon a time", 0), 0u) << pre.out;
  fs::remove_all(hf);
  fs::remove_all(q);
  fs::remove_all(cache);
}

TEST(SynthCli, WritesEachFamilyAndRefusesUnknownOnes) {
  const fs::path cache = scratch("cache");
  for (const char* arch : {"llama", "mistral", "qwen2", "qwen3"}) {
    const fs::path out = scratch(std::string("synth-") + arch);
    const Result r = nibble(std::string("synth --arch ") + arch +
                                " --hidden 128 --heads 2 --kv-heads 1 --head-dim 64 --ffn 64 "
                                "--vocab 100 --check 8 -o '" + out.string() + "'",
                            cache);
    ASSERT_EQ(r.status, 0) << r.err;
    EXPECT_TRUE(fs::exists(out / "model.safetensors"));
    EXPECT_TRUE(fs::exists(out / "nibble_logits_mxfp4.f32"));
    EXPECT_TRUE(fs::exists(out / "mxfp4_dequant" / "model.safetensors"));
    EXPECT_NE(read_text(out / "config.json").find(arch), std::string::npos);
    fs::remove_all(out);
  }
  const Result bad = nibble("synth --arch gpt2 -o '" + scratch("x").string() + "'", cache);
  EXPECT_NE(bad.status, 0);
  EXPECT_NE(bad.err.find("gpt2"), std::string::npos) << bad.err;
}

// Per-layer Qwen windows from the command line (scripts/device/llama_check.sh uses both forms):
// the config.json written says which layers, and a family without them refuses the flags.
TEST(SynthCli, QwenWindowsPerLayer) {
  const fs::path cache = scratch("cache");
  const std::string shape = " --hidden 128 --heads 2 --kv-heads 1 --head-dim 64 --ffn 64 --vocab 100 --check 20";
  const fs::path suffix = scratch("synth-qwen2-window");
  const Result a = nibble("synth --arch qwen2 --sliding-window 8 --max-window-layers 1" + shape +
                              " -o '" + suffix.string() + "'",
                          cache);
  ASSERT_EQ(a.status, 0) << a.err;
  EXPECT_NE(a.out.find("window 8 on layers 1"), std::string::npos) << a.out;
  const std::string ca = read_text(suffix / "config.json");
  EXPECT_NE(ca.find("\"use_sliding_window\": true"), std::string::npos) << ca;
  EXPECT_NE(ca.find("\"max_window_layers\": 1"), std::string::npos) << ca;
  EXPECT_NE(ca.find("\"sliding_window\": 8"), std::string::npos) << ca;
  EXPECT_EQ(ca.find("layer_types"), std::string::npos) << ca;
  const fs::path listed = scratch("synth-qwen3-window");
  const Result b = nibble("synth --arch qwen3 --layers 3 --sliding-window 8 --window-layers 0,2" +
                              shape + " -o '" + listed.string() + "'",
                          cache);
  ASSERT_EQ(b.status, 0) << b.err;
  EXPECT_NE(b.out.find("window 8 on layers 0,2"), std::string::npos) << b.out;
  EXPECT_NE(read_text(listed / "config.json").find("\"sliding_attention\""), std::string::npos);
  const Result mistral = nibble("synth --arch mistral --sliding-window 8 --max-window-layers 1" +
                                    shape + " -o '" + scratch("x").string() + "'",
                                cache);
  EXPECT_NE(mistral.status, 0);
  EXPECT_NE(mistral.err.find("--max-window-layers"), std::string::npos) << mistral.err;
  const Result llama = nibble("synth --arch llama --sliding-window 8" + shape + " -o '" +
                                  scratch("x").string() + "'",
                              cache);
  EXPECT_NE(llama.status, 0);
  EXPECT_NE(llama.err.find("--sliding-window"), std::string::npos) << llama.err;
  fs::remove_all(suffix);
  fs::remove_all(listed);
}

}  // namespace
