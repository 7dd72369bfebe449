#include "watermark/sha256.hpp"

#include <cstring>

namespace epwa::detail {

Sha256::Sha256() : ctx_(new_hash_state()) {}
Sha256::~Sha256() {
  free_hash_state(ctx_);
}
void Sha256::update(std::span<const uint8_t> bytes) {
  hash_update(ctx_, bytes.data(), bytes.size());
}
void Sha256::update(const void* data, size_t size) {
  hash_update(ctx_, data, size);
}
Digest Sha256::finish() {
  return hash_finish(ctx_);
}

HmacSha256::HmacSha256(std::span<const uint8_t> key)
    : inner_(new_hash_state()), outer_(new_hash_state()), work_(new_hash_state()) {
  constexpr size_t kBlock = 64;
  std::array<uint8_t, kBlock> k{};
  if (key.size() > kBlock) {
    Sha256 h;
    h.update(key);
    const Digest d = h.finish();
    std::memcpy(k.data(), d.data(), d.size());
  } else if (!key.empty()) {
    std::memcpy(k.data(), key.data(), key.size());
  }
  std::array<uint8_t, kBlock> ipad{}, opad{};
  for (size_t i = 0; i < kBlock; ++i) {
    ipad[i] = k[i] ^ 0x36u;
    opad[i] = k[i] ^ 0x5cu;
  }
  hash_update(inner_, ipad.data(), kBlock);
  hash_update(outer_, opad.data(), kBlock);
}

HmacSha256::~HmacSha256() {
  free_hash_state(inner_);
  free_hash_state(outer_);
  free_hash_state(work_);
}

Digest HmacSha256::mac(std::span<const uint8_t> message) const {
  hash_copy(work_, inner_);
  hash_update(work_, message.data(), message.size());
  const Digest inner = hash_finish(work_);
  hash_copy(work_, outer_);
  hash_update(work_, inner.data(), inner.size());
  return hash_finish(work_);
}

}  // namespace epwa::detail
