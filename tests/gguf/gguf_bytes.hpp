// Encodes GGUF files byte by byte, independently of GgufWriter, so that tests can pin the format
// and build malformed files.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace epwa::test {

struct RawGguf {
  std::vector<std::byte> b;

  RawGguf& bytes(const void* p, size_t n) {
    const auto* c = static_cast<const std::byte*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  template <class T>
  RawGguf& put(T v) {
    return bytes(&v, sizeof(T));
  }
  RawGguf& u8(uint8_t v) { return put(v); }
  RawGguf& u32(uint32_t v) { return put(v); }
  RawGguf& u64(uint64_t v) { return put(v); }
  RawGguf& str(std::string_view s) {
    u64(s.size());
    return bytes(s.data(), s.size());
  }
  RawGguf& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    bytes("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  RawGguf& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(4).u32(v); }
  RawGguf& kv_str(std::string_view key, std::string_view v) { return str(key).u32(8).str(v); }
  // A tensor info; `ne` innermost first, as on disk.
  RawGguf& tensor(std::string_view name, std::vector<uint64_t> ne, uint32_t type, uint64_t off) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t d : ne) u64(d);
    return u32(type).u64(off);
  }
  RawGguf& pad(size_t alignment) {
    b.resize((b.size() + alignment - 1) / alignment * alignment, std::byte{0});
    return *this;
  }
  RawGguf& zeros(size_t n) {
    b.resize(b.size() + n, std::byte{0});
    return *this;
  }
};

}  // namespace epwa::test
