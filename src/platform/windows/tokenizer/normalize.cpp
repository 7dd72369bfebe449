// Unicode normalization with the OS's NormalizeString (Windows replacement of
// src/tokenizer/normalize.cpp, which uses ICU; docs/WINDOWS.md).
#include "platform/windows/utf16.hpp"
#include "tokenizer/text_ops.hpp"

namespace epwa::tok {

std::string normalize(std::string_view s, NormForm form) {
  if (s.empty()) return {};
  NORM_FORM f = NormalizationC;
  switch (form) {
    case NormForm::NFC:
      f = NormalizationC;
      break;
    case NormForm::NFD:
      f = NormalizationD;
      break;
    case NormForm::NFKC:
      f = NormalizationKC;
      break;
    case NormForm::NFKD:
      f = NormalizationKD;
      break;
  }
  const std::wstring in = win::to_utf16(s);
  if (IsNormalizedString(f, in.data(), static_cast<int>(in.size()))) return std::string(s);
  // The estimate can fall short; the API then says how much it needs.
  std::wstring out(in.size() * 4 + 16, L'\0');
  for (int tries = 0; tries < 4; ++tries) {
    const int n = NormalizeString(f, in.data(), static_cast<int>(in.size()), out.data(),
                                  static_cast<int>(out.size()));
    if (n > 0) {
      out.resize(static_cast<size_t>(n));
      return win::to_utf8(out);
    }
    if (GetLastError() != ERROR_INSUFFICIENT_BUFFER) break;
    out.resize(out.size() * 2);
  }
  throw Error("unicode normalization failed: NormalizeString error " +
              std::to_string(GetLastError()));
}

}  // namespace epwa::tok
