// A fixed pool of worker threads for data-parallel loops (quantizer, CPU kernels).
// The calling thread takes part in every loop, so a pool of T threads runs T-1 workers.
//
// Waiting spins before it sleeps: a worker that finished a loop watches for the next one for
// kSpin before it blocks on the condition variable, and the caller watches for the workers'
// chunks the same way. Decode calls one small loop per layer back to back (a 2880x2880 GEMV
// takes ~300 us); waking a sleeping thread costs a futex call and, on a virtual machine, an
// idle vCPU's halt and IPI: on the dev machine's KVM guest an empty 2-thread loop took a median
// 1.04 ms after 2 ms idle, 0.4 us while the worker still spun. Spinning ends after kSpin, so
// an idle process does not burn its cores (and the first loop after idle pays the wake-up).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace nibble {

class ThreadPool {
 public:
  // threads == 0: one per hardware thread.
  explicit ThreadPool(size_t threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  size_t size() const { return workers_.size() + 1; }

  // Calls body(begin, end, thread_index) over [0, n) split into at most size() contiguous
  // chunks of at least `grain` items. Returns when every chunk is done; the first exception
  // thrown by a chunk is rethrown here. Not re-entrant: a body must not call parallel_for.
  void parallel_for(size_t n, size_t grain,
                    const std::function<void(size_t, size_t, size_t)>& body);

  // The process-wide pool. Its size is set once, by the first call (NIBBLE_THREADS or
  // set_default_threads before it, else one per hardware thread).
  static ThreadPool& global();
  static void set_default_threads(size_t threads);

 private:
  static constexpr std::chrono::microseconds kSpin{500};

  void worker_loop(size_t index);

  std::vector<std::thread> workers_;
  std::mutex mutex_;  // guards the loop's fields and error_; the atomics are also read spinning
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(size_t, size_t, size_t)>* body_ = nullptr;
  size_t n_ = 0, chunk_ = 0, chunks_ = 0;
  std::atomic<size_t> generation_{0}, pending_{0};
  std::exception_ptr error_;
  std::atomic<bool> stop_{false};
};

}  // namespace nibble
