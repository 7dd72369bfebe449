// Attacks keep lengths and edit counts exactly.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/eval.hpp"

using namespace epwa::eval;

namespace {
std::vector<int32_t> text(size_t n) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(1000 + i);  // all distinct
  return t;
}
bool is_subsequence(const std::vector<int32_t>& small, const std::vector<int32_t>& big) {
  size_t j = 0;
  for (int32_t x : big)
    if (j < small.size() && small[j] == x) ++j;
  return j == small.size();
}
}  // namespace

TEST(Attacks, EditCounts) {
  EXPECT_EQ(attack_edits(200, 0.05), 10);
  EXPECT_EQ(attack_edits(200, 0.1), 20);
  EXPECT_EQ(attack_edits(33, 0.1), 3);
  EXPECT_EQ(attack_edits(35, 0.3), 11);  // 10.5 rounds away from zero
  EXPECT_THROW(attack_edits(10, 1.5), epwa::Error);
}

TEST(Attacks, SubstitutionChangesExactlyRatePositions) {
  const auto t = text(200);
  TokenSource vocab{3, 900, {}};
  for (double rate : {0.0, 0.05, 0.1, 0.2, 0.3, 1.0}) {
    const auto a = attack(t, AttackKind::Substitute, rate, vocab, 9);
    ASSERT_EQ(a.size(), t.size());
    int64_t changed = 0;
    for (size_t i = 0; i < t.size(); ++i) {
      if (a[i] != t[i]) {
        ++changed;
        EXPECT_GE(a[i], 3);
        EXPECT_LT(a[i], 900);
      }
    }
    EXPECT_EQ(changed, attack_edits(t.size(), rate)) << rate;
  }
  EXPECT_EQ(attack(t, AttackKind::Substitute, 0.2, vocab, 5),
            attack(t, AttackKind::Substitute, 0.2, vocab, 5));
  EXPECT_NE(attack(t, AttackKind::Substitute, 0.2, vocab, 5),
            attack(t, AttackKind::Substitute, 0.2, vocab, 6));
}

TEST(Attacks, DeletionAndInsertion) {
  const auto t = text(150);
  TokenSource vocab{3, 900, {}};
  for (double rate : {0.05, 0.1, 0.2, 0.3}) {
    const int64_t k = attack_edits(t.size(), rate);
    const auto d = attack(t, AttackKind::Delete, rate, vocab, 1);
    EXPECT_EQ(static_cast<int64_t>(d.size()), static_cast<int64_t>(t.size()) - k);
    EXPECT_TRUE(is_subsequence(d, t));
    const auto in = attack(t, AttackKind::Insert, rate, vocab, 1);
    EXPECT_EQ(static_cast<int64_t>(in.size()), static_cast<int64_t>(t.size()) + k);
    EXPECT_TRUE(is_subsequence(t, in));
    const auto inserted = std::count_if(in.begin(), in.end(), [](int32_t x) { return x < 900; });
    EXPECT_EQ(inserted, k);
  }
}

TEST(Attacks, ModelTopKSource) {
  const auto t = text(100);
  TokenSource src{3, 900, {}};
  src.candidates.assign(t.size(), std::vector<int32_t>{7, 8, 9});
  src.candidates[0] = {t[0]};  // only the original: falls back to the vocabulary
  const auto a = attack(t, AttackKind::Substitute, 1.0, src, 2);
  EXPECT_NE(a[0], t[0]);
  for (size_t i = 1; i < a.size(); ++i) EXPECT_TRUE(a[i] >= 7 && a[i] <= 9) << i;
  const auto in = attack(t, AttackKind::Insert, 0.3, src, 2);
  EXPECT_EQ(std::count_if(in.begin(), in.end(), [](int32_t x) { return x >= 7 && x <= 9; }), 30);
  EXPECT_THROW(attack(t, AttackKind::Substitute, 0.1, TokenSource{5, 5, {}}, 1), epwa::Error);
}

TEST(Attacks, SpliceWindow) {
  const auto marked = text(200);
  const std::vector<int32_t> human(120, 4);
  const auto s = splice_window(marked, human, 50, 3);
  ASSERT_EQ(s.tokens.size(), 170u);
  EXPECT_EQ(s.window_start, 60u);
  EXPECT_EQ(s.window_size, 50u);
  const int32_t first = s.tokens[60];
  ASSERT_GE(first, 1000);
  for (size_t i = 0; i < 50; ++i) EXPECT_EQ(s.tokens[60 + i], first + static_cast<int32_t>(i));
  EXPECT_EQ(std::count(s.tokens.begin(), s.tokens.end(), 4), 120);
  // shorter marked text: the whole of it
  EXPECT_EQ(splice_window(text(20), human, 50, 3).window_size, 20u);
}
