#include <algorithm>

#include "epwa/error.hpp"
#include "epwa/model.hpp"

namespace epwa {

KvCache::KvCache(const ModelConfig& c, int64_t capacity)
    : kv_dim_(int64_t{c.num_kv_heads} * c.head_dim), k_(c.num_layers), v_(c.num_layers) {
  reserve(std::max<int64_t>(capacity, 1));
}

void KvCache::reserve(int64_t positions) {
  if (positions <= capacity_) return;
  capacity_ = std::max(positions, capacity_ * 2);
  for (auto& k : k_) k.resize(capacity_ * kv_dim_);
  for (auto& v : v_) v.resize(capacity_ * kv_dim_);
}

void KvCache::truncate(int64_t n) {
  check(n >= 0 && n <= size_, "KV cache: cannot truncate " + std::to_string(size_) + " positions to " +
                                  std::to_string(n));
  size_ = n;
}

}  // namespace epwa
