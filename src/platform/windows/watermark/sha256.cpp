// SHA-256 and HMAC-SHA256 through the OS's CNG (BCrypt) hashes: the Windows replacement of
// src/watermark/sha256.cpp, which uses OpenSSL (docs/WINDOWS.md). The HMAC pads are absorbed
// once, as there; each message starts from a duplicate of the absorbed state.
#define WIN32_LEAN_AND_MEAN
#define NOMINMAX
#include <windows.h>
// windows.h first: bcrypt.h needs its types.
#include <bcrypt.h>

#include <cstring>

#include "epwa/error.hpp"
#include "watermark/sha256.hpp"

// The header's opaque hash state (named after OpenSSL's), here a CNG hash object.
struct evp_md_ctx_st {
  BCRYPT_HASH_HANDLE h = nullptr;
};

namespace epwa::detail {
namespace {

BCRYPT_ALG_HANDLE sha256_alg() {
  static const BCRYPT_ALG_HANDLE alg = [] {
    BCRYPT_ALG_HANDLE a = nullptr;
    check(BCryptOpenAlgorithmProvider(&a, BCRYPT_SHA256_ALGORITHM, nullptr, 0) >= 0,
          "CNG: SHA-256 is not available");
    return a;
  }();
  return alg;
}

evp_md_ctx_st* new_sha256_ctx() {
  auto* ctx = new evp_md_ctx_st;
  if (BCryptCreateHash(sha256_alg(), &ctx->h, nullptr, 0, nullptr, 0, 0) < 0) {
    delete ctx;
    throw Error("CNG: SHA-256 initialisation failed");
  }
  return ctx;
}

void free_ctx(evp_md_ctx_st* ctx) {
  if (ctx && ctx->h) BCryptDestroyHash(ctx->h);
  delete ctx;
}

void update_ctx(evp_md_ctx_st* ctx, const void* data, size_t size) {
  // CNG takes at most 4 GiB per call.
  auto* p = static_cast<PUCHAR>(const_cast<void*>(data));
  while (size > 0) {
    const ULONG n = size > 0x40000000u ? 0x40000000u : static_cast<ULONG>(size);
    check(BCryptHashData(ctx->h, p, n, 0) >= 0, "CNG: SHA-256 update failed");
    p += n;
    size -= n;
  }
}

Digest final_ctx(evp_md_ctx_st* ctx) {
  Digest d{};
  check(BCryptFinishHash(ctx->h, d.data(), static_cast<ULONG>(d.size()), 0) >= 0,
        "CNG: SHA-256 finalisation failed");
  return d;
}

// Replaces dst's state by a copy of src's.
void copy_ctx(evp_md_ctx_st* dst, const evp_md_ctx_st* src) {
  if (dst->h) BCryptDestroyHash(dst->h);
  dst->h = nullptr;
  check(BCryptDuplicateHash(src->h, &dst->h, nullptr, 0, 0) >= 0, "CNG: digest copy failed");
}

}  // namespace

Sha256::Sha256() : ctx_(new_sha256_ctx()) {}
Sha256::~Sha256() {
  free_ctx(ctx_);
}
void Sha256::update(std::span<const uint8_t> bytes) {
  update_ctx(ctx_, bytes.data(), bytes.size());
}
void Sha256::update(const void* data, size_t size) {
  update_ctx(ctx_, data, size);
}
Digest Sha256::finish() {
  return final_ctx(ctx_);
}

HmacSha256::HmacSha256(std::span<const uint8_t> key)
    : inner_(new_sha256_ctx()), outer_(new_sha256_ctx()), work_(new_sha256_ctx()) {
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
  update_ctx(inner_, ipad.data(), kBlock);
  update_ctx(outer_, opad.data(), kBlock);
}

HmacSha256::~HmacSha256() {
  free_ctx(inner_);
  free_ctx(outer_);
  free_ctx(work_);
}

Digest HmacSha256::mac(std::span<const uint8_t> message) const {
  copy_ctx(work_, inner_);
  update_ctx(work_, message.data(), message.size());
  const Digest inner = final_ctx(work_);
  copy_ctx(work_, outer_);
  update_ctx(work_, inner.data(), inner.size());
  return final_ctx(work_);
}

}  // namespace epwa::detail
