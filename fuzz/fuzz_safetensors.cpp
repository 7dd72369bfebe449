// libFuzzer target for the safetensors parser: any input must load or throw epwa::Error.
// Build: see docs/FORMATS-safetensors.md.
#include <cstddef>
#include <cstdint>
#include <span>

#include "epwa/error.hpp"
#include "epwa/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  try {
    const auto f = epwa::SafetensorsFile::from_bytes(bytes, "fuzz");
    // Touch every view so the sanitizers see any out-of-range one.
    uint8_t acc = 0;
    for (const auto& t : f.tensors())
      for (std::byte b : t.data) acc ^= static_cast<uint8_t>(b);
    volatile uint8_t sink = acc;
    (void)sink;
  } catch (const epwa::Error&) {
  }
  return 0;
}
