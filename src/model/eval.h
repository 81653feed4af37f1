// Perplexity of a model over a token sequence and, against a reference model (the same model
// in full precision), the KL divergence of the next-token distributions and the top-1
// agreement, as llama.cpp's `perplexity --kl-divergence` reports them.
//
// The sequence is cut into chunks of `context` tokens; each chunk starts with BOS followed by
// the next context - 1 tokens of the text, runs as one prompt through a fresh KV cache, and
// every next-token prediction inside the chunk is scored.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/llama/llama_model.h"

namespace nibble {

struct EvalResult {
  size_t chunks = 0;
  size_t predictions = 0;
  double nll = 0;            // mean negative log-likelihood (nats)
  double perplexity = 0;     // exp(nll)
  // With a reference model:
  bool has_reference = false;
  double reference_nll = 0, reference_perplexity = 0;
  double kld_mean = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;  // KL(reference || model), nats
  double top1_agreement = 0;  // fraction of predictions whose argmax agrees
  std::vector<double> kld;    // per prediction
};

// `text` without BOS; bos is prepended to every chunk. Throws when the text is too short for
// one prediction.
EvalResult evaluate(const LlamaModel& model, const LlamaModel* reference,
                    std::span<const int32_t> text, int32_t bos, size_t context);

}  // namespace nibble
