// Token-level attacks on watermarked text: substitution, deletion, insertion, span cropping.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "epwa/error.hpp"
#include "epwa/eval.hpp"

namespace epwa::eval {

std::string attack_name(AttackKind k) {
  switch (k) {
    case AttackKind::Substitute:
      return "substitute";
    case AttackKind::Delete:
      return "delete";
    case AttackKind::Insert:
      return "insert";
  }
  return "?";
}

int64_t attack_edits(size_t n, double rate) {
  check(rate >= 0.0 && rate <= 1.0, "attack rate " + std::to_string(rate) + " outside [0, 1]");
  return std::llround(rate * static_cast<double>(n));
}

namespace {
// k distinct positions of [0, n) in increasing order (partial Fisher-Yates).
std::vector<size_t> pick_positions(size_t n, size_t k, Rng& rng) {
  std::vector<size_t> idx(n);
  std::iota(idx.begin(), idx.end(), size_t{0});
  for (size_t i = 0; i < k; ++i) std::swap(idx[i], idx[i + rng.below(n - i)]);
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

// A token for text position `pos`, different from `avoid` when possible (-1 = anything).
int32_t propose(const TokenSource& src, size_t pos, int32_t avoid, Rng& rng) {
  if (!src.candidates.empty() && pos < src.candidates.size()) {
    std::vector<int32_t> c;
    for (int32_t t : src.candidates[pos])
      if (t != avoid) c.push_back(t);
    if (!c.empty()) return c[rng.below(c.size())];
  }
  check(src.last > src.first, "attack: empty vocabulary range for replacement tokens");
  const uint64_t width = static_cast<uint64_t>(src.last - src.first);
  for (;;) {
    const int32_t t = src.first + static_cast<int32_t>(rng.below(width));
    if (t != avoid || width == 1) return t;
  }
}
}  // namespace

std::vector<int32_t> attack(std::span<const int32_t> text, AttackKind kind, double rate,
                            const TokenSource& source, uint64_t seed) {
  const size_t k = static_cast<size_t>(attack_edits(text.size(), rate));
  Rng rng(seed ^ (0x5eed0000ULL + static_cast<uint64_t>(kind)));
  const std::vector<size_t> where = pick_positions(text.size(), k, rng);
  std::vector<int32_t> out;
  switch (kind) {
    case AttackKind::Substitute:
      out.assign(text.begin(), text.end());
      for (size_t p : where) out[p] = propose(source, p, text[p], rng);
      break;
    case AttackKind::Delete: {
      out.reserve(text.size() - k);
      size_t w = 0;
      for (size_t i = 0; i < text.size(); ++i) {
        if (w < where.size() && where[w] == i) {
          ++w;
          continue;
        }
        out.push_back(text[i]);
      }
      break;
    }
    case AttackKind::Insert: {
      out.reserve(text.size() + k);
      size_t w = 0;
      for (size_t i = 0; i < text.size(); ++i) {
        if (w < where.size() && where[w] == i) {
          out.push_back(propose(source, i, -1, rng));
          ++w;
        }
        out.push_back(text[i]);
      }
      break;
    }
  }
  return out;
}

Spliced splice_window(std::span<const int32_t> marked, std::span<const int32_t> human,
                      size_t window, uint64_t seed) {
  check(window > 0, "splice_window: window must be > 0");
  const size_t w = std::min(window, marked.size());
  Rng rng(seed ^ 0xc40bULL);
  const size_t start = marked.size() > w ? rng.below(marked.size() - w + 1) : 0;
  const size_t half = human.size() / 2;
  Spliced s;
  s.tokens.assign(human.begin(), human.begin() + half);
  s.window_start = s.tokens.size();
  s.window_size = w;
  s.tokens.insert(s.tokens.end(), marked.begin() + start, marked.begin() + start + w);
  s.tokens.insert(s.tokens.end(), human.begin() + half, human.end());
  return s;
}

}  // namespace epwa::eval
