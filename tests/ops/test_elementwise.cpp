#include <cmath>

#include "epwa/error.hpp"
#include "test_util.hpp"

namespace epwa {
namespace {
using test::kU;

TEST(RmsNorm, MatchesDoubleFormula) {
  for (int64_t n : {1, 7, 64, 4096}) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("n=" + std::to_string(n) + " seed=" + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const auto x = test::random_vector(n, rng, 3.0f);
    const auto w = test::random_vector(n, rng);
    const float eps = 1e-5f;
    std::vector<float> out(n);
    rmsnorm(x, w, eps, out);
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double scale = 1.0 / std::sqrt(ss / n + eps);
    for (int64_t i = 0; i < n; ++i) {
      const double ref = double(w[i]) * x[i] * scale;
      ASSERT_NEAR(out[i], ref, 6 * kU * std::abs(ref) + 1e-30) << i;
    }
    // In place, and with the weight as a stored bf16 tensor.
    std::vector<float> inplace = x;
    rmsnorm(inplace, w, eps, inplace);
    EXPECT_EQ(inplace, out);
    auto wm = test::random_matrix(DType::BF16, 1, n, rng);
    wm.view.shape = {n};
    std::vector<float> wf(n);
    for (int64_t i = 0; i < n; ++i) wf[i] = static_cast<float>(wm.values[i]);
    std::vector<float> a(n), b(n);
    rmsnorm(x, wm.view, eps, a);
    rmsnorm(x, wf, eps, b);
    EXPECT_EQ(a, b);
  }
  std::vector<float> x(4), w(3), out(4);
  EXPECT_THROW(rmsnorm(x, w, 1e-5f, out), Error);
}

TEST(Softmax, MatchesDoubleFormula) {
  for (int64_t n : {1, 2, 8, 1000}) {
    std::mt19937_64 rng(test::fresh_seed());
    auto x = test::random_vector(n, rng, 10.0f);
    x[0] = 200.0f;  // no overflow thanks to max subtraction
    const auto orig = x;
    softmax(x);
    double mx = -INFINITY, sum = 0;
    for (float v : orig) mx = std::max(mx, double(v));
    for (float v : orig) sum += std::exp(v - mx);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double ref = std::exp(orig[i] - mx) / sum;
      ASSERT_NEAR(x[i], ref, 8 * kU * ref + 1e-38) << i;
      total += x[i];
    }
    EXPECT_NEAR(total, 1.0, 1e-5);
  }
}

TEST(Activations, SiluSwigluAxpy) {
  std::mt19937_64 rng(test::fresh_seed());
  auto g = test::random_vector(100, rng, 4.0f);
  const auto up = test::random_vector(100, rng);
  auto s = g;
  silu(s);
  auto sw = g;
  swiglu(sw, up);
  for (size_t i = 0; i < g.size(); ++i) {
    const double ref = double(g[i]) / (1.0 + std::exp(-double(g[i])));
    ASSERT_NEAR(s[i], ref, 4 * kU * std::abs(ref) + 1e-30);
    ASSERT_NEAR(sw[i], ref * up[i], 6 * kU * std::abs(ref * up[i]) + 1e-30);
  }
  std::vector<float> y(100, 1.0f);
  axpy(0.5f, up, y);
  for (size_t i = 0; i < y.size(); ++i) ASSERT_FLOAT_EQ(y[i], 1.0f + 0.5f * up[i]);
  EXPECT_THROW(swiglu(sw, std::vector<float>(3)), Error);
}

TEST(Rope, MatchesDoubleRotateHalf) {
  for (int64_t hd : {2, 8, 64, 128}) {
    const float theta = hd == 64 ? 10000.0f : 1e6f;
    RopeTable table(hd, theta, 100);
    for (int64_t pos : {0, 1, 5, 99, 100, 1000, 4000}) {  // 100+: computed on the fly
      std::mt19937_64 rng(test::fresh_seed());
      auto x = test::random_vector(hd, rng);
      const auto orig = x;
      table.apply(x, pos);
      const int64_t half = hd / 2;
      for (int64_t i = 0; i < half; ++i) {
        const double inv = std::pow(double(theta), -2.0 * i / hd);
        const double ang = pos * inv;
        const double a = orig[i], b = orig[i + half];
        const double r0 = a * std::cos(ang) - b * std::sin(ang);
        const double r1 = b * std::cos(ang) + a * std::sin(ang);
        // transformers rounds inv_freq and the angle to f32: the angle is off by ~ang * 2u.
        const double tol = (std::abs(a) + std::abs(b)) * (ang * 4 * kU + 8 * kU);
        ASSERT_NEAR(x[i], r0, tol) << "hd=" << hd << " pos=" << pos << " i=" << i;
        ASSERT_NEAR(x[i + half], r1, tol) << "hd=" << hd << " pos=" << pos << " i=" << i;
      }
    }
  }
  // Cached and uncached positions give the same numbers; apply_heads rotates each head.
  RopeTable a(16, 1e6f, 0), b(16, 1e6f, 50);
  std::mt19937_64 rng(test::fresh_seed());
  auto x = test::random_vector(48, rng);
  auto y = x;
  a.apply_heads(x, 37);
  for (int h = 0; h < 3; ++h) b.apply(std::span<float>(y).subspan(h * 16, 16), 37);
  EXPECT_EQ(x, y);
  EXPECT_THROW(RopeTable(7, 1e4f), Error);
  EXPECT_THROW(a.apply(std::span<float>(x).first(8), 0), Error);
}

TEST(Attention, MatchesDoubleFormula) {
  for (ops::Isa isa : ops::available_isas()) {
    test::IsaGuard g(isa);
    for (int64_t hd : {4, 64, 100}) {
      for (int64_t n_keys : {1, 2, 17, 300}) {
        const uint64_t seed = test::fresh_seed();
        SCOPED_TRACE("hd=" + std::to_string(hd) + " keys=" + std::to_string(n_keys) +
                     " seed=" + std::to_string(seed));
        std::mt19937_64 rng(seed);
        const int64_t stride = hd * 3 + 1;  // several heads per cache row
        const auto q = test::random_vector(hd, rng);
        const auto k = test::random_vector(n_keys * stride, rng);
        const auto v = test::random_vector(n_keys * stride, rng);
        std::vector<float> scores(n_keys + 5), out(hd);
        attention_head(q, k.data(), v.data(), n_keys, stride, scores, out);
        std::vector<double> s(n_keys);
        double mx = -INFINITY, sum = 0;
        for (int64_t t = 0; t < n_keys; ++t) {
          for (int64_t i = 0; i < hd; ++i) s[t] += double(q[i]) * k[t * stride + i];
          s[t] /= std::sqrt(double(hd));
          mx = std::max(mx, s[t]);
        }
        for (double& z : s) sum += (z = std::exp(z - mx));
        for (int64_t i = 0; i < hd; ++i) {
          double ref = 0, mag = 0;
          for (int64_t t = 0; t < n_keys; ++t) {
            ref += s[t] / sum * v[t * stride + i];
            mag += s[t] / sum * std::abs(v[t * stride + i]);
          }
          ASSERT_NEAR(out[i], ref, 1e-5 * mag + 1e-6) << i;
        }
      }
    }
  }
  std::vector<float> q(8), kv(8), sc(1), out(8);
  EXPECT_THROW(attention_head(q, kv.data(), kv.data(), 2, 8, sc, out), Error);
  EXPECT_THROW(attention_head(q, kv.data(), kv.data(), 1, 4, sc, out), Error);
}

}  // namespace
}  // namespace epwa
