// libFuzzer entry point for the command line's text inputs (docs/CLI.md says how to build it): the
// numeric option parsers and the JSON-lines batch reader. Any input must parse to a value inside
// the asked range, or fail with epwa::Error.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "epwa/batch.hpp"
#include "epwa/error.hpp"
#include "epwa/numbers.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const int64_t v = epwa::parse_whole_number(text, -5, 1000);
    if (v < -5 || v > 1000) std::abort();
  } catch (const epwa::Error&) {
  }
  try {
    if (epwa::parse_unsigned_number(text, 77) > 77) std::abort();
  } catch (const epwa::Error&) {
  }
  try {
    const double v = epwa::parse_real_number(text, {.lo = 0, .hi = 1, .lo_open = true});
    if (!(v > 0 && v <= 1)) std::abort();
  } catch (const epwa::Error&) {
  }
  try {
    const epwa::BatchLine b = epwa::parse_batch_line(text);
    if (b.is_object != b.object.is_object()) std::abort();
    (void)epwa::batch_key(b.object, 1);
  } catch (const epwa::Error&) {
  }
  return 0;
}
