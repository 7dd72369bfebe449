// SHA-256 and HMAC-SHA256 through OpenSSL's EVP API, with the HMAC key schedule computed once so
// that the many short messages of a green-list shuffle cost two compressions each.
#pragma once
#include <array>
#include <cstdint>
#include <span>
#include <string>

struct evp_md_ctx_st;

namespace epwa::detail {

using Digest = std::array<uint8_t, 32>;

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
  evp_md_ctx_st* ctx_;
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
  evp_md_ctx_st* inner_;  // state after absorbing key ^ ipad
  evp_md_ctx_st* outer_;  // state after absorbing key ^ opad
  evp_md_ctx_st* work_;   // scratch, reused to avoid allocations
};

std::string to_hex(std::span<const uint8_t> bytes);

}  // namespace epwa::detail
