// Next-token choice from logits: greedy (temperature 0: the first largest logit, as llama2.c's
// argmax), or sampling with temperature, then top-k, then top-p (nucleus), from a seeded
// generator so that a run is reproducible.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace nibble {

struct SamplerOptions {
  float temperature = 0.0f;  // 0: greedy
  size_t top_k = 0;          // 0: no limit
  float top_p = 1.0f;        // 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerOptions& options);
  int32_t sample(const float* logits, size_t vocab);

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

// The first index of the largest logit; an error when that logit is not finite.
int32_t argmax(const float* logits, size_t n);
// argmax's check of the logit it found (also for an argmax computed elsewhere, on a GPU).
void check_best_logit(float value);

}  // namespace nibble
