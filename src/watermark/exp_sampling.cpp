// EXP-v1 (docs/SPEC.md 11): the keyed uniforms of distortion-free sampling.
#include <string>

#include "epwa/error.hpp"
#include "epwa/watermark.hpp"
#include "watermark/sha256.hpp"

namespace epwa {

uint64_t GreenLists::exp_seed(int32_t expert, int32_t previous_token) const {
  check(expert >= 0 && expert < experts_, "exp watermark: expert out of range");
  check(previous_token >= 0 && previous_token < vocab_, "exp watermark: token out of range");
  std::string msg = "EPWA-EXP-v1" + hash_;
  for (uint32_t v : {static_cast<uint32_t>(expert), static_cast<uint32_t>(previous_token)})
    for (int b = 0; b < 4; ++b) msg.push_back(static_cast<char>(v >> (8 * b)));
  const detail::Digest d =
      detail::HmacSha256({reinterpret_cast<const uint8_t*>(raw_key_.data()), raw_key_.size()})
          .mac({reinterpret_cast<const uint8_t*>(msg.data()), msg.size()});
  uint64_t seed = 0;
  for (int b = 0; b < 8; ++b) seed |= static_cast<uint64_t>(d[b]) << (8 * b);
  return seed;
}

// SplitMix64's finalizer over seed + (token + 1) * golden ratio; the top 53 bits, centred in their
// interval so that the value is never 0 or 1 (ln r and ln(1 - r) stay finite).
double GreenLists::exp_uniform(uint64_t seed, int32_t token) {
  uint64_t z = seed + (static_cast<uint64_t>(token) + 1) * 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return (static_cast<double>(z >> 11) + 0.5) * 0x1.0p-53;
}

}  // namespace epwa
