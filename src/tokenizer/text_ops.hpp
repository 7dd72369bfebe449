// Text operations of tokenizer pipelines: Unicode normalization (ICU) and regex splitting (PCRE2
// with Unicode properties, the engine for the Oniguruma patterns HF files carry).
#pragma once
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace epwa::tok {

enum class NormForm { NFC, NFD, NFKC, NFKD };
// Normalizes valid UTF-8; throws Error if ICU fails.
std::string normalize(std::string_view s, NormForm form);

// A compiled pattern; split() returns the pieces of `s` with matches and the text between them
// as separate pieces (HF's Split behavior "Isolated"), in order, empty pieces dropped.
class RegexSplitter {
 public:
  explicit RegexSplitter(const std::string& pattern);  // throws Error naming the pattern
  ~RegexSplitter();
  RegexSplitter(RegexSplitter&&) noexcept;
  RegexSplitter& operator=(RegexSplitter&&) noexcept;
  std::vector<std::string_view> split(std::string_view s) const;  // s: valid UTF-8
  const std::string& pattern() const { return pattern_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string pattern_;
};

// The pre-tokenizer patterns known by name (llama.cpp's tokenizer.ggml.pre).
extern const char* const kGpt2Pattern;
extern const char* const kQwen2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kO200kPattern;

}  // namespace epwa::tok
