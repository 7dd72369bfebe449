// Strict number parsing (include/epwa/numbers.hpp): whole text, decimal, in range, and messages
// that say what is allowed in plain words.
#include "epwa/numbers.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <string>

#include "epwa/error.hpp"
#include "support/error_of.hpp"

using epwa_test::error_of;

namespace {

TEST(Numbers, WholeNumbers) {
  EXPECT_EQ(epwa::parse_whole_number("42"), 42);
  EXPECT_EQ(epwa::parse_whole_number("+7"), 7);
  EXPECT_EQ(epwa::parse_whole_number("-3", -5, 5), -3);
  for (const char* bad :
       {"", "1.5", "1e3", "0x10", " 1", "1 ", "+-1", "--1", "9223372036854775808"})
    EXPECT_THROW(epwa::parse_whole_number(bad), epwa::Error) << bad;
  EXPECT_EQ(error_of([] { epwa::parse_whole_number("-1", 0, 10); }),
            "must be a whole number from 0 to 10, got '-1'");
  EXPECT_EQ(error_of([] { epwa::parse_whole_number("0", 1, std::numeric_limits<int64_t>::max()); }),
            "must be a whole number of at least 1, got '0'");
}

TEST(Numbers, UnsignedNumbersForSeeds) {
  EXPECT_EQ(epwa::parse_unsigned_number("18446744073709551615"),
            std::numeric_limits<uint64_t>::max());
  for (const char* bad : {"-1", "18446744073709551616", "1e23", "1.0", "+-0"})
    EXPECT_EQ(
        error_of([&] { epwa::parse_unsigned_number(bad); }),
        std::string("must be a whole number from 0 to 18446744073709551615, got '") + bad + "'")
        << bad;
}

TEST(Numbers, RealNumbers) {
  EXPECT_DOUBLE_EQ(epwa::parse_real_number("2.5e-1"), 0.25);
  EXPECT_DOUBLE_EQ(epwa::parse_real_number("+.5"), 0.5);
  for (const char* bad : {"nan", "inf", "-inf", "1e400", "0x1p3", "", "1,5", "."})
    EXPECT_THROW(epwa::parse_real_number(bad), epwa::Error) << bad;
  const epwa::RealRange unit{.lo = 0, .hi = 1, .lo_open = true, .hi_open = true};
  EXPECT_THROW(epwa::parse_real_number("0", unit), epwa::Error);
  EXPECT_THROW(epwa::parse_real_number("1", unit), epwa::Error);
  EXPECT_EQ(error_of([&] { epwa::parse_real_number("2", unit); }),
            "must be a number above 0 and below 1, got '2'");
  EXPECT_EQ(error_of([] { epwa::parse_real_number("1e30", {.lo = 0, .hi = 1e4}); }),
            "must be a number from 0 to 10000, got '1e30'");
  EXPECT_EQ(epwa::describe({.lo = 0}), "a number of at least 0");
  // A long text is cut in the message, never echoed whole.
  EXPECT_LT(error_of([] { epwa::parse_real_number(std::string(400, '9'), {.hi = 1}); }).size(),
            100u);
}

// Random texts made of number characters: each parse gives a value in range or an Error.
TEST(Numbers, RandomTextsParseInRangeOrFail) {
  std::mt19937 rng(5);
  const std::string alphabet = "0123456789+-.eExna ";
  for (int i = 0; i < 20000; ++i) {
    std::string s(rng() % 12, ' ');
    for (char& c : s) c = alphabet[rng() % alphabet.size()];
    try {
      const int64_t v = epwa::parse_whole_number(s, -50, 50);
      EXPECT_TRUE(v >= -50 && v <= 50) << s;
    } catch (const epwa::Error&) {
    }
    try {
      const double v = epwa::parse_real_number(s, {.lo = -1, .hi = 1, .hi_open = true});
      EXPECT_TRUE(v >= -1 && v < 1) << s;
    } catch (const epwa::Error&) {
    }
  }
}

}  // namespace
