// Shared helpers of the ops tests: fresh random data per run (the seed is printed on failure).
#pragma once
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "epwa/half.hpp"
#include "epwa/ops.hpp"

namespace epwa::test {

inline uint64_t fresh_seed() {
  static const uint64_t base = std::random_device{}();
  static uint64_t n = 0;
  return base + 0x9e3779b97f4a7c15ull * ++n;
}

// A stored weight matrix with its exactly representable f32 values (after rounding to the type).
struct StoredMatrix {
  std::vector<std::byte> bytes;  // `offset` junk bytes, then the data: tests unaligned rows
  std::vector<double> values;    // rows x cols, as stored
  TensorView view;
};

inline StoredMatrix random_matrix(DType t, int64_t rows, int64_t cols, std::mt19937_64& rng,
                                  size_t offset = 0) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  StoredMatrix m;
  const int64_t eb = t == DType::F32 ? 4 : 2;
  m.bytes.resize(offset + static_cast<size_t>(rows * cols * eb));
  m.values.resize(static_cast<size_t>(rows * cols));
  std::byte* p = m.bytes.data() + offset;
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float f = nd(rng);
    if (t == DType::F32) {
      std::memcpy(p + i * 4, &f, 4);
      m.values[i] = f;
    } else {
      const uint16_t h = t == DType::F16 ? f32_to_f16(f) : f32_to_bf16(f);
      std::memcpy(p + i * 2, &h, 2);
      m.values[i] = t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
  m.view.name = "w";
  m.view.dtype = t;
  m.view.shape = {rows, cols};
  m.view.data = std::span<const std::byte>(p, static_cast<size_t>(rows * cols * eb));
  return m;
}

inline std::vector<float> random_vector(int64_t n, std::mt19937_64& rng, float sd = 1.0f) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

// Runs the body once per kernel ISA this CPU has, restoring the default afterwards.
class IsaGuard {
 public:
  explicit IsaGuard(ops::Isa isa) : saved_(ops::active_isa()) { ops::set_isa(isa); }
  ~IsaGuard() { ops::set_isa(saved_); }

 private:
  ops::Isa saved_;
};

constexpr double kU = 1.0 / (1 << 24);  // unit roundoff of f32

}  // namespace epwa::test
