#include "chat/unicode_case.hpp"

#include <unicode/uchar.h>
#include <unicode/unistr.h>

namespace epwa::jinja {

std::string case_map(const std::string& s, bool upper) {
  std::string out;
  icu::UnicodeString u = icu::UnicodeString::fromUTF8(s);
  (upper ? u.toUpper() : u.toLower()).toUTF8String(out);
  return out;
}

char32_t to_lower(char32_t c) {
  return static_cast<char32_t>(u_tolower(static_cast<UChar32>(c)));
}
char32_t to_title(char32_t c) {
  return static_cast<char32_t>(u_totitle(static_cast<UChar32>(c)));
}
bool is_cased(char32_t c) {
  return u_isUUppercase(c) || u_isULowercase(c) || u_istitle(c);
}
bool is_digit(char32_t c) {
  return u_isdigit(c);
}
bool is_alpha(char32_t c) {
  return u_isalpha(c);
}
bool is_alnum(char32_t c) {
  return u_isalnum(c);
}

}  // namespace epwa::jinja
