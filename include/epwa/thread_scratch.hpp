// Per-thread scratch objects: buffers a kernel reuses across calls on the same thread.
#pragma once
#include <type_traits>

#include "epwa/platform.hpp"

namespace epwa {

// Declared `thread_local ThreadScratch<T> x;` and used through `*x` or `x->`: the thread_local is a
// plain pointer, and the object lives on the heap until at_thread_exit deletes it. Not a
// `thread_local T`: a thread_local with a destructor is a use-after-free in the MinGW-w64 build
// (GCC 12's emulated TLS frees the object's storage before libstdc++ runs its destructor when the
// thread exits; the Windows tests crashed under Wine as the thread pool's workers stopped).
template <class T>
class ThreadScratch {
 public:
  T& operator*() {
    if (!p_) {
      p_ = new T();
      at_thread_exit([](void* p) { delete static_cast<T*>(p); }, p_);
    }
    return *p_;
  }
  T* operator->() { return &**this; }

 private:
  T* p_ = nullptr;
};

static_assert(std::is_trivially_destructible_v<ThreadScratch<int>>);

}  // namespace epwa
