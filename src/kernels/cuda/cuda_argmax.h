// The greedy token on the GPU: per row of logits, the first index of the largest value, as
// argmax() in model/sampler.h computes it on the host, so that a decode step copies 8 bytes
// to the host instead of the vocabulary's logits (513 KB for Llama 3) and the host scans none.
//
// Each row's answer is one 64-bit key, the largest of the keys of its values, combined with
// atomicMax from every block that reads part of the row:
//
//   key(v, i) = order(v) << 32 | (0xffffffff - i)
//
// order() maps F32 bits to unsigned integers in the order of the values (so the larger value
// wins, and of equal values the smaller index). A NaN does not take part (argmax's comparisons
// never pick one), except at index 0, where argmax keeps it as its first candidate and then
// reports non-finite logits: there it becomes the largest key of all, which decodes to NaN.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace nibble {

struct ArgmaxLaunch {
  const float* logits = nullptr;  // [rows, cols] F32, device
  size_t rows = 0, cols = 0;
  unsigned long long* keys = nullptr;  // [rows], device; zero before the launch
};

// Enqueues the reduction on `stream`, chained (cuda_launch.cuh). The caller zeroes `keys`
// earlier on the stream (at the start of a forward, say: a memset between the logits' kernel
// and this one would cost the chaining). cudaErrorInvalidValue for null pointers, cols >= 2^32
// or rows beyond 65535.
cudaError_t cuda_argmax_rows(const ArgmaxLaunch& launch, cudaStream_t stream);

// The next decode step's input, on the device: step[0] += advance (the position after this
// chunk) and step[1] = the greedy token of *key, or 0 where the key holds none below `vocab`
// (non-finite logits, which the host reports when it reads the key). Chained after
// cuda_argmax_rows, so that a step launched right behind it finds its token without a trip
// through the host (LlamaCudaExecutor runs greedy decode steps one ahead).
struct GreedyFeedLaunch {
  const unsigned long long* key = nullptr;  // device, written by cuda_argmax_rows
  int32_t* step = nullptr;                  // device: [position, token ids...]
  int32_t advance = 0;
  uint32_t vocab = 0;
};
cudaError_t cuda_greedy_feed(const GreedyFeedLaunch& launch, cudaStream_t stream);

// A key's value and index: *index is the row's greedy token when *value is finite.
void decode_argmax_key(unsigned long long key, float* value, uint32_t* index);

}  // namespace nibble
