#include <algorithm>

#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "epwa/platform.hpp"

namespace epwa {

KvCache::KvCache(const ModelConfig& c, int64_t capacity)
    : kv_dim_(int64_t{c.num_kv_heads} * c.head_dim), k_(c.num_layers), v_(c.num_layers) {
  reserve(std::max<int64_t>(capacity, 1));
}

void KvCache::reserve(int64_t positions) {
  if (positions <= capacity_) return;
  capacity_ = std::max(positions, capacity_ * 2);
  for (auto* side : {&k_, &v_})
    for (auto& buf : *side) {
      // Advised before the new part is zero-filled, so that its first touch can fault huge pages.
      buf.reserve(static_cast<size_t>(capacity_ * kv_dim_));
      advise_huge_pages(buf.data(), buf.capacity() * sizeof(float));
      buf.resize(static_cast<size_t>(capacity_ * kv_dim_));
    }
}

void KvCache::truncate(int64_t n) {
  check(n >= 0 && n <= size_, "KV cache: cannot truncate " + std::to_string(size_) +
                                  " positions to " + std::to_string(n));
  size_ = n;
}

}  // namespace epwa
