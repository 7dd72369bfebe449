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

// The routing of n tokens over ne experts, two each (topk not in index order), and its weights.
struct TwoExperts {
  std::vector<int32_t> topk;
  std::vector<float> weights;
  TwoExperts(int64_t n, int64_t ne) {
    for (int64_t i = 0; i < n; ++i) {
      topk.insert(topk.end(), {static_cast<int32_t>((i + 2) % ne), static_cast<int32_t>(i % ne)});
      const float w0 = 0.5f + 0.1f * static_cast<float>(i % 5);
      weights.insert(weights.end(), {w0, 1 - w0});
    }
  }
};

// The routed experts of n tokens in double, and the sums of the terms' magnitudes (mag): for token
// i's slots, expert e = topk, h[r] = act(e, r, gate_e[r] . x_i, up_e[r] . x_i) over w rows, out_i
// += weight * (down_bias(e, r) + down_e[r] . h). gate / down / up (e, r, c): stored values.
template <class At, class Act, class Bias>
void experts_ref(const std::vector<float>& x, int64_t n, int64_t d, int64_t w,
                 const TwoExperts& route, At gate, At down, At up, Act act, Bias down_bias,
                 std::vector<double>& want, std::vector<double>& mag) {
  const int64_t k = 2;
  want.assign(n * d, 0), mag.assign(n * d, 0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const int64_t e = route.topk[i * k + j];
      const double weight = route.weights[i * k + j];
      std::vector<double> h(w);
      for (int64_t r = 0; r < w; ++r) {
        double a = 0, b = 0;
        for (int64_t c = 0; c < d; ++c)
          a += gate(e, r, c) * x[i * d + c], b += up(e, r, c) * x[i * d + c];
        h[r] = act(e, r, a, b);
      }
      for (int64_t r = 0; r < d; ++r) {
        double acc = down_bias(e, r), m = std::fabs(acc);
        for (int64_t c = 0; c < w; ++c)
          acc += down(e, r, c) * h[c], m += std::fabs(down(e, r, c) * h[c]);
        want[i * d + r] += weight * acc;
        mag[i * d + r] += weight * m;
      }
    }
}

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
  // their activations to f16 here (tensor cores; F32 weights stay f32; Q8_0 and Q4_0 go 8-bit).
  bool half_gemm(epwa::DType type) const {
    return GetParam() == "cuda" && type != epwa::DType::F32 && !q8_products(type);
  }
  // Whether the GPU rounds the activations of `type` weights to 8 bits, as the CPU does: Q8_0 and
  // Q4_0 (not with EPWA_CUDA_GEMM=f32), in its dp4a kernels and, for rows of a multiple of 256
  // values (every width these tests use), on the int8 tensor cores (16 rows and more).
  bool q8_products(epwa::DType type) const {
    return GetParam() == "cuda" && (type == epwa::DType::Q8_0 || type == epwa::DType::Q4_0);
  }

  // The routed experts' outputs of n tokens (k slots each over ne experts of `type`) against the
  // double reference `want`, `mag` its sums of the terms' magnitudes. f32 sums: within 1e-5 of
  // mag. The CPU rounds activations of quantized types to 8 bits (and of bf16 / f16 weights to
  // those): about 1 % of the largest output, as does the GPU for Q8_0 and Q4_0; the GPU's f16
  // prompt products (32+ slots per expert) round weights and activations of both products to f16: a
  // few 2^-11 of the largest output.
  void expect_experts_close(const std::vector<float>& out, const std::vector<double>& want,
                            const std::vector<double>& mag, epwa::DType type, int64_t n, int64_t k,
                            int64_t ne) const {
    double scale = 0;
    for (double v : want) scale = std::max(scale, std::fabs(v));
    const bool prompt = n * k >= 32 * ne;
    const bool rounded =
        (backend_->name() == "cpu" && type != epwa::DType::F32) || q8_products(type);
    const double tol = rounded ? 5e-2 : prompt && half_gemm(type) ? 5e-3 : 0;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(out[i], want[i], tol > 0 ? tol * scale : 1e-5 * mag[i]) << i;
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
