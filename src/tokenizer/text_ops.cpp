#include "tokenizer/text_ops.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "epwa/error.hpp"

namespace epwa::tok {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

std::string normalize(std::string_view s, NormForm form) {
  if (s.empty()) return {};
  UErrorCode err = U_ZERO_ERROR;
  const UNormalizer2* n = nullptr;
  switch (form) {
    case NormForm::NFC:
      n = unorm2_getNFCInstance(&err);
      break;
    case NormForm::NFD:
      n = unorm2_getNFDInstance(&err);
      break;
    case NormForm::NFKC:
      n = unorm2_getNFKCInstance(&err);
      break;
    case NormForm::NFKD:
      n = unorm2_getNFKDInstance(&err);
      break;
  }
  // UTF-8 -> UTF-16 -> normalize -> UTF-8; ICU's normalizers work on UTF-16.
  std::u16string in(s.size() + 1, u'\0'), out;
  int32_t in_len = 0;
  u_strFromUTF8(reinterpret_cast<UChar*>(in.data()), static_cast<int32_t>(in.size()), &in_len,
                s.data(), static_cast<int32_t>(s.size()), &err);
  if (U_FAILURE(err)) throw Error(std::string("unicode normalization failed: ") + u_errorName(err));
  if (unorm2_isNormalized(n, reinterpret_cast<const UChar*>(in.data()), in_len, &err) &&
      U_SUCCESS(err))
    return std::string(s);
  err = U_ZERO_ERROR;
  out.resize(static_cast<size_t>(in_len) * 4 + 16);
  const int32_t out_len = unorm2_normalize(n, reinterpret_cast<const UChar*>(in.data()), in_len,
                                           reinterpret_cast<UChar*>(out.data()),
                                           static_cast<int32_t>(out.size()), &err);
  if (U_FAILURE(err)) throw Error(std::string("unicode normalization failed: ") + u_errorName(err));
  std::string res(static_cast<size_t>(out_len) * 3 + 1, '\0');
  int32_t res_len = 0;
  u_strToUTF8(res.data(), static_cast<int32_t>(res.size()), &res_len,
              reinterpret_cast<const UChar*>(out.data()), out_len, &err);
  if (U_FAILURE(err)) throw Error(std::string("unicode normalization failed: ") + u_errorName(err));
  res.resize(static_cast<size_t>(res_len));
  return res;
}

struct RegexSplitter::Impl {
  pcre2_code* code = nullptr;
  ~Impl() { pcre2_code_free(code); }
};

RegexSplitter::RegexSplitter(const std::string& pattern)
    : impl_(std::make_unique<Impl>()), pattern_(pattern) {
  int err = 0;
  PCRE2_SIZE off = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
  if (!impl_->code) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw Error("pre-tokenizer regex does not compile at offset " + std::to_string(off) + ": " +
                reinterpret_cast<const char*>(msg) + " (pattern " + pattern + ")");
  }
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // optional: falls back to the interpreter
}
RegexSplitter::~RegexSplitter() = default;
RegexSplitter::RegexSplitter(RegexSplitter&&) noexcept = default;
RegexSplitter& RegexSplitter::operator=(RegexSplitter&&) noexcept = default;

std::vector<std::string_view> RegexSplitter::split(std::string_view s) const {
  std::vector<std::string_view> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  if (!md) throw Error("out of memory in regex match");
  size_t pos = 0, last = 0;
  while (pos <= s.size()) {
    const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                               PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      throw Error("pre-tokenizer regex match failed (code " + std::to_string(rc) + ")");
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    if (b > last) out.push_back(s.substr(last, b - last));
    if (e > b) out.push_back(s.substr(b, e - b));
    last = e;
    if (e == b) {  // empty match: step one character
      if (e >= s.size()) break;
      size_t step = 1;
      while (e + step < s.size() && (static_cast<uint8_t>(s[e + step]) & 0xc0) == 0x80) ++step;
      pos = e + step;
    } else {
      pos = e;
    }
  }
  pcre2_match_data_free(md);
  if (last < s.size()) out.push_back(s.substr(last));
  return out;
}

}  // namespace epwa::tok
