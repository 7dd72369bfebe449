#include "epwa/numbers.hpp"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "epwa/error.hpp"

namespace epwa {

namespace {
// The text as quoted in a message, cut short when long (no 309-digit echoes).
std::string quoted(std::string_view text) {
  constexpr size_t kMax = 40;
  return "'" + std::string(text.substr(0, kMax)) + (text.size() > kMax ? "...'" : "'");
}

std::string whole_range(int64_t lo, int64_t hi) {
  using L = std::numeric_limits<int64_t>;
  if (lo == L::min() && hi == L::max()) return "a whole number";
  if (hi == L::max()) return "a whole number of at least " + std::to_string(lo);
  return "a whole number from " + std::to_string(lo) + " to " + std::to_string(hi);
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// The text without one leading '+', which must then be followed by a digit.
std::string_view unsigned_part(std::string_view text) {
  if (text.starts_with('+') && text.size() > 1 && std::isdigit(static_cast<unsigned char>(text[1])))
    text.remove_prefix(1);
  return text;
}
}  // namespace

int64_t parse_whole_number(std::string_view text, int64_t lo, int64_t hi) {
  const std::string want = "must be " + whole_range(lo, hi) + ", got " + quoted(text);
  const std::string_view t = unsigned_part(text);
  int64_t v = 0;
  const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
  check(!t.empty() && r.ec == std::errc() && r.ptr == t.data() + t.size() && v >= lo && v <= hi,
        want);
  return v;
}

uint64_t parse_unsigned_number(std::string_view text, uint64_t hi) {
  const std::string want =
      "must be a whole number from 0 to " + std::to_string(hi) + ", got " + quoted(text);
  const std::string_view t = unsigned_part(text);
  uint64_t v = 0;
  const auto r = std::from_chars(t.data(), t.data() + t.size(), v);
  check(!t.empty() && std::isdigit(static_cast<unsigned char>(t.front())) && r.ec == std::errc() &&
            r.ptr == t.data() + t.size() && v <= hi,
        want);
  return v;
}

std::string describe(const RealRange& range) {
  const bool has_lo = std::isfinite(range.lo), has_hi = std::isfinite(range.hi);
  const std::string lo = (range.lo_open ? "above " : "at least ") + number(range.lo);
  const std::string hi = (range.hi_open ? "below " : "at most ") + number(range.hi);
  if (has_lo && has_hi) {
    if (!range.lo_open && !range.hi_open)
      return "a number from " + number(range.lo) + " to " + number(range.hi);
    return "a number " + lo + " and " + hi;
  }
  if (has_lo) return "a number " + std::string(range.lo_open ? "" : "of ") + lo;
  if (has_hi) return "a number " + std::string(range.hi_open ? "" : "of ") + hi;
  return "a number";
}

double parse_real_number(std::string_view text, const RealRange& range) {
  const std::string want = "must be " + describe(range) + ", got " + quoted(text);
  const std::string_view t = text.starts_with("+.") ? text.substr(1) : unsigned_part(text);
  double v = 0;
  const auto r = std::from_chars(t.data(), t.data() + t.size(), v, std::chars_format::general);
  check(!t.empty() && r.ec == std::errc() && r.ptr == t.data() + t.size() && std::isfinite(v),
        want);
  check(range.lo_open ? v > range.lo : v >= range.lo, want);
  check(range.hi_open ? v < range.hi : v <= range.hi, want);
  return v;
}

}  // namespace epwa
