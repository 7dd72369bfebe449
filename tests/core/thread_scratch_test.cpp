#include "epwa/thread_scratch.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
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

// The rule ThreadScratch exists for, kept by a scan of the sources: a thread_local is a pointer, a
// number or a ThreadScratch (the POSIX platform file, where glibc runs destructors in order,
// aside).
TEST(ThreadLocals, HaveNoDestructors) {
  namespace fs = std::filesystem;
  const std::regex decl(R"(\bthread_local\s+(static\s+)?(.*))");
  const std::regex allowed(
      R"((ThreadScratch<|(const\s+)?[\w:]+\s*\*|(const\s+)?(bool|int|unsigned|double|float|char|)"
      R"(u?int(8|16|32|64)_t|size_t)\b))");
  int seen = 0;
  for (const char* dir : {"src", "tools", "include"}) {
    for (const auto& e : fs::recursive_directory_iterator(fs::path(EPWA_SOURCE_DIR) / dir)) {
      const std::string ext = e.path().extension().string();
      if (ext != ".cpp" && ext != ".hpp" && ext != ".cu" && ext != ".cuh") continue;
      if (e.path().filename() == "posix.cpp") continue;
      std::ifstream f(e.path());
      int n = 0;
      for (std::string line; std::getline(f, line);) {
        ++n;
        const auto code = line.substr(0, line.find("//"));
        std::smatch m;
        if (!std::regex_search(code, m, decl)) continue;
        ++seen;
        EXPECT_TRUE(std::regex_search(m[2].first, m[2].second, allowed,
                                      std::regex_constants::match_continuous))
            << e.path().string() << ":" << n << ": " << line;
      }
    }
  }
  EXPECT_GT(seen, 10);  // the scan found the declarations it checks
}

}  // namespace
}  // namespace epwa
