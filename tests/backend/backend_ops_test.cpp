// Every backend op against a plain double-precision reference, for every backend built and usable
// here (the CPU; the GPU where epwa was built with it and a device is present): the harness a new
// backend is checked with, op by op.
#include <gtest/gtest.h>

#include <cmath>
#include <deque>
#include <random>
#include <vector>

#include "epwa/backend.hpp"
#include "epwa/model.hpp"
#include "epwa/quant.hpp"

namespace {

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

std::vector<float> randn(int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(n);
  for (float& f : x) f = nd(rng);
  return x;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << i;
}

double silu(double z) {
  return z / (1 + std::exp(-z));
}

epwa::ModelConfig config() {
  epwa::ModelConfig c;
  c.head_dim = 8;
  c.rope_theta = 10000.0f;
  return c;
}

// Each test gets a backend of its own (the CPU's is static): a GPU backend keeps copies of the
// weights it was given, keyed by their address, so it must not outlive them (include/epwa/
// backend.hpp). Matrices stay alive until the end of the test for the same reason.
class BackendOps : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cpu") {
      backend_ = &epwa::cpu_backend();
    } else {
      gpu_ = epwa::gpu_backend();
      ASSERT_TRUE(gpu_) << "no GPU backend";
      backend_ = gpu_.get();
    }
  }
  const Backend& backend() const { return *backend_; }

 private:
  std::shared_ptr<const Backend> gpu_;
  const Backend* backend_ = nullptr;
};

TEST_P(BackendOps, LinearOfSeveralMatrices) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(1);
  Mat a(7, 16, rng), b(3, 16, rng);
  for (int64_t n : {1, 5}) {
    const auto x = randn(n * 16, rng);
    std::vector<float> ya(n * 7), yb(n * 3);
    const TensorView* ws[] = {&a.t, &b.t};
    float* ys[] = {ya.data(), yb.data()};
    be.linear(ws, x.data(), n, 16, ys, *s);
    for (auto [m, y] : {std::pair{&a, &ya}, std::pair{&b, &yb}}) {
      std::vector<double> want;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t r = 0; r < m->t.rows(); ++r) {
          double acc = 0;
          for (int64_t c = 0; c < 16; ++c) acc += m->at(r, c) * x[i * 16 + c];
          want.push_back(acc);
        }
      expect_close(*y, want, 1e-5);
    }
  }
}

// down(silu(gate x) * up x) of one FFN, and the routed experts summed with their weights.
std::vector<double> ffn_ref(const Mat& g, const Mat& u, const Mat& dn, const float* x, int64_t d,
                            int64_t w) {
  std::vector<double> h(w), out(d, 0);
  for (int64_t r = 0; r < w; ++r) {
    double a = 0, b = 0;
    for (int64_t c = 0; c < d; ++c) a += g.at(r, c) * x[c], b += u.at(r, c) * x[c];
    h[r] = silu(a) * b;
  }
  for (int64_t r = 0; r < d; ++r)
    for (int64_t c = 0; c < w; ++c) out[r] += dn.at(r, c) * h[c];
  return out;
}

TEST_P(BackendOps, FfnAndExperts) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(2);
  const int64_t d = 32, w = 24, ne = 4, k = 2;
  epwa::LayerWeights L;
  std::vector<Mat> mats;
  mats.reserve(3 * ne);
  for (int64_t e = 0; e < ne; ++e) {
    mats.emplace_back(w, d, rng), mats.emplace_back(d, w, rng), mats.emplace_back(w, d, rng);
    L.w1.push_back(mats[3 * e].t), L.w2.push_back(mats[3 * e + 1].t),
        L.w3.push_back(mats[3 * e + 2].t);
  }
  for (int64_t n : {1, 6}) {
    const auto x = randn(n * d, rng);
    std::vector<int32_t> topk;
    std::vector<float> weights;
    for (int64_t i = 0; i < n; ++i) {
      const int32_t a = static_cast<int32_t>((i * 3 + 1) % ne),
                    b = static_cast<int32_t>((a + 1 + i % 2) % ne);
      topk.insert(topk.end(), {a, b});
      weights.insert(weights.end(), {0.7f, 0.3f});
    }
    std::vector<float> out(n * d);
    be.expert_ffn({L.w1, L.w2, L.w3}, w, {topk.data(), weights.data(), k}, x.data(), n, d,
                  out.data(), *s);
    std::vector<double> want(n * d, 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = topk[i * k + j];
        const auto y =
            ffn_ref(mats[3 * e], mats[3 * e + 2], mats[3 * e + 1], x.data() + i * d, d, w);
        for (int64_t t = 0; t < d; ++t) want[i * d + t] += weights[i * k + j] * y[t];
      }
    expect_close(out, want, 1e-4);
    be.ffn(mats[0].t, mats[1].t, mats[2].t, w, x.data(), n, d, out.data(), *s);
    want.clear();
    for (int64_t i = 0; i < n; ++i) {
      const auto y = ffn_ref(mats[0], mats[2], mats[1], x.data() + i * d, d, w);
      want.insert(want.end(), y.begin(), y.end());
    }
    expect_close(out, want, 1e-4);
  }
}

TEST_P(BackendOps, RmsNormAndRope) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  be.reserve(*s, 16);
  std::mt19937 rng(3);
  const int64_t n = 3, d = 16;
  Mat w(1, d, rng, 1.0f);
  const auto x = randn(n * d, rng);
  std::vector<float> out(n * d);
  be.rmsnorm(x.data(), n, d, w.t, 1e-5f, out.data(), *s);
  std::vector<double> want;
  for (int64_t i = 0; i < n; ++i) {
    double ms = 0;
    for (int64_t c = 0; c < d; ++c) ms += double{x[i * d + c]} * x[i * d + c];
    const double r = 1 / std::sqrt(ms / d + 1e-5);
    for (int64_t c = 0; c < d; ++c) want.push_back(x[i * d + c] * r * w.v[c]);
  }
  expect_close(out, want, 1e-5);
  // Two heads of 8 per row, rows 16 apart, positions 5, 6, 7: rotate-half pairs (i, i + 4).
  std::vector<float> q = x;
  be.rope(q.data(), n, 2, d, 5, *s);
  want.clear();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < 2; ++h)
      for (int64_t j = 0; j < 8; ++j) {
        const int64_t p = i * d + h * 8, jj = j % 4;
        const double a = (5.0 + i) * std::pow(10000.0, -2.0 * jj / 8);
        const double v = x[p + j], other = j < 4 ? -double{x[p + j + 4]} : double{x[p + j - 4]};
        want.push_back(v * std::cos(a) + other * std::sin(a));
      }
  expect_close(q, want, 1e-5);
}

// Causal GQA attention in double: n queries at positions p0... over the cache rows kc/vc (kvd
// values each), as Backend::attention defines it.
std::vector<double> attention_ref(const std::vector<float>& q, const std::vector<float>& kc,
                                  const std::vector<float>& vc, int64_t n, int64_t p0, int64_t nh,
                                  int64_t nkv, int64_t hd) {
  const int64_t kvd = nkv * hd;
  std::vector<double> want;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t g = h / (nh / nkv), keys = p0 + i + 1;
      std::vector<double> sc(keys);
      double mx = -1e300, z = 0;
      for (int64_t t = 0; t < keys; ++t) {
        double dotp = 0;
        for (int64_t j = 0; j < hd; ++j)
          dotp += double{q[(i * nh + h) * hd + j]} * kc[t * kvd + g * hd + j];
        mx = std::max(mx, sc[t] = dotp / std::sqrt(double(hd)));
      }
      for (double& e : sc) z += (e = std::exp(e - mx));
      for (int64_t j = 0; j < hd; ++j) {
        double acc = 0;
        for (int64_t t = 0; t < keys; ++t) acc += sc[t] / z * vc[t * kvd + g * hd + j];
        want.push_back(acc);
      }
    }
  return want;
}

TEST_P(BackendOps, AttentionAppendsAndAttendsCausally) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(4);
  const int64_t nh = 4, nkv = 2, hd = 8, p0 = 2, n = 3, cap = 8, kvd = nkv * hd;
  std::vector<float> kc(cap * kvd), vc(cap * kvd);
  const auto old_k = randn(p0 * kvd, rng), old_v = randn(p0 * kvd, rng);
  std::copy(old_k.begin(), old_k.end(), kc.begin());
  std::copy(old_v.begin(), old_v.end(), vc.begin());
  const auto q = randn(n * nh * hd, rng), k = randn(n * kvd, rng), v = randn(n * kvd, rng);
  std::vector<float> att(n * nh * hd);
  be.attention(q.data(), k.data(), v.data(), n, p0, nh, nkv, hd, {kc.data(), vc.data(), cap},
               att.data(), *s);
  const auto want = attention_ref(q, kc, vc, n, p0, nh, nkv, hd);
  expect_close(att, want, 1e-5);
  for (int64_t i = 0; i < n * kvd; ++i) EXPECT_EQ(kc[p0 * kvd + i], k[i]);  // appended
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

// The GPU reads the stored values exactly and keeps activations in f32; the CPU quantizes
// activations to 8 bits for the quantized types (and rounds them to f16/bf16 for those): its
// error is that of the activations, about 1% of sum |w x|.
double type_tolerance(const Backend& be, epwa::DType t) {
  if (be.name() != "cpu") return 2e-6;
  return t == epwa::DType::F32 ? 2e-6 : 2e-2;
}

const epwa::DType kTypes[] = {epwa::DType::F32,  epwa::DType::F16,  epwa::DType::BF16,
                              epwa::DType::Q8_0, epwa::DType::Q4_0, epwa::DType::Q4_1,
                              epwa::DType::Q5_0, epwa::DType::Q5_1, epwa::DType::Q4_K,
                              epwa::DType::Q5_K, epwa::DType::Q6_K};

TEST_P(BackendOps, LinearOfEveryStorageType) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(5);
  const int64_t rows = 9, cols = 512;  // two K-quant super-blocks per row
  std::deque<StoredMat> keep;
  for (epwa::DType type : kTypes)
    for (int64_t n : {1, 11}) {
      SCOPED_TRACE(std::string(epwa::dtype_name(type)) + ", n = " + std::to_string(n));
      const StoredMat& m = keep.emplace_back(type, rows, cols, rng);
      const auto x = randn(n * cols, rng);
      std::vector<float> y(n * rows);
      const TensorView* ws[] = {&m.t};
      float* ys[] = {y.data()};
      be.linear(ws, x.data(), n, cols, ys, *s);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t r = 0; r < rows; ++r) {
          double acc = 0, mag = 0;
          for (int64_t c = 0; c < cols; ++c) {
            acc += m.at(r, c) * x[i * cols + c];
            mag += std::fabs(m.at(r, c) * x[i * cols + c]);
          }
          EXPECT_NEAR(y[i * rows + r], acc, type_tolerance(be, type) * mag) << i << "," << r;
        }
    }
}

TEST_P(BackendOps, ExpertsOfEveryStorageType) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(6);
  const int64_t d = 256, w = 512, ne = 3, k = 2, n = 4;
  std::deque<std::vector<StoredMat>> keep;
  for (epwa::DType type : kTypes) {
    SCOPED_TRACE(std::string(epwa::dtype_name(type)));
    auto& g = keep.emplace_back();
    auto& dn = keep.emplace_back();
    auto& u = keep.emplace_back();
    std::vector<TensorView> G, D, U;
    for (int64_t e = 0; e < ne; ++e) {
      g.emplace_back(type, w, d, rng), dn.emplace_back(type, d, w, rng),
          u.emplace_back(type, w, d, rng);
    }
    for (int64_t e = 0; e < ne; ++e) G.push_back(g[e].t), D.push_back(dn[e].t), U.push_back(u[e].t);
    const auto x = randn(n * d, rng);
    const std::vector<int32_t> topk = {2, 0, 1, 2, 0, 1, 1, 0};  // not in index order
    const std::vector<float> weights = {0.6f, 0.4f, 0.5f, 0.5f, 0.9f, 0.1f, 0.3f, 0.7f};
    std::vector<float> out(n * d);
    be.expert_ffn({G, D, U}, w, {topk.data(), weights.data(), k}, x.data(), n, d, out.data(), *s);
    double scale = 0;
    std::vector<double> want(n * d, 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = topk[i * k + j];
        std::vector<double> h(w);
        for (int64_t r = 0; r < w; ++r) {
          double a = 0, b = 0;
          for (int64_t c = 0; c < d; ++c)
            a += g[e].at(r, c) * x[i * d + c], b += u[e].at(r, c) * x[i * d + c];
          h[r] = silu(a) * b;
        }
        for (int64_t r = 0; r < d; ++r) {
          double acc = 0;
          for (int64_t c = 0; c < w; ++c) acc += dn[e].at(r, c) * h[c];
          want[i * d + r] += weights[i * k + j] * acc;
        }
      }
    for (double v : want) scale = std::max(scale, std::fabs(v));
    const double tol = be.name() == "cpu" && type != epwa::DType::F32 ? 5e-2 : 1e-5;
    for (int64_t i = 0; i < n * d; ++i) EXPECT_NEAR(out[i], want[i], tol * scale) << i;
  }
}

// A backend that keeps its own copy of the cache must follow the host cache through the
// Context's life: history it has not seen (a fork), growth (a new buffer with the old rows), and
// a rewind (rows overwritten from an earlier position).
TEST_P(BackendOps, AttentionFollowsTheCacheThroughGrowthAndRewind) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(7);
  const int64_t nh = 4, nkv = 2, hd = 8, kvd = nkv * hd;
  std::vector<float> kc(4 * kvd), vc(4 * kvd);
  auto step = [&](int64_t p0, int64_t n) {
    const int64_t cap = static_cast<int64_t>(kc.size()) / kvd;
    const auto q = randn(n * nh * hd, rng), k = randn(n * kvd, rng), v = randn(n * kvd, rng);
    std::vector<float> att(n * nh * hd);
    be.attention(q.data(), k.data(), v.data(), n, p0, nh, nkv, hd,
                 {kc.data(), vc.data(), cap, 1, 3}, att.data(), *s);
    const auto want = attention_ref(q, kc, vc, n, p0, nh, nkv, hd);
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(att[i] - want[i]));
    return worst;
  };
  // History written before this scratch existed (a forked context): positions 0, 1.
  const auto hk = randn(2 * kvd, rng), hv = randn(2 * kvd, rng);
  std::copy(hk.begin(), hk.end(), kc.begin());
  std::copy(hv.begin(), hv.end(), vc.begin());
  EXPECT_LT(step(2, 2), 1e-5);
  kc.resize(16 * kvd), vc.resize(16 * kvd);  // the cache grows (its rows kept)
  EXPECT_LT(step(4, 5), 1e-5);
  EXPECT_LT(step(3, 1), 1e-5);  // a rewind to position 3: rows 3... are rewritten
  EXPECT_LT(step(4, 1), 1e-5);
}

// The CPU, and the GPU where it is usable.
std::vector<std::string> backends() {
  std::vector<std::string> v{"cpu"};
  if (epwa::gpu_backend()) v.push_back("cuda");
  return v;
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendOps, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

}  // namespace
