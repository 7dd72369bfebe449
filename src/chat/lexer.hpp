// Splits chat-template source into tokens, with Jinja2's whitespace rules as transformers sets
// them: trim_blocks (the newline after a block or comment tag goes), lstrip_blocks (spaces and tabs
// before a block or comment tag on its own line go), `-` / `+` on a tag, newlines normalised to
// "\n" and one trailing newline dropped.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace epwa::jinja {

struct Token {
  enum class T { Text, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, End };
  T t;
  std::string text;  // Text, Name, String (unescaped), Op
  int64_t i = 0;
  double f = 0;
  int line = 1;
};

// Throws Error "line N: ..." on an unterminated tag, comment or string, or a stray character.
std::vector<Token> tokenize(std::string_view source);

}  // namespace epwa::jinja
