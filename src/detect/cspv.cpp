// CSPV sampling (docs/SPEC.md): the N/3 least and N/3 most confident positions, the rest uniformly
// at random from the remainder with a SplitMix64 stream seeded from the token ids.
#include <algorithm>
#include <numeric>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "watermark/sha256.hpp"

namespace epwa {
namespace {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by rejection: reject r >= 2^64 - (2^64 mod n).
  uint64_t below(uint64_t n) {
    const uint64_t rem = (0 - n) % n;  // 2^64 mod n
    for (;;) {
      const uint64_t r = next();
      if (rem == 0 || r < 0 - rem) return r % n;
    }
  }

 private:
  uint64_t state_;
};

}  // namespace

uint64_t cspv_seed(std::span<const int32_t> tokens) {
  detail::Sha256 h;
  static constexpr char kTag[] = "EPWA-CSPV-v1";
  h.update(kTag, sizeof(kTag) - 1);
  std::vector<uint8_t> buf(tokens.size() * 4);
  for (size_t i = 0; i < tokens.size(); ++i)
    for (int b = 0; b < 4; ++b)
      buf[4 * i + b] = static_cast<uint8_t>(static_cast<uint32_t>(tokens[i]) >> (8 * b));
  h.update(buf);
  const detail::Digest d = h.finish();
  uint64_t seed = 0;
  for (int b = 0; b < 8; ++b) seed |= static_cast<uint64_t>(d[b]) << (8 * b);
  return seed;
}

std::vector<CspvPick> cspv_sample(std::span<const float> confidences, int64_t n, uint64_t seed) {
  check(n > 0, "cspv: the sample size must be positive");
  const size_t m = confidences.size();
  const size_t third = static_cast<size_t>(n / 3);
  const size_t k_low = std::min(third, m);
  const size_t k_high = std::min(third, m - k_low);
  const size_t k_rand = std::min(static_cast<size_t>(n) - 2 * third, m - k_low - k_high);
  // Order by confidence, ties by position, so the strata are reproducible.
  std::vector<size_t> order(m);
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return confidences[a] < confidences[b]; });
  std::vector<CspvPick> picks;
  picks.reserve(k_low + k_high + k_rand);
  std::vector<char> taken(m, 0);
  for (size_t i = 0; i < k_low; ++i) {
    picks.push_back({order[i], 0});
    taken[order[i]] = 1;
  }
  for (size_t i = 0; i < k_high; ++i) {
    picks.push_back({order[m - 1 - i], 1});
    taken[order[m - 1 - i]] = 1;
  }
  std::vector<size_t> rest;  // in position order
  rest.reserve(m - k_low - k_high);
  for (size_t i = 0; i < m; ++i)
    if (!taken[i]) rest.push_back(i);
  SplitMix64 rng(seed);
  for (size_t i = 0; i < k_rand; ++i) {  // partial Fisher-Yates from the front
    const size_t j = i + static_cast<size_t>(rng.below(rest.size() - i));
    std::swap(rest[i], rest[j]);
    picks.push_back({rest[i], 2});
  }
  return picks;
}

}  // namespace epwa
