// Shared helpers of the quant tests: fresh random data (seed printed on failure) and byte buffers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "epwa/half.hpp"
#include "epwa/tensor.hpp"

namespace epwa::test {

inline uint32_t fresh_seed() {
  return std::random_device{}();
}

inline std::vector<float> gaussian(std::mt19937& rng, int64_t n, float sigma = 1.0f) {
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<std::byte> bytes_for(DType t, int64_t n) {
  return std::vector<std::byte>(static_cast<size_t>(dtype_bytes(t, n)));
}

inline void put_u16(std::vector<std::byte>& b, size_t off, uint16_t v) {
  b[off] = std::byte(v & 0xFF);
  b[off + 1] = std::byte(v >> 8);
}

}  // namespace epwa::test
