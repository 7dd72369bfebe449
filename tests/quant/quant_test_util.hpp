// Shared helpers of the quant tests: fresh random data (seed printed on failure) and byte buffers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "epwa/half.hpp"
#include "epwa/quant.hpp"
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

// Every weight type with a dot kernel, and the kernel ISAs this CPU can run.
inline constexpr DType kAllTypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0,
                                      DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                                      DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4};

inline std::vector<KernelIsa> runnable_isas() {
  std::vector<KernelIsa> v;
  for (KernelIsa isa : {KernelIsa::Scalar, KernelIsa::Avx2, KernelIsa::Avx512Vnni})
    if (isa_available(isa)) v.push_back(isa);
  return v;
}

// Activation i as the packed kernels see it (after 8-bit quantization when packed so).
inline double packed_value(const PackedVector& p, int64_t i) {
  switch (p.format()) {
    case ActFormat::F32:
      return p.f32()[i];
    case ActFormat::Q8Block32:
      return static_cast<double>(p.qs()[i]) * p.scales()[i / 32];
    case ActFormat::Q8Block256:
      return static_cast<double>(p.qs()[i]) * p.scales()[i / 256];
  }
  return 0;
}

}  // namespace epwa::test
