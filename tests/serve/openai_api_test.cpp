// Pieces of the server's wire format that need no network.
#include "serve/openai_api.hpp"

#include <gtest/gtest.h>

namespace {

using epwa::serve::complete_utf8_prefix;

TEST(OpenAiApi, StreamedTextWaitsForWholeCharacters) {
  EXPECT_EQ(complete_utf8_prefix(""), 0u);
  EXPECT_EQ(complete_utf8_prefix("abc"), 3u);
  EXPECT_EQ(complete_utf8_prefix("a\xC3"), 1u);          // é's first byte alone
  EXPECT_EQ(complete_utf8_prefix("a\xC3\xA9"), 3u);      // é whole
  EXPECT_EQ(complete_utf8_prefix("a\xE2\x82"), 1u);      // € missing its last byte
  EXPECT_EQ(complete_utf8_prefix("a\xE2\x82\xAC"), 4u);  // € whole
  EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98"), 0u);   // an emoji's first three bytes
  EXPECT_EQ(complete_utf8_prefix("\xF0\x9F\x98\x80 "), 5u);
}

TEST(OpenAiApi, ErrorObjectsHaveOpenAisShape) {
  const auto j = epwa::serve::error_json(epwa::serve::bad_request("'n' is wrong", "n"));
  EXPECT_EQ(j["error"]["message"], "'n' is wrong");
  EXPECT_EQ(j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(j["error"]["param"], "n");
  EXPECT_TRUE(j["error"]["code"].is_null());
  EXPECT_THROW(epwa::serve::parse_body("{\"a\": 1"), epwa::serve::ApiError);
  EXPECT_THROW(epwa::serve::parse_body("3"), epwa::serve::ApiError);
}

}  // namespace
