#include "model/eval.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace nibble {
namespace {

// log-softmax of one row, in double (the KLD of near-identical distributions is a small
// difference of large numbers).
void log_softmax(const float* logits, size_t n, std::vector<double>& out) {
  out.resize(n);
  double max = -INFINITY;
  for (size_t i = 0; i < n; ++i) {
    NIBBLE_CHECK(std::isfinite(logits[i]), "logit {} is not finite ({})", i, logits[i]);
    max = std::max(max, double(logits[i]));
  }
  double sum = 0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - max);
  const double log_sum = max + std::log(sum);
  for (size_t i = 0; i < n; ++i) out[i] = double(logits[i]) - log_sum;
}

size_t argmax_of(const std::vector<double>& v) {
  return size_t(std::max_element(v.begin(), v.end()) - v.begin());
}

}  // namespace

EvalResult evaluate(const LlamaModel& model, const LlamaModel* reference,
                    std::span<const int32_t> text, int32_t bos, size_t context) {
  const size_t V = model.config().vocab;
  NIBBLE_CHECK(context >= 2, "evaluation context must be at least 2 tokens, got {}", context);
  NIBBLE_CHECK(!text.empty(), "evaluation text encodes to no tokens");
  NIBBLE_CHECK(!reference || reference->config().vocab == V,
               "reference model has a different vocabulary ({} vs {})",
               reference ? reference->config().vocab : 0, V);
  EvalResult r;
  r.has_reference = reference != nullptr;
  double nll = 0, ref_nll = 0;
  size_t agree = 0;
  std::vector<double> lp, lq;
  for (size_t start = 0; start < text.size(); start += context - 1) {
    const size_t n = std::min(context - 1, text.size() - start);
    if (n < 1) break;
    std::vector<int32_t> chunk;
    chunk.reserve(n + 1);
    chunk.push_back(bos);
    chunk.insert(chunk.end(), text.begin() + start, text.begin() + start + n);
    std::vector<float> logits(chunk.size() * V, NAN), ref_logits;
    KvCache cache = model.make_cache(chunk.size());
    model.forward(chunk, cache, logits.data(), /*all_logits=*/true);
    if (reference) {
      ref_logits.assign(chunk.size() * V, NAN);
      KvCache rc = reference->make_cache(chunk.size());
      reference->forward(chunk, rc, ref_logits.data(), true);
    }
    // Position i predicts chunk[i + 1].
    for (size_t i = 0; i + 1 < chunk.size(); ++i) {
      const int32_t target = chunk[i + 1];
      log_softmax(logits.data() + i * V, V, lq);
      nll -= lq[size_t(target)];
      if (reference) {
        log_softmax(ref_logits.data() + i * V, V, lp);
        ref_nll -= lp[size_t(target)];
        double kl = 0;
        for (size_t v = 0; v < V; ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
        r.kld.push_back(std::max(0.0, kl));
        agree += argmax_of(lp) == argmax_of(lq);
      }
      ++r.predictions;
    }
    ++r.chunks;
  }
  r.nll = nll / double(r.predictions);
  r.perplexity = std::exp(r.nll);
  if (reference) {
    r.reference_nll = ref_nll / double(r.predictions);
    r.reference_perplexity = std::exp(r.reference_nll);
    std::vector<double> sorted = r.kld;
    std::sort(sorted.begin(), sorted.end());
    double sum = 0;
    for (double k : sorted) sum += k;
    r.kld_mean = sum / double(sorted.size());
    r.kld_median = sorted[sorted.size() / 2];
    r.kld_p99 = sorted[std::min(sorted.size() - 1, size_t(std::ceil(0.99 * double(sorted.size()))) - 1)];
    r.kld_max = sorted.back();
    r.top1_agreement = double(agree) / double(r.predictions);
  }
  return r;
}

}  // namespace nibble
