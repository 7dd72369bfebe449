// Case mapping and character classes from the OS's tables (Windows replacement of
// src/chat/unicode_case.cpp, which uses ICU). Windows maps case one code unit to one (no "ß" ->
// "SS") and classifies the Basic Multilingual Plane only: docs/WINDOWS.md lists the differences.
#include "chat/unicode_case.hpp"

#include "platform/windows/utf16.hpp"

namespace epwa::jinja {
namespace {

std::wstring map_case(const std::wstring& w, DWORD flags) {
  if (w.empty()) return w;
  const int n = LCMapStringEx(LOCALE_NAME_INVARIANT, flags, w.data(), static_cast<int>(w.size()),
                              nullptr, 0, nullptr, nullptr, 0);
  if (n <= 0) return w;
  std::wstring out(static_cast<size_t>(n), L'\0');
  LCMapStringEx(LOCALE_NAME_INVARIANT, flags, w.data(), static_cast<int>(w.size()), out.data(), n,
                nullptr, nullptr, 0);
  return out;
}

std::wstring utf16(char32_t c) {
  if (c < 0x10000) return std::wstring(1, static_cast<wchar_t>(c));
  c -= 0x10000;
  return {static_cast<wchar_t>(0xD800 + (c >> 10)), static_cast<wchar_t>(0xDC00 + (c & 0x3FF))};
}

char32_t map_char(char32_t c, DWORD flags) {
  const std::wstring w = map_case(utf16(c), flags);
  if (w.size() == 1) return w[0];
  if (w.size() == 2 && w[0] >= 0xD800 && w[0] < 0xDC00)
    return 0x10000 + ((static_cast<char32_t>(w[0]) - 0xD800) << 10) + (w[1] - 0xDC00);
  return c;
}

WORD ctype1(char32_t c) {
  WORD t = 0;
  if (c >= 0x10000) return 0;
  const wchar_t w = static_cast<wchar_t>(c);
  return GetStringTypeW(CT_CTYPE1, &w, 1, &t) ? t : 0;
}

// The title-case digraphs (Dž, Lj, Nj, Dz): the only letters whose title case is not their upper
// case in the Basic Multilingual Plane's Latin, which Windows has no mapping for.
char32_t digraph_title(char32_t c) {
  if (c >= 0x01C4 && c <= 0x01CC) return 0x01C5 + (c - 0x01C4) / 3 * 3;
  if (c >= 0x01F1 && c <= 0x01F3) return 0x01F2;
  return 0;
}

}  // namespace

std::string case_map(const std::string& s, bool upper) {
  return win::to_utf8(map_case(win::to_utf16(s), upper ? LCMAP_UPPERCASE : LCMAP_LOWERCASE));
}

char32_t to_lower(char32_t c) {
  return map_char(c, LCMAP_LOWERCASE);
}
char32_t to_title(char32_t c) {
  const char32_t t = digraph_title(c);
  return t ? t : map_char(c, LCMAP_UPPERCASE);
}
bool is_cased(char32_t c) {
  return digraph_title(c) != 0 || (ctype1(c) & (C1_UPPER | C1_LOWER)) != 0;
}
bool is_digit(char32_t c) {
  return (ctype1(c) & C1_DIGIT) != 0;
}
bool is_alpha(char32_t c) {
  return (ctype1(c) & C1_ALPHA) != 0;
}
bool is_alnum(char32_t c) {
  return (ctype1(c) & (C1_ALPHA | C1_DIGIT)) != 0;
}

}  // namespace epwa::jinja
