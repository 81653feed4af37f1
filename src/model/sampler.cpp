#include "model/sampler.h"

#include <algorithm>
#include <cmath>

#include "base/error.h"

namespace nibble {

int32_t argmax(const float* logits, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  check_best_logit(logits[best]);
  return int32_t(best);
}

void check_best_logit(float value) {
  NIBBLE_CHECK(std::isfinite(value), "logits are not finite (NaN or Inf in the model output)");
}

Sampler::Sampler(const SamplerOptions& options) : options_(options), rng_(options.seed) {
  NIBBLE_CHECK(options.temperature >= 0, "--temp must be >= 0, got {}", options.temperature);
  NIBBLE_CHECK(options.top_p > 0 && options.top_p <= 1, "--top-p must be in (0, 1], got {}",
               options.top_p);
}

int32_t Sampler::sample(const float* logits, size_t vocab) {
  if (options_.temperature == 0.0f) return argmax(logits, vocab);
  candidates_.resize(vocab);
  for (size_t i = 0; i < vocab; ++i) {
    NIBBLE_CHECK(!std::isnan(logits[i]), "logit {} is NaN", i);
    candidates_[i] = {logits[i] / options_.temperature, int32_t(i)};
  }
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t keep = vocab;
  if (options_.top_k > 0 && options_.top_k < vocab) {
    keep = options_.top_k;
    std::partial_sort(candidates_.begin(), candidates_.begin() + keep, candidates_.end(), by_logit);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  // Softmax over the kept candidates (sorted, largest first).
  const float max = candidates_[0].first;
  double sum = 0;
  for (size_t i = 0; i < keep; ++i) sum += (candidates_[i].first = std::exp(candidates_[i].first - max));
  if (options_.top_p < 1.0f) {
    double cumulative = 0;
    for (size_t i = 0; i < keep; ++i) {
      cumulative += candidates_[i].first / sum;
      if (cumulative >= options_.top_p) {
        keep = i + 1;
        break;
      }
    }
    sum = 0;
    for (size_t i = 0; i < keep; ++i) sum += candidates_[i].first;
  }
  const double r = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  double acc = 0;
  for (size_t i = 0; i < keep; ++i) {
    acc += candidates_[i].first;
    if (r < acc) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace nibble
