// The seed of a randomised test: NIBBLE_TEST_SEED=<seed> when set (to replay a failure), else
// fresh from std::random_device. A test prints it with every failure in its scope:
//
//   const uint64_t seed = test::test_seed();
//   SCOPED_TRACE(test::seed_trace(seed));
//   std::mt19937 rng(seed);
//
// (std::mt19937 keeps the low 32 bits of the seed; replaying with the printed value gives the
// same stream either way.)
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

namespace nibble::test {

inline uint64_t test_seed() {
  if (const char* s = std::getenv("NIBBLE_TEST_SEED")) {
    char* end = nullptr;
    const uint64_t seed = std::strtoull(s, &end, 10);
    if (*s == '\0' || *end != '\0') {  // a typo must not silently become seed 0
      std::fprintf(stderr, "NIBBLE_TEST_SEED='%s' is not a decimal integer\n", s);
      std::abort();
    }
    return seed;
  }
  return uint64_t(std::random_device{}()) << 32 ^ std::random_device{}();
}

inline std::string seed_trace(uint64_t seed) {
  return "seed " + std::to_string(seed) + " (NIBBLE_TEST_SEED=" + std::to_string(seed) +
         " replays it)";
}

}  // namespace nibble::test
