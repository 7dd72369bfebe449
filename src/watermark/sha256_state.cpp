// The SHA-256 state of watermark/sha256.hpp through OpenSSL's EVP API.
#include <openssl/evp.h>

#include "epwa/error.hpp"
#include "watermark/sha256.hpp"

namespace epwa::detail {

struct HashState {
  EVP_MD_CTX* ctx = nullptr;
};

HashState* new_hash_state() {
  auto* s = new HashState{EVP_MD_CTX_new()};
  if (!s->ctx || EVP_DigestInit_ex(s->ctx, EVP_sha256(), nullptr) != 1) {
    free_hash_state(s);
    throw Error("OpenSSL: SHA-256 initialisation failed");
  }
  return s;
}

void free_hash_state(HashState* s) {
  if (s) EVP_MD_CTX_free(s->ctx);
  delete s;
}

void hash_update(HashState* s, const void* data, size_t size) {
  check(EVP_DigestUpdate(s->ctx, data, size) == 1, "OpenSSL: SHA-256 update failed");
}

Digest hash_finish(HashState* s) {
  Digest d{};
  unsigned int len = 0;
  check(EVP_DigestFinal_ex(s->ctx, d.data(), &len) == 1 && len == d.size(),
        "OpenSSL: SHA-256 finalisation failed");
  return d;
}

void hash_copy(HashState* dst, const HashState* src) {
  check(EVP_MD_CTX_copy_ex(dst->ctx, src->ctx) == 1, "OpenSSL: digest copy failed");
}

}  // namespace epwa::detail
