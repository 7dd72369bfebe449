// GL-v1: per-expert green lists from a keyed Fisher-Yates shuffle (docs/SPEC.md).
#include <algorithm>
#include <cmath>
#include <mutex>
#include <numeric>

#include "epwa/error.hpp"
#include "epwa/watermark.hpp"
#include "watermark/sha256.hpp"

namespace epwa {

struct GreenLists::Slot {
  std::once_flag once;
  std::vector<uint64_t> bits;
};

namespace {

bool is_lower_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::span<const uint8_t> as_bytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// The GL-v1 word stream: HMAC-SHA256(k_e, u64 LE i) for i = 0, 1, ..., read as u32 LE words.
class WordStream {
 public:
  explicit WordStream(std::span<const uint8_t> key) : mac_(key) {}
  uint32_t next() {
    if (pos_ == 8) refill();
    return words_[pos_++];
  }

 private:
  void refill() {
    uint8_t msg[8];
    for (int b = 0; b < 8; ++b) msg[b] = static_cast<uint8_t>(counter_ >> (8 * b));
    ++counter_;
    const detail::Digest d = mac_.mac(msg);
    for (int w = 0; w < 8; ++w)
      words_[w] = static_cast<uint32_t>(d[4 * w]) | static_cast<uint32_t>(d[4 * w + 1]) << 8 |
                  static_cast<uint32_t>(d[4 * w + 2]) << 16 |
                  static_cast<uint32_t>(d[4 * w + 3]) << 24;
    pos_ = 0;
  }
  detail::HmacSha256 mac_;
  uint64_t counter_ = 0;
  uint32_t words_[8] = {};
  int pos_ = 8;
};

}  // namespace

GreenLists::GreenLists(std::string_view key, std::string_view router_hash_hex, int32_t vocab_size,
                       double gamma, int32_t num_experts, int32_t context_buckets)
    : key_(key),
      hash_(router_hash_hex),
      raw_key_(key),
      vocab_(vocab_size),
      experts_(num_experts),
      buckets_(context_buckets),
      gamma_(gamma) {
  check(!key.empty(), "watermark key is empty");
  check(router_hash_hex.size() == 64 && is_lower_hex(router_hash_hex),
        "router hash must be 64 lowercase hex characters (IRSH-v1), got '" +
            std::string(router_hash_hex) + "'");
  check(vocab_size >= 2, "vocabulary size must be at least 2, got " + std::to_string(vocab_size));
  check(gamma > 0.0 && gamma < 1.0, "gamma must be in (0, 1), got " + std::to_string(gamma));
  check(num_experts >= 1, "number of experts must be positive, got " + std::to_string(num_experts));
  check(context_buckets == 0 || (context_buckets >= 2 && context_buckets <= 65536),
        "context buckets must be 0 (off) or 2 to 65536, got " + std::to_string(context_buckets));
  check(static_cast<int64_t>(num_experts) * std::max(context_buckets, 1) <= (int64_t{1} << 30),
        "experts x context buckets is too large");
  green_count_ = static_cast<int32_t>(std::floor(gamma * static_cast<double>(vocab_size)));
  check(green_count_ >= 1, "gamma * vocabulary size rounds down to an empty green list");
  if (buckets_ > 0) {
    // CTX-v1: b(x) = u32 LE of HMAC(K, "EPWA-CTX-v1" || u32 LE x)[0..4) mod H; the lists' key
    // K' = "EPWA-CTX-v1:" decimal(H) ":" K, so no list coincides with a GL-v1 list of K.
    const detail::HmacSha256 mac(as_bytes(key));
    bucket_of_.resize(static_cast<size_t>(vocab_size));
    uint8_t msg[15] = {'E', 'P', 'W', 'A', '-', 'C', 'T', 'X', '-', 'v', '1'};
    for (int32_t x = 0; x < vocab_size; ++x) {
      for (int b = 0; b < 4; ++b)
        msg[11 + b] = static_cast<uint8_t>(static_cast<uint32_t>(x) >> (8 * b));
      const detail::Digest d = mac.mac(msg);
      const uint32_t r = static_cast<uint32_t>(d[0]) | static_cast<uint32_t>(d[1]) << 8 |
                         static_cast<uint32_t>(d[2]) << 16 | static_cast<uint32_t>(d[3]) << 24;
      bucket_of_[static_cast<size_t>(x)] =
          static_cast<uint16_t>(r % static_cast<uint32_t>(buckets_));
    }
    key_ = "EPWA-CTX-v1:" + std::to_string(buckets_) + ":" + std::string(key);
  }
  slots_ = std::make_unique<Slot[]>(static_cast<size_t>(num_contexts()));
}

int32_t GreenLists::bucket(int32_t token) const {
  check(buckets_ > 0, "green lists: no context buckets (CTX-v1 is off)");
  if (token < 0 || token >= vocab_)
    throw Error("token " + std::to_string(token) + " is out of range: the vocabulary has " +
                std::to_string(vocab_) + " entries");
  return bucket_of_[static_cast<size_t>(token)];
}

int32_t GreenLists::context(int32_t expert, int32_t previous_token) const {
  if (expert < 0 || expert >= experts_)
    throw Error("expert " + std::to_string(expert) + " is out of range: the model has " +
                std::to_string(experts_) + " experts");
  if (buckets_ == 0) return expert;
  return expert * buckets_ + bucket(previous_token);
}

GreenLists::~GreenLists() = default;

std::vector<int32_t> GreenLists::shuffle(int32_t expert) const {
  // k_e = HMAC-SHA256(key, ASCII(decimal e ":" hash))
  const std::string label = std::to_string(expert) + ":" + hash_;
  const detail::Digest k_e = detail::HmacSha256(as_bytes(key_)).mac(as_bytes(label));
  WordStream words(k_e);
  std::vector<int32_t> perm(static_cast<size_t>(vocab_));
  std::iota(perm.begin(), perm.end(), 0);
  for (uint32_t i = static_cast<uint32_t>(vocab_) - 1; i >= 1; --i) {
    const uint64_t n = static_cast<uint64_t>(i) + 1;
    const uint64_t limit = (uint64_t{1} << 32) - ((uint64_t{1} << 32) % n);
    uint64_t r;
    do r = words.next();
    while (r >= limit);
    std::swap(perm[i], perm[static_cast<size_t>(r % n)]);
  }
  perm.resize(static_cast<size_t>(green_count_));
  return perm;
}

const GreenLists::Slot& GreenLists::slot(int32_t expert) const {
  if (expert < 0 || expert >= num_contexts())  // plain if: no message built on the hot path
    throw Error("green-list context " + std::to_string(expert) + " is out of range: there are " +
                std::to_string(num_contexts()) + " (the model's experts x context buckets)");
  Slot& s = slots_[static_cast<size_t>(expert)];
  std::call_once(s.once, [&] {
    std::vector<uint64_t> bits((static_cast<size_t>(vocab_) + 63) / 64, 0);
    for (int32_t v : shuffle(expert)) bits[static_cast<size_t>(v) >> 6] |= uint64_t{1} << (v & 63);
    s.bits = std::move(bits);
  });
  return s;
}

bool GreenLists::is_green(int32_t expert, int32_t token) const {
  if (token < 0 || token >= vocab_)
    throw Error("token " + std::to_string(token) + " is out of range: the vocabulary has " +
                std::to_string(vocab_) + " entries");
  const auto& b = slot(expert).bits;
  return (b[static_cast<size_t>(token) >> 6] >> (token & 63)) & 1u;
}

std::span<const uint64_t> GreenLists::bits(int32_t expert) const {
  return slot(expert).bits;
}

std::vector<int32_t> GreenLists::green_tokens_in_order(int32_t expert) const {
  check(expert >= 0 && expert < num_contexts(),
        "green-list context " + std::to_string(expert) + " is out of range");
  return shuffle(expert);
}

}  // namespace epwa
