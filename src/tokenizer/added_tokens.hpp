// Added tokens (specials such as "<s>", "<|im_start|>", and user-defined tokens) are cut out of the
// text before the model sees it: leftmost match first, the longest token at a position.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace epwa::tok {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = true;                  // special tokens are matched only when parsing specials
  bool lstrip = false, rstrip = false;  // absorb the whitespace before / after the token
};

struct Segment {
  std::string_view text;  // raw text when id < 0
  int32_t id = -1;
  size_t offset = 0;  // byte offset of the segment in the input
};

class AddedTokenMatcher {
 public:
  void add(AddedToken t);
  bool empty() const { return tokens_.empty(); }
  // Text and token segments in order; raw segments are never empty.
  std::vector<Segment> split(std::string_view text, bool parse_special) const;

 private:
  std::vector<AddedToken> tokens_;
  std::array<std::vector<int32_t>, 256> by_first_;  // indices by first byte, longest first
};

}  // namespace epwa::tok
