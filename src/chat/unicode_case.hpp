// Unicode character data for the Jinja string methods (case mapping and classes). One file per
// implementation: ICU here (src/chat/unicode_case.cpp); Windows builds replace it with the OS's
// tables (src/platform/windows/chat/unicode_case.cpp, docs/WINDOWS.md).
#pragma once
#include <string>

namespace epwa::jinja {

std::string case_map(const std::string& s, bool upper);  // full upper/lower case of a string
char32_t to_lower(char32_t c);
char32_t to_title(char32_t c);
bool is_cased(char32_t c);  // upper, lower or title case (Python's "cased")
bool is_digit(char32_t c);
bool is_alpha(char32_t c);
bool is_alnum(char32_t c);

}  // namespace epwa::jinja
