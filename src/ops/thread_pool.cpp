#include "epwa/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EPWA_PAUSE() _mm_pause()
#else
#define EPWA_PAUSE() std::this_thread::yield()
#endif

namespace epwa {
namespace {
// Waiting for a job or for the workers: spin briefly (decode issues thousands of small jobs per
// second and a futex wake costs more than a short spin), then yield so that an oversubscribed core
// runs whoever has work, then sleep on a futex.
constexpr int kSpinRounds = 256, kYieldRounds = 64;

// The pool whose job this thread is running (caller or worker), to run nested calls serially.
thread_local const ThreadPool* tls_active = nullptr;

template <class T, class Pred>
void spin_then_wait(std::atomic<T>& a, Pred done) {
  for (int i = 0; i < kSpinRounds + kYieldRounds; ++i) {
    const T v = a.load(std::memory_order_acquire);
    if (done(v)) return;
    if (i < kSpinRounds)
      EPWA_PAUSE();
    else
      std::this_thread::yield();
  }
  for (;;) {
    const T v = a.load(std::memory_order_acquire);
    if (done(v)) return;
    a.wait(v, std::memory_order_acquire);
  }
}
}  // namespace

struct ThreadPool::State {
  std::vector<std::thread> workers;
  std::mutex run_mutex;  // one job at a time when several outside threads share the pool
  // The current job.
  Task task = nullptr;
  void* ctx = nullptr;
  int64_t n = 0, chunk = 1, n_chunks = 0;
  std::atomic<int64_t> next{0};
  std::atomic<uint32_t> generation{0};  // bumped to start a job (or to stop)
  std::atomic<uint32_t> pending{0};     // workers that have not finished the current job
  bool stop = false;
  std::mutex error_mutex;
  std::exception_ptr error;

  void work() {
    for (;;) {
      const int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= n_chunks) return;
      const int64_t b = c * chunk;
      try {
        task(ctx, b, std::min(n, b + chunk));
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        next.store(n_chunks, std::memory_order_relaxed);  // skip the remaining chunks
      }
    }
  }
};

int ThreadPool::default_threads() {
  if (const char* env = std::getenv("EPWA_THREADS")) {
    char* end = nullptr;
    const long v = std::strtol(env, &end, 10);
    if (end != env && *end == '\0' && v > 0 && v <= 1024) return static_cast<int>(v);
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw == 0 ? 1 : static_cast<int>(hw);
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(default_threads());
  return pool;
}

ThreadPool::ThreadPool(int threads) : s_(std::make_unique<State>()) {
  threads_ = std::max(1, threads <= 0 ? default_threads() : threads);
  s_->workers.reserve(static_cast<size_t>(threads_ - 1));
  for (int i = 1; i < threads_; ++i) s_->workers.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(s_->run_mutex);
    s_->stop = true;
    s_->generation.fetch_add(1, std::memory_order_release);
    s_->generation.notify_all();
  }
  for (auto& t : s_->workers) t.join();
}

void ThreadPool::worker_loop() {
  State& s = *s_;
  tls_active = this;
  // Generation 0 is the state at construction: a job started before this thread ran is still seen.
  uint32_t seen = 0;
  for (;;) {
    spin_then_wait(s.generation, [&](uint32_t g) { return g != seen; });
    seen = s.generation.load(std::memory_order_acquire);
    if (s.stop) return;
    s.work();
    if (s.pending.fetch_sub(1, std::memory_order_acq_rel) == 1) s.pending.notify_one();
  }
}

void ThreadPool::run(int64_t n, int64_t grain, Task task, void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // About four chunks per thread balance uneven progress without much atomic traffic.
  const int64_t chunk = std::max(grain, (n + 4 * threads_ - 1) / (4 * threads_));
  if (threads_ == 1 || n <= chunk || tls_active == this) {
    task(ctx, 0, n);
    return;
  }
  State& s = *s_;
  std::lock_guard lock(s.run_mutex);
  s.task = task;
  s.ctx = ctx;
  s.n = n;
  s.chunk = chunk;
  s.n_chunks = (n + chunk - 1) / chunk;
  s.next.store(0, std::memory_order_relaxed);
  s.error = nullptr;
  s.pending.store(static_cast<uint32_t>(threads_ - 1), std::memory_order_relaxed);
  s.generation.fetch_add(1, std::memory_order_release);
  s.generation.notify_all();

  const ThreadPool* outer = tls_active;
  tls_active = this;
  s.work();
  tls_active = outer;
  spin_then_wait(s.pending, [](uint32_t p) { return p == 0; });
  if (s.error) std::rethrow_exception(s.error);
}

}  // namespace epwa
