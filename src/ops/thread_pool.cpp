#include "epwa/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "epwa/platform.hpp"

#ifdef EPWA_POOL_STATS
#include <chrono>
#include <cstdio>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EPWA_PAUSE() _mm_pause()
#else
#define EPWA_PAUSE() std::this_thread::yield()
#endif

namespace epwa {
namespace {
// Waiting for a job or for the last chunks: spin briefly (decode issues hundreds of small jobs per
// token and a futex wake costs more than a short spin), then yield so that an oversubscribed core
// runs whoever has work, then sleep on a futex. (On the idle machine workers joined 99.7% of
// decode's jobs within 3 us with these rounds; a time-based 2 ms yield phase changed nothing
// measurable: docs/history/PERF-issue9.md, "Profiles".)
constexpr int kSpinRounds = 256, kYieldRounds = 64;

#ifdef EPWA_POOL_STATS
// Profiling build only (docs/history/PERF-issue9.md, "Profiles"): per job, its wall time, the
// caller's wait for the last chunks, each thread's time inside chunks, and how late the workers
// join.
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
struct PoolStats {
  std::atomic<int64_t> jobs{0}, serial{0}, chunks{0}, wall{0}, tail{0}, caller_busy{0},
      worker_busy{0}, worker_joined{0}, join_latency{0}, sleeps{0};
  ~PoolStats() {
    const auto ms = [](const std::atomic<int64_t>& v) { return v.load() / 1e6; };
    std::fprintf(
        stderr,
        "pool stats: %lld parallel jobs (%lld run serially), %lld chunks; job wall %.1f ms, "
        "caller busy %.1f ms, worker busy %.1f ms, caller waiting for claimed chunks "
        "%.1f ms; worker joined %lld jobs, mean join latency %.2f us; %lld futex sleeps\n",
        static_cast<long long>(jobs.load()), static_cast<long long>(serial.load()),
        static_cast<long long>(chunks.load()), ms(wall), ms(caller_busy), ms(worker_busy), ms(tail),
        static_cast<long long>(worker_joined.load()),
        worker_joined.load() ? join_latency.load() / 1e3 / worker_joined.load() : 0.0,
        static_cast<long long>(sleeps.load()));
  }
};
PoolStats g_stats;
#endif

// The pool whose job this thread is running (caller or worker), to run nested calls serially.
thread_local const ThreadPool* tls_active = nullptr;

// Spins, yields, then sleeps on `a` until done(a) holds. `sleepers` counts the threads that may be
// asleep on `a`, so that the notifying side makes the futex call only when someone sleeps.
template <class Pred>
void spin_then_wait(std::atomic<uint32_t>& a, std::atomic<int>& sleepers, Pred done) {
  for (int i = 0; i < kSpinRounds + kYieldRounds; ++i) {
    if (done(a.load(std::memory_order_acquire))) return;
    if (i < kSpinRounds)
      EPWA_PAUSE();
    else
      std::this_thread::yield();
  }
#ifdef EPWA_POOL_STATS
  ++g_stats.sleeps;
#endif
  for (;;) {
    sleepers.fetch_add(1, std::memory_order_seq_cst);
    const uint32_t v = a.load(std::memory_order_seq_cst);
    if (!done(v)) wait_while_equal(a, v);
    sleepers.fetch_sub(1, std::memory_order_relaxed);
    if (done(a.load(std::memory_order_acquire))) return;
  }
}
}  // namespace

// A job is published as one 64-bit word: its number (high half) and the count of chunks not yet
// claimed (low half). Threads claim chunk `remaining - 1` by compare-and-swap against the job
// number they saw, so a worker that wakes late can never claim a chunk of a later job, and the
// caller waits only for chunks that were claimed, never for a worker that has not started (on a
// busy machine a descheduled worker no longer stalls every job).
struct ThreadPool::State {
  std::vector<std::thread> workers;
  std::mutex run_mutex;  // one job at a time when several outside threads share the pool
  // The current job; written before `word` publishes it, stable while any of its chunks is open.
  Task task = nullptr;
  void* ctx = nullptr;
  int64_t n = 0, chunk = 1;
  uint32_t n_chunks = 0;
  std::atomic<uint64_t> word{0};
  std::atomic<uint32_t> done{0};   // chunks finished (run or skipped after an error)
  std::atomic<uint32_t> epoch{0};  // bumped per job (and to stop): what idle workers sleep on
  std::atomic<int> epoch_sleepers{0}, done_sleepers{0};
  std::atomic<bool> failed{false};
  // Read by the workers while they spin, written by the destructor (atomic: ThreadSanitizer).
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::exception_ptr error;
#ifdef EPWA_POOL_STATS
  std::atomic<int64_t> published_ns{0};
#endif

  // Claims and runs chunks of job `job` until none is left.
  void work(uint32_t job, bool caller) {
    uint64_t w = word.load(std::memory_order_acquire);
#ifdef EPWA_POOL_STATS
    bool first = true;
    int64_t busy = 0;
    struct Flush {
      int64_t& busy;
      bool caller;
      ~Flush() { (caller ? g_stats.caller_busy : g_stats.worker_busy) += busy; }
    } flush{busy, caller};
#endif
    for (;;) {
      if (static_cast<uint32_t>(w >> 32) != job || static_cast<uint32_t>(w) == 0) return;
      if (!word.compare_exchange_weak(w, w - 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
        continue;
      // The job cannot finish before this chunk does: its fields are stable until then.
      const uint32_t total = n_chunks;
      const int64_t b = static_cast<int64_t>(static_cast<uint32_t>(w) - 1) * chunk;
#ifdef EPWA_POOL_STATS
      const int64_t t0 = now_ns();
      if (first && !caller) {
        ++g_stats.worker_joined;
        g_stats.join_latency += t0 - published_ns.load(std::memory_order_relaxed);
      }
      first = false;
      ++g_stats.chunks;
      struct Busy {
        int64_t& busy;
        int64_t t0;
        ~Busy() { busy += now_ns() - t0; }
      } timer{busy, t0};
#endif
      if (!failed.load(std::memory_order_relaxed)) {
        try {
          task(ctx, b, std::min(n, b + chunk));
        } catch (...) {
          std::lock_guard lock(error_mutex);
          if (!error) error = std::current_exception();
          failed.store(true, std::memory_order_relaxed);  // skip the remaining chunks
        }
      }
      if (done.fetch_add(1, std::memory_order_seq_cst) + 1 == total &&
          done_sleepers.load(std::memory_order_seq_cst) > 0)
        wake_all(done);
      w = word.load(std::memory_order_acquire);
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
    s_->stop.store(true, std::memory_order_relaxed);  // published by the epoch bump below
    s_->epoch.fetch_add(1, std::memory_order_seq_cst);
    wake_all(s_->epoch);
  }
  for (auto& t : s_->workers) t.join();
}

void ThreadPool::worker_loop() {
  State& s = *s_;
  tls_active = this;
  // Epoch 0 is the state at construction: a job started before this thread ran is still seen.
  uint32_t seen = 0;
  for (;;) {
    spin_then_wait(s.epoch, s.epoch_sleepers, [&](uint32_t e) { return e != seen; });
    seen = s.epoch.load(std::memory_order_acquire);
    if (s.stop.load(std::memory_order_acquire)) return;
    // The job number is the epoch that published it (see run()).
    s.work(seen, false);
  }
}

void ThreadPool::run(int64_t n, int64_t grain, Task task, void* ctx) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // Sixteen chunks per thread: a claim is one compare-and-swap, and small chunks keep a job's tail
  // short (the thread that runs out of chunks first idles for at most one chunk of the other's).
  constexpr int64_t kChunksPerThread = 16;
  const int64_t chunk =
      std::max(grain, (n + kChunksPerThread * threads_ - 1) / (kChunksPerThread * threads_));
  if (threads_ == 1 || n <= chunk || tls_active == this) {
#ifdef EPWA_POOL_STATS
    ++g_stats.serial;
#endif
    task(ctx, 0, n);
    return;
  }
  State& s = *s_;
  std::lock_guard lock(s.run_mutex);
  s.task = task;
  s.ctx = ctx;
  s.n = n;
  s.chunk = chunk;
  s.n_chunks = static_cast<uint32_t>((n + chunk - 1) / chunk);
  s.done.store(0, std::memory_order_relaxed);
  s.failed.store(false, std::memory_order_relaxed);
  s.error = nullptr;
  const uint32_t job = s.epoch.load(std::memory_order_relaxed) + 1;
#ifdef EPWA_POOL_STATS
  const int64_t t_pub = now_ns();
  s.published_ns.store(t_pub, std::memory_order_relaxed);
#endif
  s.word.store(uint64_t{job} << 32 | s.n_chunks, std::memory_order_release);
  s.epoch.store(job, std::memory_order_seq_cst);
  if (s.epoch_sleepers.load(std::memory_order_seq_cst) > 0) wake_all(s.epoch);

  const ThreadPool* outer = tls_active;
  tls_active = this;
  s.work(job, true);
  tls_active = outer;
  const uint32_t total = s.n_chunks;
#ifdef EPWA_POOL_STATS
  const int64_t t_own = now_ns();
#endif
  spin_then_wait(s.done, s.done_sleepers, [&](uint32_t d) { return d == total; });
#ifdef EPWA_POOL_STATS
  const int64_t t_end = now_ns();
  ++g_stats.jobs;
  g_stats.wall += t_end - t_pub;
  g_stats.tail += t_end - t_own;
#endif
  if (s.error) std::rethrow_exception(s.error);
}

}  // namespace epwa
