// ThreadPool: every index covered exactly once, chunking within the limits, exceptions carried
// back to the caller (the pool stays usable), and many loops without a lost wake-up: back to
// back (workers still spinning) and after pauses longer than the spin (workers asleep).
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "base/cpu_features.h"
#include "base/error.h"
#include "base/thread_pool.h"

namespace nibble {
namespace {

TEST(ThreadPool, CoversEveryIndexOnceWithinTheChunkLimits) {
  std::mt19937 rng(std::random_device{}());
  for (size_t threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int trial = 0; trial < 50; ++trial) {
      const size_t n = rng() % 1000, grain = 1 + rng() % 64;
      std::vector<std::atomic<int>> hits(n);
      std::mutex mutex;
      std::vector<std::pair<size_t, size_t>> chunks;
      std::set<size_t> thread_ids;
      pool.parallel_for(n, grain, [&](size_t begin, size_t end, size_t thread) {
        ASSERT_LT(begin, end);
        ASSERT_LE(end, n);
        for (size_t i = begin; i < end; ++i) hits[i]++;
        std::lock_guard lock(mutex);
        chunks.emplace_back(begin, end);
        EXPECT_TRUE(thread_ids.insert(thread).second) << "thread index " << thread << " used twice";
        EXPECT_LT(thread, threads);
      });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i << " of " << n;
      EXPECT_LE(chunks.size(), threads);
      if (n > 0) {
        EXPECT_GE(chunks.size(), 1u);
        // Chunks hold at least `grain` items, except the last one.
        std::sort(chunks.begin(), chunks.end());
        for (size_t c = 0; c + 1 < chunks.size(); ++c)
          EXPECT_GE(chunks[c].second - chunks[c].first, std::min(grain, n)) << "n " << n << " grain " << grain;
      } else {
        EXPECT_TRUE(chunks.empty());
      }
    }
  }
}

TEST(ThreadPool, ExceptionsReachTheCallerAndThePoolKeepsWorking) {
  ThreadPool pool(3);
  for (size_t failing_chunk : {0, 1, 2}) {  // the caller's own chunk and workers' chunks
    try {
      pool.parallel_for(300, 1, [&](size_t begin, size_t, size_t) {
        if (begin / 100 == failing_chunk) NIBBLE_THROW("chunk {} failed", failing_chunk);
      });
      ADD_FAILURE() << "no exception from chunk " << failing_chunk;
    } catch (const Error& e) {
      EXPECT_EQ(e.message(), fmt::format("chunk {} failed", failing_chunk));
    }
    std::atomic<size_t> sum{0};
    pool.parallel_for(1000, 1, [&](size_t begin, size_t end, size_t) {
      for (size_t i = begin; i < end; ++i) sum += i;
    });
    EXPECT_EQ(sum.load(), 999u * 1000u / 2);
  }
}

TEST(ThreadPool, ManyLoopsBackToBack) {
  ThreadPool pool(2);
  std::atomic<size_t> total{0};
  for (int loop = 0; loop < 3000; ++loop)
    pool.parallel_for(64, 1, [&](size_t begin, size_t end, size_t) { total += end - begin; });
  EXPECT_EQ(total.load(), 3000u * 64u);
}

TEST(ThreadPool, LoopsAfterThePoolHasGoneToSleep) {
  ThreadPool pool(3);
  std::atomic<size_t> total{0};
  for (int loop = 0; loop < 40; ++loop) {
    // Pauses past the 500 us spin, so that the workers block and must be woken; then a short
    // burst while they still spin. Both waits of the caller are taken too: a worker's chunk
    // that outlasts the spin.
    std::this_thread::sleep_for(std::chrono::microseconds(loop % 2 ? 2000 : 50));
    pool.parallel_for(3, 1, [&](size_t begin, size_t end, size_t thread) {
      if (loop % 4 == 1 && thread == 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));
      total += end - begin;
    });
  }
  EXPECT_EQ(total.load(), 40u * 3u);
}

TEST(CpuFeatures, NamesTheTargetAndTheCpu) {
  const std::string target = cpu_simd_target();
  EXPECT_FALSE(target.empty());
  const std::set<std::string> known = {"AVX3_DL", "AVX3", "AVX2", "SSE4", "SSSE3", "EMU128",
                                       "SCALAR", "NEON", "SVE", "SVE2", "SVE_256", "SVE2_128",
                                       "scalar"};
  EXPECT_TRUE(known.count(target)) << target;
  EXPECT_FALSE(cpu_model_name().empty());
}

}  // namespace
}  // namespace nibble
