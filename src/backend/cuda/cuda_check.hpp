// CUDA runtime errors as epwa::Error (one line naming the call), and grow-only buffers.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <string>
#include <utility>

#include "epwa/error.hpp"

namespace epwa::cuda {

inline void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw Error(std::string("cuda: ") + what + ": " + cudaGetErrorString(e));
}

}  // namespace epwa::cuda

#define EPWA_CUDA(call) ::epwa::cuda::check_cuda((call), #call)

namespace epwa::cuda {

// Memory that only grows (its contents are not kept when it does), by at least half its size
// each time: a buffer sized by the position (attention's scores) would otherwise be freed and
// allocated again every token, and cudaFree waits for the whole device. `Memory` allocates and
// frees: device memory, or pinned host memory (the staging of downloads queued without a wait).
template <typename Memory>
class GrowBuffer {
 public:
  GrowBuffer() = default;
  GrowBuffer(const GrowBuffer&) = delete;
  GrowBuffer& operator=(const GrowBuffer&) = delete;
  GrowBuffer(GrowBuffer&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  GrowBuffer& operator=(GrowBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~GrowBuffer() {
    if (p_) Memory::release(p_);
  }

  template <typename T = void>
  T* get(size_t bytes) {
    if (bytes > bytes_) {
      if (p_) EPWA_CUDA(Memory::release(p_));
      p_ = nullptr;
      const size_t grown = bytes_ > 0 ? std::max(bytes, bytes_ + bytes_ / 2) : bytes;
      bytes_ = 0;
      EPWA_CUDA(Memory::allocate(&p_, grown));
      bytes_ = grown;
    }
    return static_cast<T*>(p_);
  }
  template <typename T>
  T* data() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_ = 0;
};

struct DeviceMemory {
  static cudaError_t allocate(void** p, size_t bytes) { return cudaMalloc(p, bytes); }
  static cudaError_t release(void* p) { return cudaFree(p); }
};
struct PinnedMemory {
  static cudaError_t allocate(void** p, size_t bytes) { return cudaMallocHost(p, bytes); }
  static cudaError_t release(void* p) { return cudaFreeHost(p); }
};
using DeviceBuffer = GrowBuffer<DeviceMemory>;
using PinnedBuffer = GrowBuffer<PinnedMemory>;

}  // namespace epwa::cuda
