// The fixture of the backend op tests: each op on every backend built and usable here (the CPU;
// the GPU where epwa was built with it and a device is present) against a double reference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <deque>
#include <random>
#include <vector>

#include "epwa/backend.hpp"
#include "epwa/model.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant.hpp"

namespace backend_test {

using epwa::Backend;
using epwa::TensorView;

struct Mat {
  std::vector<float> v;
  TensorView t;
  Mat(int64_t rows, int64_t cols, std::mt19937& rng, float mean = 0) : v(rows * cols) {
    std::normal_distribution<float> nd(mean, mean ? 0.1f : 0.5f);
    for (float& x : v) x = nd(rng);
    t.name = "m";
    t.shape = rows == 1 ? std::vector<int64_t>{cols} : std::vector<int64_t>{rows, cols};
    t.data = std::as_bytes(std::span<const float>(v));
  }
  double at(int64_t r, int64_t c) const { return v[r * t.cols() + c]; }
};

inline std::vector<float> randn(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(n);
  for (float& f : x) f = nd(rng);
  return x;
}

inline void expect_close(const std::vector<float>& got, const std::vector<double>& want,
                         double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << i;
}

inline double silu(double z) {
  return z / (1 + std::exp(-z));
}

inline epwa::ModelConfig config() {
  epwa::ModelConfig c;
  c.head_dim = 8;
  c.rope_theta = 10000.0f;
  return c;
}

// A matrix of `rows` x `cols` random values stored as `type` (quantized row by row), with its
// dequantized values for the reference.
struct StoredMat {
  std::vector<std::byte> bytes;
  std::vector<float> deq;
  TensorView t;
  StoredMat(epwa::DType type, int64_t rows, int64_t cols, std::mt19937& rng)
      : bytes(epwa::dtype_bytes(type, rows * cols)), deq(rows * cols) {
    const auto v = randn(rows * cols, rng);
    const int64_t rb = epwa::dtype_bytes(type, cols);
    for (int64_t r = 0; r < rows; ++r) {
      epwa::quantize_row(type, v.data() + r * cols, bytes.data() + r * rb, cols);
      epwa::dequantize_row(type, bytes.data() + r * rb, deq.data() + r * cols, cols);
    }
    t.name = "m";
    t.dtype = type;
    t.shape = {rows, cols};
    t.data = bytes;
  }
  double at(int64_t r, int64_t c) const { return deq[r * t.cols() + c]; }
};

// Each test gets a backend of its own (the CPU's is static): a GPU backend keeps copies of the
// weights it was given, keyed by their address, so it must not outlive them (include/epwa/
// backend.hpp). Matrices stay alive until the end of the test for the same reason.
class BackendFixture : public ::testing::TestWithParam<std::string> {
 public:
  void SetUp() override {
    if (GetParam() == "cpu") {
      backend_ = &epwa::cpu_backend();
    } else {
      // "cuda_f32gemm": the prompts' products through f32 cuBLAS instead of f16 tensor cores.
      // (set_env: the platform layer's, as Windows has no setenv; empty reads as unset.)
      epwa::set_env("EPWA_CUDA_GEMM", GetParam() == "cuda_f32gemm" ? "f32" : "f16");
      gpu_ = epwa::gpu_backend();
      epwa::set_env("EPWA_CUDA_GEMM", "");
      ASSERT_TRUE(gpu_) << "no GPU backend";
      backend_ = gpu_.get();
    }
  }
  const Backend& backend() const { return *backend_; }
  // Whether the GPU's prompt products (64+ rows; 32+ slots per expert) round `type` weights and
  // their activations to f16 here (tensor cores; F32 weights stay f32).
  bool half_gemm(epwa::DType type) const {
    return GetParam() == "cuda" && type != epwa::DType::F32;
  }
  // Whether the GPU's smaller products (under 64 rows; under 32 slots per expert) round the
  // activations of `type` weights to 8 bits, as the CPU does (dp4a; not with EPWA_CUDA_GEMM=f32).
  bool q8_decode(epwa::DType type) const {
    return GetParam() == "cuda" && (type == epwa::DType::Q8_0 || type == epwa::DType::Q4_0);
  }

  // Host values in the backend's activation memory (a slot of `s` each), and back.
  template <typename T>
  T* put(epwa::BackendScratch& s, int slot, const std::vector<T>& v) const {
    void* p = backend_->buffer(s, slot, v.size() * sizeof(T));
    backend_->upload(p, v.data(), v.size() * sizeof(T), s);
    return static_cast<T*>(p);
  }
  template <typename T = float>
  T* room(epwa::BackendScratch& s, int slot, int64_t count) const {
    return static_cast<T*>(backend_->buffer(s, slot, static_cast<size_t>(count) * sizeof(T)));
  }
  template <typename T>
  std::vector<T> get(epwa::BackendScratch& s, const T* p, int64_t count) const {
    std::vector<T> v(count);
    backend_->download(v.data(), p, v.size() * sizeof(T), s);
    return v;
  }

 private:
  std::shared_ptr<const Backend> gpu_;
  const Backend* backend_ = nullptr;
};

// The CPU, and the GPU where it is usable.
inline std::vector<std::string> backends() {
  std::vector<std::string> v{"cpu"};
  if (epwa::gpu_backend()) v.insert(v.end(), {"cuda", "cuda_f32gemm"});
  return v;
}

}  // namespace backend_test
