#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <vector>

#include "epwa/thread_pool.hpp"

namespace epwa {
namespace {

TEST(ThreadPool, CoversEveryIndexExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t n : {0, 1, 2, 3, 7, 8, 31, 100, 1000, 4097}) {
      for (int64_t grain : {1, 5, 64}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int64_t> calls{0};
        pool.parallel_for(
            n,
            [&](int64_t b, int64_t e) {
              ASSERT_LE(0, b);
              ASSERT_LT(b, e);
              ASSERT_LE(e, n);
              if (e != n) {
                ASSERT_GE(e - b, grain);
              }
              for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
              calls.fetch_add(1);
            },
            grain);
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(hits[i].load(), 1) << "threads=" << threads << " n=" << n << " i=" << i;
        if (n == 0) {
          EXPECT_EQ(calls.load(), 0);
        }
      }
    }
  }
}

TEST(ThreadPool, UsesSeveralThreadsForLargeJobs) {
  ThreadPool pool(2);
  std::atomic<int> inside{0}, max_inside{0};
  // Each chunk waits a little for a partner so that two threads overlap even on a busy machine.
  pool.parallel_for(8, [&](int64_t, int64_t) {
    const int now = inside.fetch_add(1) + 1;
    int m = max_inside.load();
    while (now > m && !max_inside.compare_exchange_weak(m, now)) {
    }
    for (int i = 0; i < 2000 && max_inside.load() < 2; ++i) std::this_thread::yield();
    inside.fetch_sub(1);
  });
  EXPECT_EQ(max_inside.load(), 2);
}

TEST(ThreadPool, NestedCallsRunSeriallyAndManyJobsInARow) {
  ThreadPool pool(3);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(10, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      pool.parallel_for(10, [&](int64_t b2, int64_t e2) {
        for (int64_t j = b2; j < e2; ++j) sum.fetch_add(i * 10 + j);
      });
  });
  EXPECT_EQ(sum.load(), 99 * 100 / 2);
  // Thousands of tiny jobs, as in decoding: no lost wake-up, no deadlock.
  std::atomic<int64_t> count{0};
  for (int r = 0; r < 5000; ++r)
    pool.parallel_for(16, [&](int64_t b, int64_t e) { count.fetch_add(e - b); });
  EXPECT_EQ(count.load(), 5000 * 16);
}

TEST(ThreadPool, RethrowsTheFirstExceptionAndStaysUsable) {
  ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(100,
                                 [&](int64_t b, int64_t) {
                                   if (b > 0) throw std::runtime_error("boom");
                                 }),
               std::runtime_error);
  std::atomic<int64_t> count{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e) { count.fetch_add(e - b); });
  EXPECT_EQ(count.load(), 100);
}

TEST(ThreadPool, GlobalPoolHonoursDefault) {
  EXPECT_GE(ThreadPool::global().size(), 1);
  EXPECT_EQ(ThreadPool::global().size(), ThreadPool::default_threads());
}

}  // namespace
}  // namespace epwa
