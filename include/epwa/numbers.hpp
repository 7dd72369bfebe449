// Strict parsing of numbers written as text (command-line options, config values): the whole text,
// in decimal, inside a range. Every failure is an Error whose message says in plain words what is
// allowed, e.g. "must be a whole number from 0 to 2147483647, got '-1'" (the caller adds the
// flag's name in front).
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

namespace epwa {

// An optional sign and decimal digits; no spaces, fractions, exponents or hexadecimal.
int64_t parse_whole_number(std::string_view text, int64_t lo = std::numeric_limits<int64_t>::min(),
                           int64_t hi = std::numeric_limits<int64_t>::max());

// Decimal digits only (no sign), up to `hi` (default 2^64 - 1, for seeds).
uint64_t parse_unsigned_number(std::string_view text,
                               uint64_t hi = std::numeric_limits<uint64_t>::max());

// A finite decimal number (fractions and exponents allowed; nan, inf and hexadecimal refused)
// from `lo` to `hi`; an open end excludes the bound itself. An infinite bound means no bound.
struct RealRange {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();
  bool lo_open = false, hi_open = false;
};
double parse_real_number(std::string_view text, const RealRange& range = {});

// The range in words: "a number from 0 to 1", "a number above 0 and below 1", "a number of at
// least 0", "a number".
std::string describe(const RealRange& range);

}  // namespace epwa
