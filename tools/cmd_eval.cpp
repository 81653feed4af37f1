// nibble eval: perplexity of a model over a text file and, with --reference, the KL divergence
// and top-1 agreement of its next-token distributions against the same model in full
// precision (llama.cpp `perplexity --kl-divergence` style: mean, median, 99th percentile).
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "command.h"
#include "model/eval.h"
#include "model/model_loader.h"
#include "model_flags.h"
#include "tokenizer/tokenizer.h"

namespace nibble {
namespace {

struct Args {
  ModelFlags model;
  std::string data;
  bool reference = false;
  size_t context = 256;
};

void run(const Args& a) {
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
  command.add_option("--data", args->data, "text file to evaluate on")->required();
  command.add_flag("--reference", args->reference,
                   "also run the model in full precision and report KL divergence and top-1 "
                   "agreement against it");
  command.add_option("-c,--context", args->context, "tokens per chunk (BOS + text)")
      ->capture_default_str();
  command.callback([args] { run(*args); });
}

const bool registered = register_command(
    {"eval", "Perplexity over a text, and KL divergence against full precision", 30, &setup});

}  // namespace
}  // namespace nibble
