#include "tokenizer/added_tokens.hpp"

#include <algorithm>

namespace epwa::tok {

namespace {
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
}  // namespace

void AddedTokenMatcher::add(AddedToken t) {
  if (t.content.empty()) return;  // an empty token can never be matched
  const auto first = static_cast<uint8_t>(t.content[0]);
  tokens_.push_back(std::move(t));
  auto& list = by_first_[first];
  list.push_back(static_cast<int32_t>(tokens_.size() - 1));
  std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
    return tokens_[a].content.size() > tokens_[b].content.size();
  });
}

std::vector<Segment> AddedTokenMatcher::split(std::string_view text, bool parse_special) const {
  std::vector<Segment> out;
  size_t raw_start = 0, i = 0;
  auto flush = [&](size_t end) {
    if (end > raw_start) out.push_back({text.substr(raw_start, end - raw_start), -1, raw_start});
  };
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    if (!tokens_.empty())
      for (int32_t k : by_first_[static_cast<uint8_t>(text[i])]) {
        const AddedToken& t = tokens_[k];
        if (t.special && !parse_special) continue;
        if (text.compare(i, t.content.size(), t.content) == 0) {
          hit = &t;
          break;
        }
      }
    if (!hit) {
      ++i;
      continue;
    }
    size_t begin = i, end = i + hit->content.size();
    if (hit->lstrip)
      while (begin > raw_start && is_space(text[begin - 1])) --begin;
    if (hit->rstrip)
      while (end < text.size() && is_space(text[end])) ++end;
    flush(begin);
    out.push_back({text.substr(i, hit->content.size()), hit->id, i});
    raw_start = i = end;
  }
  flush(text.size());
  return out;
}

}  // namespace epwa::tok
