#include "tokenizer/bpe.hpp"

#include <queue>

#include "tokenizer/utf8.hpp"

namespace epwa::tok {

void RankMerges::add(int32_t left, int32_t right, int32_t merged) {
  const auto rank = static_cast<int32_t>(rules_.size());
  if (rules_.try_emplace(key(left, right), Rule{rank, merged}).second)
    first_rank_.try_emplace(merged, rank);
}

int32_t RankMerges::first_rank_of(int32_t merged) const {
  auto it = first_rank_.find(merged);
  return it == first_rank_.end() ? -1 : it->second;
}

namespace {
struct Sym {
  int32_t prev, next;
};
}  // namespace

void RankMerges::apply(std::vector<int32_t>& ids) const {
  const auto n = static_cast<int32_t>(ids.size());
  if (n < 2) return;
  std::vector<Sym> sym(n);
  for (int32_t i = 0; i < n; ++i) sym[i] = {i - 1, i + 1 < n ? i + 1 : -1};
  std::vector<bool> alive(n, true);
  struct Cand {
    int32_t rank, pos, left, right;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<>> pq;
  auto push = [&](int32_t p) {
    const int32_t q = sym[p].next;
    if (q < 0) return;
    auto it = rules_.find(key(ids[p], ids[q]));
    if (it != rules_.end()) pq.push({it->second.rank, p, ids[p], ids[q]});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!pq.empty()) {
    const Cand c = pq.top();
    pq.pop();
    const int32_t q = alive[c.pos] ? sym[c.pos].next : -1;
    if (q < 0 || ids[c.pos] != c.left || ids[q] != c.right) continue;  // stale
    ids[c.pos] = rules_.at(key(c.left, c.right)).merged;
    alive[q] = false;
    sym[c.pos].next = sym[q].next;
    if (sym[q].next >= 0) sym[sym[q].next].prev = c.pos;
    if (sym[c.pos].prev >= 0) push(sym[c.pos].prev);
    push(c.pos);
  }
  size_t w = 0;
  for (int32_t i = 0; i < n; ++i)
    if (alive[i]) ids[w++] = ids[i];
  ids.resize(w);
}

std::vector<std::string_view> score_merge(std::string_view text, const PieceScores& ps) {
  std::vector<std::string_view> sym = utf8_chars(text);
  const auto n = static_cast<int32_t>(sym.size());
  std::vector<Sym> link(n);
  for (int32_t i = 0; i < n; ++i) link[i] = {i - 1, i + 1 < n ? i + 1 : -1};
  struct Cand {
    float score;
    int32_t pos;
    size_t len;  // merged length: detects a stale candidate
    bool operator<(const Cand& o) const { return score != o.score ? score < o.score : pos > o.pos; }
  };
  std::priority_queue<Cand> pq;
  std::string buf;
  auto push = [&](int32_t p) {
    if (p < 0) return;
    const int32_t q = link[p].next;
    if (q < 0) return;
    // Adjacent symbols are adjacent in `text`, so the pair is one contiguous view.
    const std::string_view merged(sym[p].data(), sym[p].size() + sym[q].size());
    buf.assign(merged);
    auto it = ps.ids.find(buf);
    if (it != ps.ids.end()) pq.push({ps.scores[it->second], p, merged.size()});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!pq.empty()) {
    const Cand c = pq.top();
    pq.pop();
    const int32_t q = sym[c.pos].empty() ? -1 : link[c.pos].next;
    if (q < 0 || sym[c.pos].size() + sym[q].size() != c.len) continue;  // stale
    sym[c.pos] = std::string_view(sym[c.pos].data(), c.len);
    sym[q] = {};
    link[c.pos].next = link[q].next;
    if (link[q].next >= 0) link[link[q].next].prev = c.pos;
    push(link[c.pos].prev);
    push(c.pos);
  }
  std::vector<std::string_view> out;
  for (auto& s : sym)
    if (!s.empty()) out.push_back(s);
  return out;
}

}  // namespace epwa::tok
