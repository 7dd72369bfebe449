// The block-level scratch of one Context's forward pass (activations between blocks, routing); the
// backend keeps its own (BackendScratch). Arrays only grow: a generation allocates nothing per
// token.
#pragma once
#include <algorithm>
#include <vector>

#include "epwa/backend.hpp"
#include "epwa/memory.hpp"
#include "epwa/model.hpp"

namespace epwa {

// A scratch array that only grows (its contents are lost when it does); large ones get huge pages.
template <class T>
class Buffer {
 public:
  T* data() const { return static_cast<T*>(mem_.data()); }
  T* resize(int64_t n) {
    const auto need = static_cast<size_t>(n) * sizeof(T);
    if (need > mem_.size()) mem_ = LargeBuffer(std::max(need, mem_.size() + mem_.size() / 2));
    return data();
  }

 private:
  LargeBuffer mem_;
};

struct Context::Scratch {
  Buffer<float> x, xn, q, k, v, att, o, router, probs, bias, shared;
  Buffer<int32_t> topk;
  Buffer<float> topw;
  std::unique_ptr<BackendScratch> backend;
};

}  // namespace epwa
