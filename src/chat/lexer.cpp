#include "chat/lexer.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

#include "epwa/error.hpp"
#include "tokenizer/utf8.hpp"

namespace epwa::jinja {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string normalize(std::string_view src) {
  std::string out;
  out.reserve(src.size());
  for (size_t k = 0; k < src.size(); ++k) {
    if (src[k] == '\r') {
      out += '\n';
      if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
    } else {
      out += src[k];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();  // keep_trailing_newline=False
  return out;
}

// Python string-literal escapes, as Jinja2 decodes them ("unicode-escape"); unknown ones stay.
std::string unescape(std::string_view s, int line) {
  std::string out;
  for (size_t k = 0; k < s.size(); ++k) {
    if (s[k] != '\\' || k + 1 == s.size()) {
      out += s[k];
      continue;
    }
    const char c = s[++k];
    auto hex = [&](size_t n) {
      if (k + n >= s.size())
        throw Error("line " + std::to_string(line) + ": truncated escape in a string");
      const std::string digits(s.substr(k + 1, n));
      if (!std::all_of(digits.begin(), digits.end(),
                       [](char d) { return std::isxdigit(uint8_t(d)); }))
        throw Error("line " + std::to_string(line) + ": bad escape \\" + std::string(1, c) +
                    digits);
      k += n;
      tok::append_utf8(out, char32_t(std::strtoul(digits.c_str(), nullptr, 16)));
    };
    switch (c) {
      case 'n':
        out += '\n';
        break;
      case 't':
        out += '\t';
        break;
      case 'r':
        out += '\r';
        break;
      case '\\':
        out += '\\';
        break;
      case '\'':
        out += '\'';
        break;
      case '"':
        out += '"';
        break;
      case 'a':
        out += '\a';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'v':
        out += '\v';
        break;
      case '\n':
        break;  // a line continuation
      case 'x':
        hex(2);
        break;
      case 'u':
        hex(4);
        break;
      case 'U':
        hex(8);
        break;
      default:
        if (c >= '0' && c <= '7') {
          int v = c - '0', n = 1;
          while (n < 3 && k + 1 < s.size() && s[k + 1] >= '0' && s[k + 1] <= '7') {
            v = v * 8 + (s[++k] - '0');
            ++n;
          }
          tok::append_utf8(out, char32_t(v));
        } else {
          out += '\\';
          out += c;
        }
    }
  }
  return out;
}

class Lexer {
 public:
  explicit Lexer(std::string src) : s_(std::move(src)) {}

  std::vector<Token> run() {
    bool line_starting = true;
    while (pos_ < s_.size()) {
      const size_t start = next_tag(pos_);
      std::string text = s_.substr(pos_, start - pos_);
      if (start == s_.size()) {
        emit_text(text);
        pos_ = start;
        break;
      }
      const char kind = s_[start + 1];  // '{', '%' or '#'
      const char mod = start + 2 < s_.size() ? s_[start + 2] : '\0';
      if (mod == '-') {
        while (!text.empty() && is_space(text.back())) text.pop_back();
      } else if (kind != '{' && mod != '+') {
        const size_t l_pos = text.rfind('\n') == std::string::npos ? 0 : text.rfind('\n') + 1;
        if ((l_pos > 0 || line_starting) &&
            std::all_of(text.begin() + l_pos, text.end(),
                        [](char c) { return c == ' ' || c == '\t'; }))
          text.resize(l_pos);
      }
      sync(pos_);
      emit_text(text);
      sync(start);
      pos_ = start + 2 + (mod == '-' || mod == '+' ? 1 : 0);
      if (kind == '#') {
        const size_t end = s_.find("#}", pos_);
        if (end == std::string::npos) fail("a comment is not closed (missing #})");
        const char before = end > pos_ ? s_[end - 1] : '\0';
        sync(end + 2);
        pos_ = end + 2;
        after_tag(before, true);
      } else if (kind == '%' && raw_follows()) {
        lex_raw();
      } else {
        push(kind == '{' ? Token::T::VarBegin : Token::T::BlockBegin);
        lex_expression(kind == '{');
      }
      line_starting = pos_ > 0 && s_[pos_ - 1] == '\n';
    }
    push(Token::T::End);
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail(const std::string& msg) const {
    throw Error("line " + std::to_string(line_) + ": " + msg);
  }

  size_t next_tag(size_t from) const {
    for (size_t k = from; k + 1 < s_.size(); ++k)
      if (s_[k] == '{' && (s_[k + 1] == '{' || s_[k + 1] == '%' || s_[k + 1] == '#')) return k;
    return s_.size();
  }

  // Moves the line count to position p (positions only grow).
  void sync(size_t p) {
    if (p <= counted_) return;
    line_ += int(std::count(s_.begin() + counted_, s_.begin() + p, '\n'));
    counted_ = p;
  }

  void emit_text(const std::string& text) {
    if (text.empty()) return;
    Token t{Token::T::Text, text};
    t.line = line_;
    out_.push_back(std::move(t));
  }

  void push(Token::T type, std::string text = {}) {
    Token t{type, std::move(text)};
    t.line = line_;
    out_.push_back(std::move(t));
  }

  // After a tag's closing delimiter: `-` strips all whitespace, `+` keeps it, and block or comment
  // tags lose one newline (trim_blocks).
  void after_tag(char modifier, bool block) {
    if (modifier == '-') {
      while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
    } else if (modifier != '+' && block && pos_ < s_.size() && s_[pos_] == '\n') {
      ++pos_;
    }
    sync(pos_);
  }

  bool raw_follows() const {
    size_t p = pos_;
    while (p < s_.size() && is_space(s_[p])) ++p;
    if (s_.compare(p, 3, "raw") != 0) return false;
    p += 3;
    while (p < s_.size() && is_space(s_[p])) ++p;
    if (p < s_.size() && (s_[p] == '-' || s_[p] == '+')) ++p;
    return s_.compare(p, 2, "%}") == 0;
  }

  void lex_raw() {
    size_t p = s_.find("%}", pos_);
    pos_ = p + 2;
    after_tag(s_[p - 1], true);
    // The body runs to the first {% endraw %}.
    for (size_t k = pos_; k + 1 < s_.size(); ++k) {
      if (s_.compare(k, 2, "{%") != 0) continue;
      size_t q = k + 2;
      const char mod = q < s_.size() ? s_[q] : '\0';
      if (mod == '-' || mod == '+') ++q;
      while (q < s_.size() && is_space(s_[q])) ++q;
      if (s_.compare(q, 6, "endraw") != 0) continue;
      q += 6;
      while (q < s_.size() && is_space(s_[q])) ++q;
      char endmod = '\0';
      if (q < s_.size() && (s_[q] == '-' || s_[q] == '+')) endmod = s_[q++];
      if (s_.compare(q, 2, "%}") != 0) continue;
      std::string body = s_.substr(pos_, k - pos_);
      if (mod == '-')
        while (!body.empty() && is_space(body.back())) body.pop_back();
      emit_text(body);
      sync(q + 2);
      pos_ = q + 2;
      after_tag(endmod, true);
      return;
    }
    fail("{% raw %} without {% endraw %}");
  }

  void lex_expression(bool variable) {
    int depth = 0;
    bool after_dot = false;
    while (true) {
      while (pos_ < s_.size() && is_space(s_[pos_])) ++pos_;
      sync(pos_);
      if (pos_ >= s_.size()) fail(variable ? "a {{ tag is not closed" : "a {% tag is not closed");
      if (depth == 0) {
        const std::string_view rest(s_.data() + pos_, s_.size() - pos_);
        const std::string_view end = variable ? "}}" : "%}";
        char mod = '\0';
        if ((rest[0] == '-' || (!variable && rest[0] == '+')) && rest.substr(1, 2) == end)
          mod = rest[0];
        if (mod || rest.substr(0, 2) == end) {
          pos_ += mod ? 3 : 2;
          push(variable ? Token::T::VarEnd : Token::T::BlockEnd);
          after_tag(mod, !variable);
          return;
        }
      }
      const char c = s_[pos_];
      if (c == '\'' || c == '"') {
        size_t k = pos_ + 1;
        while (k < s_.size() && s_[k] != c) k += s_[k] == '\\' ? 2 : 1;
        if (k >= s_.size()) fail("a string is not closed");
        Token t{Token::T::String,
                unescape(std::string_view(s_).substr(pos_ + 1, k - pos_ - 1), line_)};
        t.line = line_;
        out_.push_back(std::move(t));
        pos_ = k + 1;
        after_dot = false;
        continue;
      }
      if (std::isdigit(uint8_t(c))) {
        lex_number(after_dot);
        after_dot = false;
        continue;
      }
      if (std::isalpha(uint8_t(c)) || c == '_') {
        size_t k = pos_;
        while (k < s_.size() && (std::isalnum(uint8_t(s_[k])) || s_[k] == '_')) ++k;
        push(Token::T::Name, s_.substr(pos_, k - pos_));
        pos_ = k;
        after_dot = false;
        continue;
      }
      static const char* const ops2[] = {"//", "**", "==", "!=", "<=", ">="};
      std::string op;
      for (const char* o : ops2)
        if (s_.compare(pos_, 2, o) == 0) op = o;
      if (op.empty()) {
        if (std::string_view("+-*/%~<>=.,:|()[]{}").find(c) == std::string_view::npos)
          fail(std::string("unexpected character '") + c + "' in a tag");
        op = std::string(1, c);
      }
      if (op == "(" || op == "[" || op == "{") ++depth;
      if (op == ")" || op == "]" || op == "}") depth = std::max(0, depth - 1);
      push(Token::T::Op, op);
      pos_ += op.size();
      after_dot = op == ".";
    }
  }

  void lex_number(bool after_dot) {
    size_t k = pos_;
    auto digits = [&] {
      while (k < s_.size() && (std::isdigit(uint8_t(s_[k])) || s_[k] == '_')) ++k;
    };
    digits();
    bool is_float = false;
    if (!after_dot && k + 1 < s_.size() && s_[k] == '.' && std::isdigit(uint8_t(s_[k + 1]))) {
      is_float = true;
      ++k;
      digits();
    }
    if (!after_dot && k < s_.size() && (s_[k] == 'e' || s_[k] == 'E')) {
      size_t q = k + 1;
      if (q < s_.size() && (s_[q] == '+' || s_[q] == '-')) ++q;
      if (q < s_.size() && std::isdigit(uint8_t(s_[q]))) {
        is_float = true;
        k = q;
        digits();
      }
    }
    std::string text = s_.substr(pos_, k - pos_);
    text.erase(std::remove(text.begin(), text.end(), '_'), text.end());
    Token t{is_float ? Token::T::Float : Token::T::Int, text};
    t.line = line_;
    errno = 0;
    if (is_float) {
      t.f = std::strtod(text.c_str(), nullptr);
    } else {
      t.i = std::strtoll(text.c_str(), nullptr, 10);
      if (errno == ERANGE) fail("integer literal " + text + " is too large");
    }
    out_.push_back(std::move(t));
    pos_ = k;
  }

  std::string s_;
  size_t pos_ = 0, counted_ = 0;
  int line_ = 1;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  return Lexer(normalize(source)).run();
}

}  // namespace epwa::jinja
