// The SHA-256 state of watermark/sha256.hpp through the OS's CNG (BCrypt) hashes: the Windows
// replacement of src/watermark/sha256_state.cpp, which uses OpenSSL (docs/WINDOWS.md).
#define WIN32_LEAN_AND_MEAN
#define NOMINMAX
#include <windows.h>
// windows.h first: bcrypt.h needs its types.
#include <bcrypt.h>

#include "epwa/error.hpp"
#include "watermark/sha256.hpp"

namespace epwa::detail {

struct HashState {
  BCRYPT_HASH_HANDLE h = nullptr;
};

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

}  // namespace

HashState* new_hash_state() {
  auto* s = new HashState;
  if (BCryptCreateHash(sha256_alg(), &s->h, nullptr, 0, nullptr, 0, 0) < 0) {
    delete s;
    throw Error("CNG: SHA-256 initialisation failed");
  }
  return s;
}

void free_hash_state(HashState* s) {
  if (s && s->h) BCryptDestroyHash(s->h);
  delete s;
}

void hash_update(HashState* s, const void* data, size_t size) {
  // CNG takes at most 4 GiB per call.
  auto* p = static_cast<PUCHAR>(const_cast<void*>(data));
  while (size > 0) {
    const ULONG n = size > 0x40000000u ? 0x40000000u : static_cast<ULONG>(size);
    check(BCryptHashData(s->h, p, n, 0) >= 0, "CNG: SHA-256 update failed");
    p += n;
    size -= n;
  }
}

Digest hash_finish(HashState* s) {
  Digest d{};
  check(BCryptFinishHash(s->h, d.data(), static_cast<ULONG>(d.size()), 0) >= 0,
        "CNG: SHA-256 finalisation failed");
  return d;
}

void hash_copy(HashState* dst, const HashState* src) {
  if (dst->h) BCryptDestroyHash(dst->h);
  dst->h = nullptr;
  check(BCryptDuplicateHash(src->h, &dst->h, nullptr, 0, 0) >= 0, "CNG: digest copy failed");
}

}  // namespace epwa::detail
