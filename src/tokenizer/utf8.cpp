#include "tokenizer/utf8.hpp"

#include <array>

namespace epwa::tok {

Utf8Step utf8_step(std::string_view s, size_t i) {
  const auto b = static_cast<uint8_t>(s[i]);
  if (b < 0x80) return {Utf8Status::Valid, 1};
  size_t need;
  uint8_t lo = 0x80, hi = 0xbf;  // allowed range of the first continuation byte
  if (b >= 0xc2 && b <= 0xdf) {
    need = 1;
  } else if (b >= 0xe0 && b <= 0xef) {
    need = 2;
    if (b == 0xe0) lo = 0xa0;
    if (b == 0xed) hi = 0x9f;  // no surrogates
  } else if (b >= 0xf0 && b <= 0xf4) {
    need = 3;
    if (b == 0xf0) lo = 0x90;
    if (b == 0xf4) hi = 0x8f;
  } else {
    return {Utf8Status::Invalid, 1};
  }
  for (size_t k = 1; k <= need; ++k) {
    if (i + k >= s.size()) return {Utf8Status::Truncated, k};
    const auto c = static_cast<uint8_t>(s[i + k]);
    const uint8_t l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xbf;
    if (c < l || c > h) return {Utf8Status::Invalid, k};
  }
  return {Utf8Status::Valid, need + 1};
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Step st = utf8_step(s, i);
    if (st.status == Utf8Status::Valid)
      out.append(s.substr(i, st.len));
    else
      out += "\xEF\xBF\xBD";
    i += st.len;
  }
  return out;
}

bool utf8_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Utf8Step st = utf8_step(s, i);
    if (st.status != Utf8Status::Valid) return false;
    i += st.len;
  }
  return true;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

std::vector<std::string_view> utf8_chars(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t len = utf8_step(s, i).len;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

char32_t decode_utf8(std::string_view s, size_t i, size_t& len) {
  const auto b = static_cast<uint8_t>(s[i]);
  len = utf8_step(s, i).len;
  if (len == 1) return b;
  char32_t cp = b & (0xff >> (len + 1));
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3f);
  return cp;
}

namespace {
// GPT-2's table: printable Latin-1 bytes map to themselves, the other 68 to U+0100 onwards.
struct ByteTable {
  std::array<std::string, 256> to_utf8;
  std::array<int32_t, 324> from_cp;  // all code points of the alphabet are < 0x144
  ByteTable() {
    from_cp.fill(-1);
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
      const char32_t cp = printable ? static_cast<char32_t>(b) : next++;
      append_utf8(to_utf8[b], cp);
      from_cp[cp] = b;
    }
  }
};
const ByteTable& table() {
  static const ByteTable t;
  return t;
}
}  // namespace

const std::string& byte_to_unicode(uint8_t b) {
  return table().to_utf8[b];
}
int32_t unicode_to_byte(char32_t cp) {
  return cp < 324 ? table().from_cp[cp] : -1;
}

}  // namespace epwa::tok
