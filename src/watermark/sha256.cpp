#include "watermark/sha256.hpp"

#include <openssl/evp.h>

#include <cstring>

#include "epwa/error.hpp"

namespace epwa::detail {
namespace {

EVP_MD_CTX* new_sha256_ctx() {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  check(ctx != nullptr, "OpenSSL: EVP_MD_CTX_new failed");
  if (EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(ctx);
    throw Error("OpenSSL: SHA-256 initialisation failed");
  }
  return ctx;
}

void update_ctx(EVP_MD_CTX* ctx, const void* data, size_t size) {
  check(EVP_DigestUpdate(ctx, data, size) == 1, "OpenSSL: SHA-256 update failed");
}

Digest final_ctx(EVP_MD_CTX* ctx) {
  Digest d{};
  unsigned int len = 0;
  check(EVP_DigestFinal_ex(ctx, d.data(), &len) == 1 && len == d.size(),
        "OpenSSL: SHA-256 finalisation failed");
  return d;
}

}  // namespace

Sha256::Sha256() : ctx_(new_sha256_ctx()) {}
Sha256::~Sha256() {
  EVP_MD_CTX_free(ctx_);
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
  EVP_MD_CTX_free(inner_);
  EVP_MD_CTX_free(outer_);
  EVP_MD_CTX_free(work_);
}

Digest HmacSha256::mac(std::span<const uint8_t> message) const {
  check(EVP_MD_CTX_copy_ex(work_, inner_) == 1, "OpenSSL: digest copy failed");
  update_ctx(work_, message.data(), message.size());
  const Digest inner = final_ctx(work_);
  check(EVP_MD_CTX_copy_ex(work_, outer_) == 1, "OpenSSL: digest copy failed");
  update_ctx(work_, inner.data(), inner.size());
  return final_ctx(work_);
}

}  // namespace epwa::detail
