// A persistent pool of worker threads for the kernels: parallel_for splits [0, n) into chunks that
// the workers and the calling thread take in turn, and returns when every chunk is done.
#pragma once
#include <cstdint>
#include <memory>
#include <type_traits>

namespace epwa {

class ThreadPool {
 public:
  // `threads` counts the caller too: ThreadPool(1) starts no worker. 0 = default_threads().
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_; }

  // Calls fn(begin, end) over disjoint ranges covering [0, n) exactly once, each range at least
  // `grain` long (but the last). Runs serially when n is small, the pool has one thread, or the
  // call is nested inside another parallel_for of this pool. The first exception thrown by fn is
  // rethrown here after all threads stopped.
  template <class F>
  void parallel_for(int64_t n, F&& fn, int64_t grain = 1) {
    using Fn = std::remove_reference_t<F>;
    run(
        n, grain, [](void* ctx, int64_t b, int64_t e) { (*static_cast<Fn*>(ctx))(b, e); },
        const_cast<void*>(static_cast<const void*>(std::addressof(fn))));
  }

  // The process-wide pool, sized by EPWA_THREADS or else the hardware threads.
  static ThreadPool& global();
  static int default_threads();

 private:
  using Task = void (*)(void* ctx, int64_t begin, int64_t end);
  void run(int64_t n, int64_t grain, Task task, void* ctx);
  void worker_loop();

  struct State;
  int threads_ = 1;
  std::unique_ptr<State> s_;
};

}  // namespace epwa
