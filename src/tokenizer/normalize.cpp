// Unicode normalization through ICU; Windows builds replace this file with the OS's normalizer
// (src/platform/windows/tokenizer/normalize.cpp, docs/WINDOWS.md).
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include "epwa/error.hpp"
#include "tokenizer/text_ops.hpp"

namespace epwa::tok {

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

}  // namespace epwa::tok
