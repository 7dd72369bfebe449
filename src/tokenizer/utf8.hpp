// UTF-8 helpers for the tokenizers: validation with Unicode's "maximal subpart" rule (the one
// Python's errors="replace" and Rust's from_utf8_lossy use), code points, byte-level mapping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace epwa::tok {

enum class Utf8Status { Valid, Invalid, Truncated };
struct Utf8Step {
  Utf8Status status;
  size_t len;  // Valid: the character's length; otherwise the bytes to replace by one U+FFFD
};
// Classifies the sequence starting at s[i] (i < s.size()). Truncated: a valid prefix cut short by
// the end of `s`.
Utf8Step utf8_step(std::string_view s, size_t i);
// Valid UTF-8 copy of `s`, each maximal invalid subsequence replaced by U+FFFD.
std::string utf8_sanitize(std::string_view s);
bool utf8_valid(std::string_view s);
void append_utf8(std::string& out, char32_t cp);
// The characters of valid UTF-8 `s`, as views.
std::vector<std::string_view> utf8_chars(std::string_view s);

// GPT-2's byte-level alphabet: every byte as one printable code point ('Ġ' for space).
const std::string& byte_to_unicode(uint8_t b);  // the UTF-8 of the code point
// Byte for the code point, or -1 when it is not in the alphabet.
int32_t unicode_to_byte(char32_t cp);
// Decodes the first code point of valid UTF-8 at s[i]; sets len.
char32_t decode_utf8(std::string_view s, size_t i, size_t& len);

}  // namespace epwa::tok
