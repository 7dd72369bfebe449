#include "tokenizer/bpe_tokenizer.hpp"

#include <deque>

#include "epwa/error.hpp"
#include "tokenizer/common.hpp"
#include "tokenizer/utf8.hpp"

namespace epwa::tok {

BpeTokenizer::BpeTokenizer(BpeSpec spec, const std::string& name) : spec_(std::move(spec)) {
  const auto n = static_cast<int32_t>(spec_.pieces.size());
  if (n == 0) throw Error(name + ": empty vocabulary");
  if (spec_.types.size() != spec_.pieces.size())
    throw Error(name + ": token types count differs from the token count");
  if (spec_.score_merge && spec_.scores.size() != spec_.pieces.size())
    throw Error(name + ": scores count differs from the token count");
  auto check = [&](int32_t id, const char* what) {
    if (id < -1 || id >= n)
      throw Error(name + ": " + what + " id " + std::to_string(id) + " outside the vocabulary");
  };
  check(spec_.bos, "bos");
  check(spec_.eos, "eos");
  check(spec_.unk, "unk");
  for (int32_t id : spec_.prefix) check(id, "template");
  for (int32_t id : spec_.suffix) check(id, "template");
  pieces_ = spec_.pieces;
  types_ = spec_.types;
  kind_ = spec_.kind;
  bos_id_ = spec_.bos;
  eos_id_ = spec_.eos;
  unk_id_ = spec_.unk;
  add_bos_ = !spec_.prefix.empty() && spec_.prefix.front() == spec_.bos;
  strip_leading_space_ = spec_.strip_leading_space;
  index_pieces();

  byte_ids_.fill(-1);
  for (int32_t i = 0; i < n; ++i) {
    const TokenType t = types_[i];
    if (t == TokenType::Control || t == TokenType::UserDefined) continue;  // added tokens
    if (pieces_[i].empty()) continue;
    model_ids_.try_emplace(pieces_[i], i);
    if (spec_.byte_fallback) {
      const int32_t b = byte_piece_value(pieces_[i]);
      if (b >= 0 && byte_ids_[b] < 0) byte_ids_[b] = i;
    }
    if (spec_.score_merge && (t == TokenType::Normal || t == TokenType::Undefined))
      mergeable_.ids.try_emplace(pieces_[i], i);
  }
  mergeable_.scores = spec_.scores;
  for (auto& [a, b] : spec_.merges) {
    auto ia = model_ids_.find(a), ib = model_ids_.find(b), im = model_ids_.find(a + b);
    if (ia == model_ids_.end() || ib == model_ids_.end() || im == model_ids_.end())
      throw Error(name + ": merge \"" + a + " " + b + "\" uses a token not in the vocabulary");
    merges_.add(ia->second, ib->second, im->second);
  }
  for (auto& t : spec_.added) {
    check(t.id, "added token");
    added_.add(t);
  }
  for (auto& p : spec_.pre)
    if ((p.kind == PreStep::Split) && !p.re) throw Error(name + ": Split without a pattern");
}

int32_t BpeTokenizer::lookup_model(std::string_view piece) const {
  auto it = model_ids_.find(std::string(piece));
  return it == model_ids_.end() ? -1 : it->second;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text, bool add_special,
                                          bool parse_special) const {
  const std::string clean = utf8_sanitize(text);
  std::vector<int32_t> out;
  if (add_special) out.insert(out.end(), spec_.prefix.begin(), spec_.prefix.end());
  for (const Segment& s : added_.split(clean, parse_special)) {
    if (s.id >= 0)
      out.push_back(s.id);
    else
      encode_segment(s.text, s.offset == 0, out);
  }
  if (add_special) out.insert(out.end(), spec_.suffix.begin(), spec_.suffix.end());
  return out;
}

void BpeTokenizer::encode_segment(std::string_view text, bool at_start,
                                  std::vector<int32_t>& out) const {
  std::string norm(text);
  for (const NormStep& n : spec_.normalizers) {
    switch (n.kind) {
      case NormStep::Unicode:
        norm = normalize(norm, n.form);
        break;
      case NormStep::Prepend:
        if (!norm.empty()) norm.insert(0, n.a);
        break;
      case NormStep::Replace:
        norm = replace_all(norm, n.a, n.b);
        break;
    }
  }
  // Pre-tokenizers refine a list of words; `store` keeps the strings the views point into.
  std::deque<std::string> store;  // a deque: growing it keeps earlier strings in place
  store.push_back(std::move(norm));
  std::vector<std::string_view> words{store.back()};
  for (const PreStep& p : spec_.pre) {
    std::vector<std::string_view> next;
    if (p.kind == PreStep::Metaspace || p.kind == PreStep::ByteLevel) {
      // These rewrite the text: build one new string, then cut it where the words were.
      std::string buf;
      std::vector<std::pair<size_t, size_t>> spans;
      bool first = true;
      for (std::string_view w : words) {
        const size_t start = buf.size();
        if (p.kind == PreStep::Metaspace) {
          std::string r = replace_all(w, " ", p.replacement);
          const bool prepend =
              p.prepend == PreStep::Always || (p.prepend == PreStep::First && at_start && first);
          if (prepend && r.compare(0, p.replacement.size(), p.replacement) != 0)
            r.insert(0, p.replacement);
          buf += r;
        } else {
          std::string src(w);
          if (p.add_prefix_space && !src.empty() && src[0] != ' ') src.insert(0, " ");
          buf += src;
        }
        spans.emplace_back(start, buf.size() - start);
        first = false;
      }
      store.push_back(std::move(buf));
      const std::string& b = store.back();
      for (auto [s, len] : spans) {
        std::string_view w(b.data() + s, len);
        if (p.kind == PreStep::Metaspace && p.split) {
          size_t i = 0;
          while (i < w.size()) {  // each replacement starts a new word
            size_t j = w.find(p.replacement, i + 1);
            if (j == std::string_view::npos) j = w.size();
            next.push_back(w.substr(i, j - i));
            i = j;
          }
        } else if (p.kind == PreStep::ByteLevel && p.re) {
          for (auto piece : p.re->split(w)) next.push_back(piece);
        } else if (!w.empty()) {
          next.push_back(w);
        }
      }
      if (p.kind == PreStep::ByteLevel) {  // map every byte to its printable stand-in
        std::string mapped;
        std::vector<std::pair<size_t, size_t>> ms;
        for (auto w : next) {
          const size_t start = mapped.size();
          for (char c : w) mapped += byte_to_unicode(static_cast<uint8_t>(c));
          ms.emplace_back(start, mapped.size() - start);
        }
        store.push_back(std::move(mapped));
        next.clear();
        for (auto [s, len] : ms) next.emplace_back(store.back().data() + s, len);
      }
    } else {  // Split
      for (std::string_view w : words)
        for (auto piece : p.re->split(w)) next.push_back(piece);
    }
    words = std::move(next);
  }
  for (std::string_view w : words) {
    if (w.empty()) continue;
    if (spec_.score_merge)
      score_word(w, out);
    else
      encode_word(w, out);
  }
}

void BpeTokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (spec_.ignore_merges) {
    const int32_t id = lookup_model(word);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }
  std::vector<int32_t> syms;
  for (std::string_view ch : utf8_chars(word)) {
    const int32_t id = lookup_model(ch);
    if (id >= 0) {
      syms.push_back(id);
      continue;
    }
    if (spec_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all) {
        for (char c : ch) syms.push_back(byte_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (spec_.unk < 0) continue;  // HF drops characters it cannot represent without unk
    if (spec_.fuse_unk && !syms.empty() && syms.back() == spec_.unk) continue;
    syms.push_back(spec_.unk);
  }
  merges_.apply(syms);
  out.insert(out.end(), syms.begin(), syms.end());
}

void BpeTokenizer::score_word(std::string_view word, std::vector<int32_t>& out) const {
  for (std::string_view piece : score_merge(word, mergeable_)) {
    auto it = mergeable_.ids.find(std::string(piece));
    if (it != mergeable_.ids.end()) {
      out.push_back(it->second);
      continue;
    }
    bool all = spec_.byte_fallback;
    for (char c : piece) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
    if (all) {
      for (char c : piece) out.push_back(byte_ids_[static_cast<uint8_t>(c)]);
    } else if (spec_.unk >= 0) {
      out.push_back(spec_.unk);
    }
  }
}

std::string BpeTokenizer::token_bytes(int32_t id) const {
  check_id(id);
  const std::string& p = pieces_[id];
  const TokenType t = types_[id];
  if (t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown) return p;
  if (t == TokenType::Byte && spec_.byte_fallback) {
    const int32_t b = byte_piece_value(p);
    if (b >= 0) return std::string(1, static_cast<char>(b));
  }
  if (spec_.byte_level) {
    std::string out;
    for (size_t i = 0; i < p.size();) {
      size_t len = 0;
      const char32_t cp = decode_utf8(p, i, len);
      const int32_t b = unicode_to_byte(cp);
      if (b >= 0)
        out += static_cast<char>(b);
      else
        out.append(p, i, len);
      i += len;
    }
    return out;
  }
  return spec_.decode_metaspace ? replace_all(p, kMetaSpace, " ") : p;
}

}  // namespace epwa::tok
