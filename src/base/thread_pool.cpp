#include "base/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

namespace nibble {

namespace {
std::atomic<size_t> g_default_threads{0};

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or until `budget` has passed; the caller then waits on its condition.
template <class Done>
void spin_until(Done done, std::chrono::microseconds budget) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  for (unsigned i = 1; !done(); ++i) {
    cpu_relax();
    if (i % 256 == 0 && std::chrono::steady_clock::now() > deadline) return;
  }
}
}  // namespace

ThreadPool::ThreadPool(size_t threads) {
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  for (size_t i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::worker_loop(size_t index) {
  size_t seen = 0;
  for (;;) {
    spin_until([&] { return stop_.load(std::memory_order_relaxed) ||
                            generation_.load(std::memory_order_acquire) != seen; },
               kSpin);
    std::unique_lock lock(mutex_);
    wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    // Worker i takes chunk i; the caller takes chunk 0.
    if (index >= chunks_) continue;
    const size_t begin = index * chunk_, end = std::min(n_, begin + chunk_);
    const auto* body = body_;
    lock.unlock();
    std::exception_ptr error;
    try {
      (*body)(begin, end, index);
    } catch (...) {
      error = std::current_exception();
    }
    if (error) {
      std::lock_guard error_lock(mutex_);
      if (!error_) error_ = error;
    }
    // The last chunk wakes the caller under the mutex, so that a caller that has just found
    // pending_ != 0 and is about to wait cannot miss it.
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard done_lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(size_t n, size_t grain,
                              const std::function<void(size_t, size_t, size_t)>& body) {
  if (n == 0) return;
  grain = std::max<size_t>(grain, 1);
  // At most n / grain chunks, so that each holds at least `grain` items (as the header says).
  const size_t chunks = std::min(size(), std::max<size_t>(n / grain, 1));
  if (chunks <= 1) {
    body(0, n, 0);
    return;
  }
  const size_t chunk = (n + chunks - 1) / chunks;
  {
    std::lock_guard lock(mutex_);
    body_ = &body;
    n_ = n;
    chunk_ = chunk;
    chunks_ = (n + chunk - 1) / chunk;
    pending_ = chunks_ - 1;
    error_ = nullptr;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();  // no system call when no worker is blocked
  std::exception_ptr error;
  try {
    body(0, std::min(n, chunk), 0);
  } catch (...) {
    error = std::current_exception();
  }
  const auto finished = [&] { return pending_.load(std::memory_order_acquire) == 0; };
  spin_until(finished, kSpin);
  std::unique_lock lock(mutex_);
  done_.wait(lock, finished);
  if (!error) error = error_;
  body_ = nullptr;
  lock.unlock();
  if (error) std::rethrow_exception(error);
}

void ThreadPool::set_default_threads(size_t threads) { g_default_threads = threads; }

ThreadPool& ThreadPool::global() {
  static ThreadPool pool([] {
    if (const char* env = std::getenv("NIBBLE_THREADS")) return size_t(std::strtoul(env, nullptr, 10));
    return g_default_threads.load();
  }());
  return pool;
}

}  // namespace nibble
