// SHA-256 and HMAC-SHA256 over the platform's hash (OpenSSL's EVP API; CNG on Windows), with the
// HMAC key schedule computed once so that the many short messages of a green-list shuffle cost
// two compressions each.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string>

namespace epwa::detail {

using Digest = std::array<uint8_t, 32>;

// The platform's incremental SHA-256 state (sha256_state.cpp; the Windows build swaps in
// src/platform/windows/watermark/sha256_state.cpp). Each function throws Error on failure.
struct HashState;
HashState* new_hash_state();
void free_hash_state(HashState* s);  // null is a no-op
void hash_update(HashState* s, const void* data, size_t size);
Digest hash_finish(HashState* s);
void hash_copy(HashState* dst, const HashState* src);  // dst continues from src's state

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const uint8_t> bytes);
  void update(const void* data, size_t size);
  Digest finish();  // the object must not be updated afterwards

 private:
  HashState* ctx_;
};

// HMAC-SHA256 (RFC 2104) with a fixed key: the inner and outer pads are absorbed once.
class HmacSha256 {
 public:
  explicit HmacSha256(std::span<const uint8_t> key);
  ~HmacSha256();
  HmacSha256(const HmacSha256&) = delete;
  HmacSha256& operator=(const HmacSha256&) = delete;
  // Not thread-safe (shares one scratch context): use one object per thread.
  Digest mac(std::span<const uint8_t> message) const;

 private:
  HashState* inner_;  // state after absorbing key ^ ipad
  HashState* outer_;  // state after absorbing key ^ opad
  HashState* work_;   // scratch, reused to avoid allocations
};

std::string to_hex(std::span<const uint8_t> bytes);

}  // namespace epwa::detail
