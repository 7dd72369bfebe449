#include "epwa/thread_scratch.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace epwa {
namespace {

constexpr uint64_t kIntact = 0x5ca7c4ed0b1ec7ull;
std::atomic<int> destroyed{0};
std::atomic<uint64_t> seen{0};

// Records whether its own storage is still intact when it is destroyed: first the heap is churned
// with blocks of its size, which reuse its storage if that was already freed (the MinGW-w64
// thread_local bug ThreadScratch avoids: a plain `thread_local Probe` fails this under Wine).
struct Probe {
  uint64_t magic = kIntact;
  char pad[56] = {};
  ~Probe() {
    std::vector<void*> blocks;
    for (int i = 0; i < 256; ++i) {
      blocks.push_back(std::malloc(sizeof(Probe)));
      std::memset(blocks.back(), 0x55, sizeof(Probe));
    }
    for (void* b : blocks) std::free(b);
    seen = magic;
    ++destroyed;
  }
};

TEST(ThreadScratch, ObjectIsIntactUntilItsThreadExitsAndThenDestroyed) {
  destroyed = 0;
  seen = 0;
  std::thread t([] {
    thread_local ThreadScratch<Probe> probe;
    probe->pad[0] = 1;
    EXPECT_EQ(&*probe, &*probe);  // one object per thread, made once
  });
  t.join();
  EXPECT_EQ(destroyed, 1);
  EXPECT_EQ(seen, kIntact);
}

TEST(ThreadScratch, EachThreadHasItsOwnObject) {
  static thread_local ThreadScratch<std::vector<int>> v;
  v->assign(3, 7);
  std::thread t([] {
    EXPECT_TRUE(v->empty());
    v->push_back(1);
  });
  t.join();
  EXPECT_EQ(*v, std::vector<int>(3, 7));
}

TEST(AtThreadExit, RunsTheHooksLastRegisteredFirst) {
  std::vector<int> order;
  std::thread t([&] {
    at_thread_exit([](void* p) { static_cast<std::vector<int>*>(p)->push_back(1); }, &order);
    at_thread_exit([](void* p) { static_cast<std::vector<int>*>(p)->push_back(2); }, &order);
    EXPECT_TRUE(order.empty());
  });
  t.join();
  EXPECT_EQ(order, (std::vector<int>{2, 1}));
}

}  // namespace
}  // namespace epwa
