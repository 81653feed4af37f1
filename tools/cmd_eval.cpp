// nibble eval: perplexity of a model over a text file and, with --reference, the KL divergence
// and top-1 agreement of its next-token distributions against the same model in full
// precision (llama.cpp `perplexity --kl-divergence` style: mean, median, 99th percentile).
//
// With --tokens ID,ID,... instead of --data: the raw logits of that sequence (no BOS added,
// one pass) for comparisons between devices or builds (scripts/device/llama_gpu_check.sh):
// --dump-logits FILE writes them [tokens, vocab] F32 little-endian; --greedy N prints the N
// greedy tokens after the sequence ("greedy: ..."), each from a one-token decode step, then a
// speed line (the decode benchmark of a model without a tokenizer).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include <fmt/ranges.h>

#include "command.h"
#include "model/eval.h"
#include "model/model_loader.h"
#include "model_flags.h"

#if NIBBLE_WITH_CUDA
#include "kernels/cuda/cuda_bandwidth.h"
#endif
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

struct Args {
  ModelFlags model;
  std::string data;
  bool reference = false;
  size_t context = 256;
  std::vector<int32_t> tokens;
  std::string dump_logits;
  size_t greedy = 0;
};

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// --tokens: logits of the sequence, and its greedy continuation (as `nibble synth --check`
// computes both, so the two can be compared file to file).
void run_tokens(const Args& a) {
  const ModelLoadOptions options = a.model.load_options();
  LoadedModel loaded = load_model(a.model.model, options);
  const LlamaModel& model = *loaded.model;
  for (const std::string& w : model.warnings()) std::fprintf(stderr, "nibble: warning: %s\n", w.c_str());
  const size_t V = model.config().vocab, n = a.tokens.size();
  fmt::print("layers: {}\n", summarize_plan(model.plan()));
  if (!a.dump_logits.empty()) {
    std::vector<float> logits(n * V);
    KvCache cache = model.make_cache(n);
    model.forward(a.tokens, cache, logits.data(), /*all_logits=*/true);
    std::ofstream out(a.dump_logits, std::ios::binary);
    out.write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * 4));
    out.close();
    NIBBLE_CHECK(out.good(), "--dump-logits {}: write failed", a.dump_logits);
    fmt::print("logits: {} x {} F32 written to {}\n", n, V, a.dump_logits);
  }
  if (a.greedy == 0) return;
  KvCache cache = model.make_cache(n + a.greedy);
  const auto t0 = Clock::now();
  int32_t next = model.forward_greedy(a.tokens, cache);
  const double prompt_s = seconds_since(t0);
  std::vector<int32_t> out;
  const auto t1 = Clock::now();
  size_t steps = 0;
  for (size_t i = 0; i < a.greedy; ++i) {
    out.push_back(next);
    if (i + 1 == a.greedy) break;
    next = model.forward_greedy(std::span<const int32_t>(&next, 1), cache);
    ++steps;
  }
  const double gen_s = seconds_since(t1);
  model.drain();  // the step run ahead for a next call: the copy benchmark below wants the GPU
  fmt::print("greedy: {}\n", fmt::join(out, " "));
  std::fprintf(stderr,
               "speed: prompt %zu tokens, %.1f tokens/s | generated %zu tokens, %.1f tokens/s, "
               "%.3f ms/token | %s | weights %.1f MiB | load %.2f s\n",
               n, n / prompt_s, out.size(), steps > 0 ? steps / gen_s : 0.0,
               steps > 0 ? gen_s * 1e3 / steps : 0.0, options.device.name.c_str(),
               model.weight_bytes() / 1048576.0, loaded.load_seconds);
#if NIBBLE_WITH_CUDA
  if (model.device() == DeviceKind::cuda && steps > 0) {
    // The decode floor: every linear layer's weights (the tied classifier reads the whole
    // embedding table) stream from memory once per token, at the device's copy bandwidth.
    size_t read = 0;
    for (const LinearPlanEntry& e : model.plan()) read += e.weight_bytes;
    const double copy = cuda_copy_bandwidth(size_t(1) << 30, 20, nullptr);
    const double floor_ms = double(read) / copy * 1e3, ms = gen_s * 1e3 / double(steps);
    std::fprintf(stderr,
                 "floor: %.1f MiB of linear-layer weights read per token / copy %.0f GB/s (read + "
                 "written) = %.3f ms/token; decode at %.0f %% of it\n",
                 double(read) / 1048576.0, copy / 1e9, floor_ms, 100.0 * floor_ms / ms);
  }
#endif
}

void run(const Args& a) {
  if (!a.tokens.empty()) {
    NIBBLE_CHECK(a.data.empty() && !a.reference,
                 "--tokens evaluates a token sequence: give it without --data and --reference");
    NIBBLE_CHECK(!a.dump_logits.empty() || a.greedy > 0,
                 "--tokens needs --dump-logits FILE and/or --greedy N");
    run_tokens(a);
    return;
  }
  NIBBLE_CHECK(!a.data.empty(), "give --data FILE (a text), or --tokens ID,ID,...");
  NIBBLE_CHECK(a.dump_logits.empty() && a.greedy == 0, "--dump-logits and --greedy need --tokens");
  std::ifstream in(a.data, std::ios::binary);
  NIBBLE_CHECK(in.good(), "--data {}: cannot open", a.data);
  std::stringstream text;
  text << in.rdbuf();

  const auto start = std::chrono::steady_clock::now();
  const ModelLoadOptions options = a.model.load_options();
  LoadedModel loaded = load_model(a.model.model, options);
  for (const std::string& w : loaded.model->warnings())
    std::fprintf(stderr, "nibble: warning: %s\n", w.c_str());
  LoadedModel reference;
  if (a.reference) {
    ModelLoadOptions fp = options;
    fp.mxfp4_layers = "none";
    fp.include.clear();
    reference = load_model(a.model.model, fp);
  }
  const auto tokenizer = Tokenizer::load(loaded.directory);
  const std::vector<int32_t> ids = tokenizer->encode(text.str(), /*add_special_tokens=*/false);
  NIBBLE_CHECK(tokenizer->bos_id().has_value(),
               "{}: the tokenizer has no BOS token; eval starts every chunk with one",
               loaded.directory.string());
  const size_t context = std::min(a.context, loaded.model->config().max_seq);
  const EvalResult r = evaluate(*loaded.model, a.reference ? reference.model.get() : nullptr, ids,
                                *tokenizer->bos_id(), context);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  fmt::print("eval: {} over {}: {} tokens, {} predictions in {} chunks of <= {} tokens ({:.1f} s)\n",
             a.model.model, a.data, ids.size(), r.predictions, r.chunks, context, seconds);
  fmt::print("layers: {}\n", summarize_plan(loaded.model->plan()));
  if (a.reference) {
    fmt::print("perplexity: {:.4f} (full precision {:.4f}, ratio {:.4f})\n", r.perplexity,
               r.reference_perplexity, r.perplexity / r.reference_perplexity);
    fmt::print("KLD vs full precision: mean {:.6f}, median {:.6f}, p99 {:.6f}, max {:.6f} nats\n",
               r.kld_mean, r.kld_median, r.kld_p99, r.kld_max);
    fmt::print("top-1 agreement: {:.2f} %\n", 100.0 * r.top1_agreement);
  } else {
    fmt::print("perplexity: {:.4f}\n", r.perplexity);
  }
}

void setup(CLI::App& command) {
  auto args = std::make_shared<Args>();
  args->model.add_to(command);
  command.add_option("--data", args->data, "text file to evaluate on");
  command.add_flag("--reference", args->reference,
                   "also run the model in full precision and report KL divergence and top-1 "
                   "agreement against it");
  command.add_option("-c,--context", args->context, "tokens per chunk (BOS + text)")
      ->capture_default_str();
  command.add_option("--tokens", args->tokens,
                     "instead of --data: a token id sequence (comma-separated), run as one "
                     "prompt without BOS")
      ->delimiter(',');
  command.add_option("--dump-logits", args->dump_logits,
                     "with --tokens: write the logits of every position, [tokens, vocab] F32");
  command.add_option("--greedy", args->greedy,
                     "with --tokens: print the N greedy tokens that follow, and a speed line");
  command.callback([args] { run(*args); });
}

const bool registered = register_command(
    {"eval", "Perplexity over a text, and KL divergence against full precision", 30, &setup});

}  // namespace
}  // namespace nibble
