// libFuzzer entry point for the GGUF reader (docs/GGUF.md says how to build it): any input must
// either parse, with every tensor view inside the buffer, or fail with epwa::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "epwa/gguf.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<std::byte>(data[i]);
  for (const bool lenient : {false, true}) {
    try {
      const epwa::GgufFile f =
          epwa::GgufFile::from_bytes(bytes, {.allow_unsupported_types = lenient});
      unsigned sum = 0;
      for (const auto& t : f.tensors()) {
        if (static_cast<int64_t>(t.data.size()) != epwa::dtype_bytes(t.dtype, t.numel()))
          std::abort();
        for (std::byte b : t.data) sum += static_cast<unsigned>(b);
      }
      if (sum == 0xdeadbeefu) return 0;  // keeps the reads from being optimised away
    } catch (const epwa::Error&) {
    }
  }
  return 0;
}
