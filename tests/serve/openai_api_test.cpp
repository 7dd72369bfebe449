// Pieces of the server's wire format that need no network.
#include "serve/openai_api.hpp"

#include <gtest/gtest.h>

#include <filesystem>

#include "epwa/chat_template.hpp"
#include "epwa/tokenizer.hpp"

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

namespace {

// A chat request's tools reach the template in the order the client wrote their keys (a tool
// schema's tojson then reads as sent, as with transformers' Python dicts), not sorted.
TEST(OpenAiApi, ChatToolsKeepTheirKeyOrder) {
  const auto tok =
      epwa::load_tokenizer(std::filesystem::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe");
  const epwa::ChatTemplate tpl("{{ tools[0] | tojson }}|{{ messages[0].content }}");
  const std::string body =
      R"({"messages": [{"role": "user", "content": "hi"}],
          "tools": [{"type": "function", "function": {"name": "f", "description": "d"}}]})";
  const auto p = epwa::serve::parse_chat_completion(nlohmann::json::parse(body), body, &tpl,
                                                    epwa::tool_call_syntax(tpl), tok.get(), 8000,
                                                    epwa::ServerLimits{});
  EXPECT_EQ(tok->decode(p.prompt),
            R"({"type": "function", "function": {"name": "f", "description": "d"}}|hi)");
}

}  // namespace
