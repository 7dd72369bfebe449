// The platform layer's memory side: large anonymous buffers with huge pages, and hints for mapped
// files. Implemented per OS in src/platform/ (no-ops where the OS has no such hint).
#pragma once
#include <cstddef>
#include <cstdint>

namespace epwa {

// Zero-filled anonymous memory for large buffers (KV cache, scratch): page-aligned (2 MB aligned
// when at least 2 MB), advised for huge pages, and resident only once touched. Move-only; throws
// Error when the OS refuses the allocation.
class LargeBuffer {
 public:
  LargeBuffer() = default;
  explicit LargeBuffer(size_t bytes);
  LargeBuffer(LargeBuffer&& o) noexcept;
  LargeBuffer& operator=(LargeBuffer&& o) noexcept;
  LargeBuffer(const LargeBuffer&) = delete;
  LargeBuffer& operator=(const LargeBuffer&) = delete;
  ~LargeBuffer();

  void* data() const { return addr_; }
  size_t size() const { return size_; }

 private:
  void release() noexcept;
  void* addr_ = nullptr;
  size_t size_ = 0, mapped_ = 0;
};

// A scratch array of T that only grows, in LargeBuffer memory (its contents are lost when it does):
// a forward pass resizes it to what it needs and allocates nothing once it has grown.
template <class T>
class ScratchArray {
 public:
  T* data() const { return static_cast<T*>(mem_.data()); }
  T& operator[](size_t i) const { return data()[i]; }
  T* resize(int64_t n) {
    const auto need = static_cast<size_t>(n) * sizeof(T);
    if (need > mem_.size())
      mem_ =
          LargeBuffer(need > mem_.size() + mem_.size() / 2 ? need : mem_.size() + mem_.size() / 2);
    return data();
  }

 private:
  LargeBuffer mem_;
};

// Whether advised anonymous memory can get huge pages (Linux: transparent huge pages not "never").
bool huge_pages_available();

// Hints for read-only file mappings (MappedFile's bytes); they never fail. The range will be read
// soon (start reading it in), or will not be read again (drop its resident pages; a later read
// faults them back in from the file). Never pass anonymous memory to advise_dont_need: its
// contents would be lost.
void advise_will_need(const void* addr, size_t bytes);
void advise_dont_need(const void* addr, size_t bytes);

}  // namespace epwa
