// EPWA_CUDA_PROFILE=1: the time of each backend op, measured by waiting for the stream before and
// after it (so the device runs one op at a time and the table adds up to the ops' own times), and
// printed to stderr, slowest first, when the backend goes away. Without the variable a guard
// does nothing.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_check.hpp"

namespace epwa::cuda {

class OpProfile {
 public:
  OpProfile() : on_(std::getenv("EPWA_CUDA_PROFILE") && *std::getenv("EPWA_CUDA_PROFILE")) {}
  OpProfile(const OpProfile&) = delete;
  OpProfile& operator=(const OpProfile&) = delete;
  ~OpProfile() {
    if (!on_ || ops_.empty()) return;
    std::vector<std::pair<std::string, Op>> v(ops_.begin(), ops_.end());
    std::sort(v.begin(), v.end(),
              [](const auto& a, const auto& b) { return a.second.s > b.second.s; });
    double total = 0;
    for (const auto& [name, op] : v) total += op.s;
    std::fprintf(stderr, "cuda ops (EPWA_CUDA_PROFILE): %.3f s in all\n", total);
    for (const auto& [name, op] : v)
      std::fprintf(stderr, "  %-22s %9lld calls %10.3f ms %8.1f us/call %5.1f %%\n", name.c_str(),
                   static_cast<long long>(op.calls), op.s * 1e3, op.s * 1e6 / op.calls,
                   100 * op.s / total);
  }

  class Guard {
   public:
    Guard(OpProfile* p, cudaStream_t s, const char* name) : p_(p), s_(s), name_(name) {
      if (!p_) return;
      EPWA_CUDA(cudaStreamSynchronize(s_));
      t0_ = std::chrono::steady_clock::now();
    }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;
    ~Guard() {
      if (!p_) return;
      cudaStreamSynchronize(s_);
      const double s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
      std::lock_guard lock(p_->mu_);
      Op& op = p_->ops_[name_];
      ++op.calls;
      op.s += s;
    }

   private:
    OpProfile* p_;
    cudaStream_t s_;
    const char* name_;
    std::chrono::steady_clock::time_point t0_;
  };
  Guard time(cudaStream_t s, const char* name) { return Guard(on_ ? this : nullptr, s, name); }

 private:
  struct Op {
    int64_t calls = 0;
    double s = 0;
  };
  bool on_;
  std::mutex mu_;
  std::map<std::string, Op> ops_;
};

}  // namespace epwa::cuda
