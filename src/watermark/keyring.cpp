// KR-v1: which key of a keyring watermarks a response (docs/SPEC.md section 9).
#include "epwa/error.hpp"
#include "epwa/watermark.hpp"
#include "watermark/sha256.hpp"

namespace epwa {

namespace {

void put_u32(std::string& out, uint32_t v) {
  for (int b = 0; b < 4; ++b) out.push_back(static_cast<char>(v >> (8 * b)));
}

}  // namespace

std::string keyring_rotation_secret(std::span<const std::string> secrets) {
  check(!secrets.empty(), "keyring: no keys");
  std::string msg = "EPWA-KR-v1";
  for (const std::string& s : secrets) {
    check(!s.empty(), "keyring: a key is empty");
    put_u32(msg, static_cast<uint32_t>(s.size()));
    msg += s;
  }
  detail::Sha256 h;
  h.update(msg.data(), msg.size());
  const detail::Digest d = h.finish();
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

size_t keyring_pick(std::string_view rotation_secret, uint64_t seed,
                    std::span<const int32_t> prompt, size_t m) {
  check(m >= 1, "keyring: no keys to pick from");
  check(!rotation_secret.empty(), "keyring: the rotation secret is empty");
  std::string msg;
  for (int b = 0; b < 8; ++b) msg.push_back(static_cast<char>(seed >> (8 * b)));
  for (int32_t t : prompt) put_u32(msg, static_cast<uint32_t>(t));
  const detail::Digest d =
      detail::HmacSha256(
          {reinterpret_cast<const uint8_t*>(rotation_secret.data()), rotation_secret.size()})
          .mac({reinterpret_cast<const uint8_t*>(msg.data()), msg.size()});
  uint64_t r = 0;
  for (int b = 0; b < 8; ++b) r |= static_cast<uint64_t>(d[static_cast<size_t>(b)]) << (8 * b);
  // The modulo bias is below m / 2^64: immaterial for any keyring.
  return static_cast<size_t>(r % m);
}

std::vector<std::string> derived_keys(std::string_view key, int32_t m) {
  check(!key.empty(), "watermark key is empty");
  check(m >= 1, "keyring: needs at least one key");
  if (m == 1) return {std::string(key)};
  std::vector<std::string> out;
  for (int32_t i = 0; i < m; ++i) out.push_back(std::string(key) + "#" + std::to_string(i));
  return out;
}

}  // namespace epwa
