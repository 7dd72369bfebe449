// GPT-OSS's ops of the backend seam (attention with sinks over the whole cache and over a sliding
// window, YaRN rope, routed experts with biases and the clamped SwiGLU) on every backend built and
// usable here, against double references.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <random>
#include <vector>

#include "backend_fixture.hpp"
#include "epwa/ops.hpp"

namespace {

using namespace backend_test;

class GptOssOps : public BackendFixture {};

// Attention in double of n queries at positions p0... over the positions each sees (the last
// `window`, or all), with the head's sink logit in the softmax's denominator (GPT-OSS's
// eager_attention_forward). k, v: every position's rows so far.
std::vector<double> sink_attention_ref(const std::vector<float>& q, const std::vector<float>& k,
                                       const std::vector<float>& v, int64_t n, int64_t p0,
                                       int64_t nh, int64_t nkv, int64_t hd, int64_t window,
                                       const StoredMat& sinks) {
  const int64_t kvd = nkv * hd;
  std::vector<double> want;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t h = 0; h < nh; ++h) {
      const int64_t g = h / (nh / nkv), p = p0 + i;
      const int64_t first = window > 0 ? std::max<int64_t>(0, p - window + 1) : 0;
      const double sink = sinks.at(0, h);
      std::vector<double> sc;
      double mx = sink;
      for (int64_t t = first; t <= p; ++t) {
        double dot = 0;
        for (int64_t j = 0; j < hd; ++j)
          dot += double{q[(i * nh + h) * hd + j]} * k[t * kvd + g * hd + j];
        sc.push_back(dot / std::sqrt(double(hd)));
        mx = std::max(mx, sc.back());
      }
      double z = std::exp(sink - mx);
      for (double& e : sc) z += (e = std::exp(e - mx));
      for (int64_t j = 0; j < hd; ++j) {
        double acc = 0;
        for (int64_t t = first; t <= p; ++t) acc += sc[t - first] / z * v[t * kvd + g * hd + j];
        want.push_back(acc);
      }
    }
  return want;
}

// A prompt longer than the window, batches that straddle it, single decoding steps past it and a
// growth of the cache (its rows kept), with the sinks stored as f32 and as bf16 (the GPU converts
// those on the device); over the whole cache (window 0) and over a window of 4 (a ring of 4 rows).
TEST_P(GptOssOps, SinkAttentionOverTheCacheAndAWindow) {
  const Backend& be = backend();
  if (!be.supports(epwa::BackendOp::SinkAttention, epwa::DType::F32))
    GTEST_SKIP() << be.name() << " has no attention with sinks";
  const int64_t nh = 4, nkv = 2, hd = 8, kvd = nkv * hd, qd = nh * hd;
  const int64_t calls[][2] = {{0, 6}, {6, 3}, {9, 1}, {10, 1}, {11, 5}, {16, 1}};  // {p0, n}
  std::mt19937 rng(21);
  std::deque<StoredMat> keep;
  for (epwa::DType type : {epwa::DType::F32, epwa::DType::BF16})
    for (int64_t window : {0, 4}) {
      SCOPED_TRACE(std::string(epwa::dtype_name(type)) + ", window " + std::to_string(window));
      const StoredMat& sinks = keep.emplace_back(type, 1, nh, rng);
      auto s = be.make_scratch(config());
      std::vector<float> all_k, all_v, host_k, host_v;  // host_*: the CPU's rows (the ring's)
      int64_t capacity = 12;
      for (const auto& [p0, n] : calls) {
        if (p0 + n > capacity) capacity = 24;  // the Context's reserve: rows kept
        const int64_t rows = window > 0 ? std::min(capacity, window) : capacity;
        if (!be.keeps_kv_cache()) host_k.resize(rows * kvd), host_v.resize(rows * kvd);
        const auto q = randn(n * qd, rng), k = randn(n * kvd, rng), v = randn(n * kvd, rng);
        all_k.insert(all_k.end(), k.begin(), k.end());
        all_v.insert(all_v.end(), v.begin(), v.end());
        const epwa::KvLayer kv{host_k.empty() ? nullptr : host_k.data(),
                               host_v.empty() ? nullptr : host_v.data(),
                               capacity,
                               1,
                               3,
                               window};
        float* att = room(*s, 3, n * qd);
        be.attention_sinks(put(*s, 0, q), put(*s, 1, k), put(*s, 2, v), n, p0, nh, nkv, hd, kv,
                           sinks.t, att, *s);
        const auto got = get(*s, att, n * qd);
        const auto want = sink_attention_ref(q, all_k, all_v, n, p0, nh, nkv, hd, window, sinks);
        for (size_t i = 0; i < want.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 1e-5) << "p0 " << p0 << ", value " << i;
      }
    }
}

// YaRN rotates by the table both backends share (the CPU's RopeTable with GPT-OSS's parameters;
// its values against transformers are the model tests' business): positions 3... and 4000...
TEST_P(GptOssOps, YarnRopeRotatesByItsTable) {
  const Backend& be = backend();
  if (!be.supports(epwa::BackendOp::YarnRope, epwa::DType::F32))
    GTEST_SKIP() << be.name() << " has no YaRN rope";
  epwa::ModelConfig c = config();
  c.rope_theta = 150000;
  c.yarn.factor = 32;
  c.yarn.original_max_position = 4096;
  c.yarn.truncate = false;
  const epwa::RopeTable table(c.head_dim, c.rope_theta, c.yarn);
  auto s = be.make_scratch(c);
  std::mt19937 rng(22);
  const int64_t n = 3, heads = 2, stride = heads * c.head_dim;
  for (int64_t p0 : {3, 4000}) {
    const auto x = randn(n * stride, rng);
    float* dx = put(*s, 0, x);
    be.rope(dx, n, heads, stride, p0, *s);
    const auto got = get(*s, static_cast<const float*>(dx), n * stride);
    std::vector<float> want = x;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h) table.apply(want.data() + i * stride + h * 8, p0 + i);
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << i;
    EXPECT_NE(want, x);
  }
}

// The routed experts with GPT-OSS's biases and clamped SwiGLU (limit 1.5: most gate and up values
// of these random rows are clamped), one token, a few (tiles) and a prompt (cuBLAS per expert on
// the GPU), on the types GPT-OSS files hold (f32, bf16, MXFP4 experts; Q8_0 from a quantized load).
TEST_P(GptOssOps, ExpertsWithBiasesAndTheClampedSwiglu) {
  const Backend& be = backend();
  if (!be.supports(epwa::BackendOp::BiasedExperts, epwa::DType::F32))
    GTEST_SKIP() << be.name() << " has no biased experts";
  auto s = be.make_scratch(config());
  std::mt19937 rng(23);
  const int64_t d = 256, w = 512, ne = 3, k = 2;
  const float limit = 1.5f;
  std::deque<std::vector<StoredMat>> keep;
  std::deque<std::vector<TensorView>> views;  // alive: a backend keys its expert tables by them
  for (epwa::DType type :
       {epwa::DType::F32, epwa::DType::BF16, epwa::DType::MXFP4, epwa::DType::Q8_0})
    for (int64_t n : {1, 4, 50}) {
      SCOPED_TRACE(std::string(epwa::dtype_name(type)) + ", n = " + std::to_string(n));
      auto& m = keep.emplace_back();  // gate, down, up, gate bias, down bias, up bias per expert
      for (int64_t e = 0; e < ne; ++e) {
        m.emplace_back(type, w, d, rng), m.emplace_back(type, d, w, rng),
            m.emplace_back(type, w, d, rng);
        m.emplace_back(epwa::DType::F32, 1, w, rng), m.emplace_back(epwa::DType::F32, 1, d, rng),
            m.emplace_back(epwa::DType::F32, 1, w, rng);
      }
      const auto mat = [&](int64_t e, int which) -> const StoredMat& { return m[6 * e + which]; };
      std::vector<TensorView>* side[6];
      for (auto& p : side) p = &views.emplace_back();
      for (int64_t e = 0; e < ne; ++e)
        for (int which = 0; which < 6; ++which) {
          TensorView t = mat(e, which).t;
          if (which >= 3) t.shape = {t.cols()};  // biases: one row
          side[which]->push_back(t);
        }
      const auto x = randn(n * d, rng);
      const TwoExperts route(n, ne);
      float* dout = room(*s, 3, n * d);
      be.expert_ffn({*side[0], *side[1], *side[2], *side[3], *side[4], *side[5], limit}, w,
                    {put(*s, 1, route.topk), put(*s, 2, route.weights), k}, put(*s, 0, x), n, d,
                    dout, *s);
      const auto out = get(*s, dout, n * d);
      std::vector<double> want, mag;
      const auto at = [&](int which) {
        return [&, which](int64_t e, int64_t r, int64_t c) { return mat(e, which).at(r, c); };
      };
      const auto act = [&](int64_t e, int64_t r, double a, double b) {
        a = std::min<double>(a + mat(e, 3).at(0, r), limit);
        b = std::clamp<double>(b + mat(e, 5).at(0, r), -limit, limit);
        return (b + 1) * a / (1 + std::exp(-1.702 * a));
      };
      experts_ref(
          x, n, d, w, route, at(0), at(1), at(2), act,
          [&](int64_t e, int64_t r) { return mat(e, 4).at(0, r); }, want, mag);
      expect_experts_close(out, want, mag, type, n, k, ne);
    }
}

INSTANTIATE_TEST_SUITE_P(Backends, GptOssOps, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

}  // namespace
