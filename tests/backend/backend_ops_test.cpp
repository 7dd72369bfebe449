// Every backend op against a plain double-precision reference, for every backend built and usable
// here (the CPU; the GPU where epwa was built with it and a device is present): the harness a new
// backend is checked with, op by op.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <deque>
#include <random>
#include <vector>

#include "backend_fixture.hpp"

namespace {

using namespace backend_test;

// Each test gets a backend of its own (BackendFixture).
class BackendOps : public BackendFixture {};

TEST_P(BackendOps, LinearOfSeveralMatrices) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(1);
  Mat a(7, 16, rng), b(3, 16, rng);
  for (int64_t n : {1, 5}) {
    const auto x = randn(n * 16, rng);
    const TensorView* ws[] = {&a.t, &b.t};
    float* ys[] = {room(*s, 1, n * 7), room(*s, 2, n * 3)};
    be.linear(ws, put(*s, 0, x), n, 16, ys, *s);
    const auto ya = get(*s, ys[0], n * 7), yb = get(*s, ys[1], n * 3);
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
    const float* dx = put(*s, 0, x);
    float* dout = room(*s, 3, n * d);
    be.expert_ffn({L.w1, L.w2, L.w3}, w, {put(*s, 1, topk), put(*s, 2, weights), k}, dx, n, d, dout,
                  *s);
    auto out = get(*s, dout, n * d);
    std::vector<double> want(n * d, 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j) {
        const int64_t e = topk[i * k + j];
        const auto y =
            ffn_ref(mats[3 * e], mats[3 * e + 2], mats[3 * e + 1], x.data() + i * d, d, w);
        for (int64_t t = 0; t < d; ++t) want[i * d + t] += weights[i * k + j] * y[t];
      }
    expect_close(out, want, 1e-4);
    be.ffn(mats[0].t, mats[1].t, mats[2].t, w, dx, n, d, dout, *s);
    out = get(*s, dout, n * d);
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
  float* dout = room(*s, 1, n * d);
  be.rmsnorm(put(*s, 0, x), n, d, w.t, 1e-5f, dout, *s);
  const auto out = get(*s, dout, n * d);
  std::vector<double> want;
  for (int64_t i = 0; i < n; ++i) {
    double ms = 0;
    for (int64_t c = 0; c < d; ++c) ms += double{x[i * d + c]} * x[i * d + c];
    const double r = 1 / std::sqrt(ms / d + 1e-5);
    for (int64_t c = 0; c < d; ++c) want.push_back(x[i * d + c] * r * w.v[c]);
  }
  expect_close(out, want, 1e-5);
  // Two heads of 8 per row, rows 16 apart, positions 5, 6, 7: rotate-half pairs (i, i + 4).
  float* dq = put(*s, 2, x);
  be.rope(dq, n, 2, d, 5, *s);
  const auto q = get(*s, dq, n * d);
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

// The KV cache of one layer of one sequence on a backend: the host rows (a backend that keeps the
// cache itself gets none), and the reference rows the test keeps.
struct TestCache {
  std::vector<float> k, v, ref_k, ref_v;
  int64_t kvd, capacity;
  TestCache(const Backend& be, int64_t kvd, int64_t capacity) : kvd(kvd), capacity(capacity) {
    ref_k.resize(capacity * kvd), ref_v.resize(capacity * kvd);
    if (!be.keeps_kv_cache()) k.resize(capacity * kvd), v.resize(capacity * kvd);
  }
  void grow(int64_t cap) {  // the Context's reserve: rows kept
    capacity = cap;
    ref_k.resize(cap * kvd), ref_v.resize(cap * kvd);
    if (!k.empty()) k.resize(cap * kvd), v.resize(cap * kvd);
  }
  epwa::KvLayer layer() {
    return {k.empty() ? nullptr : k.data(), v.empty() ? nullptr : v.data(), capacity, 1, 3};
  }
};

// One attention call of n new rows at p0 on `c`; the worst difference from the reference.
template <typename Fixture>
double attend(const Fixture& f, epwa::BackendScratch& s, TestCache& c, int64_t p0, int64_t n,
              std::mt19937& rng) {
  const int64_t nh = 4, nkv = 2, hd = 8, kvd = nkv * hd;
  const auto q = randn(n * nh * hd, rng), k = randn(n * kvd, rng), v = randn(n * kvd, rng);
  std::copy(k.begin(), k.end(), c.ref_k.begin() + p0 * kvd);
  std::copy(v.begin(), v.end(), c.ref_v.begin() + p0 * kvd);
  float* att = f.room(s, 3, n * nh * hd);
  f.backend().attention(f.put(s, 0, q), f.put(s, 1, k), f.put(s, 2, v), n, p0, nh, nkv, hd,
                        c.layer(), att, s);
  const auto got = f.get(s, att, n * nh * hd);
  const auto want = attention_ref(q, c.ref_k, c.ref_v, n, p0, nh, nkv, hd);
  double worst = 0;
  for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]));
  if (!c.k.empty()) {  // host rows: appended
    for (int64_t i = 0; i < n * kvd; ++i) EXPECT_EQ(c.k[p0 * kvd + i], k[i]);
  }
  return worst;
}

// A decode step of several sequences at once (rope_batch, attention_batch; one launch each on the
// GPU) equals the same step one sequence at a time, to the bit: three sequences of different
// lengths, their rows not in sequence order, two steps (the second reads the first's rows).
TEST_P(BackendOps, ABatchOfSequencesEqualsOneAtATime) {
  const Backend& be = backend();
  std::mt19937 rng(12);
  const int64_t nh = 4, nkv = 2, hd = 8, qd = nh * hd, kvd = nkv * hd, cap = 16;
  const int64_t lengths[] = {3, 1, 5}, rows[] = {2, 0, 1};  // each sequence's row in the step
  auto batched = be.make_scratch(config()), single = be.make_scratch(config());
  std::deque<TestCache> caches;  // [scratch][sequence]
  for (int i = 0; i < 6; ++i) caches.emplace_back(be, kvd, cap);
  const auto layer = [&](int scratch, int32_t seq) {
    epwa::KvLayer l = caches[scratch * 3 + seq].layer();
    l.sequence = seq;
    return l;
  };
  for (int32_t j = 0; j < 3; ++j) {  // the prompts, the same on both scratches
    const int64_t n = lengths[j];
    const auto q = randn(n * qd, rng), k = randn(n * kvd, rng), v = randn(n * kvd, rng);
    for (int sc = 0; sc < 2; ++sc) {
      epwa::BackendScratch& s = sc == 0 ? *batched : *single;
      be.attention(put(s, 0, q), put(s, 1, k), put(s, 2, v), n, 0, nh, nkv, hd, layer(sc, j),
                   room(s, 3, n * qd), s);
    }
  }
  for (int64_t step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    const auto q = randn(3 * qd, rng), k = randn(3 * kvd, rng), v = randn(3 * kvd, rng);
    std::vector<std::vector<float>> out;
    for (int sc = 0; sc < 2; ++sc) {
      epwa::BackendScratch& s = sc == 0 ? *batched : *single;
      float *dq = put(s, 0, q), *dk = put(s, 1, k), *dv = put(s, 2, v), *att = room(s, 3, 3 * qd);
      std::vector<epwa::SeqRows> seqs;
      for (int32_t j = 0; j < 3; ++j) seqs.push_back({rows[j], 1, lengths[j] + step, layer(sc, j)});
      if (sc == 0) {
        be.rope_batch(dq, nh, qd, seqs, s);
        be.rope_batch(dk, nkv, kvd, seqs, s);
        be.attention_batch(dq, dk, dv, nh, nkv, hd, seqs, att, s);
      } else {
        for (const epwa::SeqRows& r : seqs) {
          be.rope(dq + r.begin * qd, 1, nh, qd, r.p0, s);
          be.rope(dk + r.begin * kvd, 1, nkv, kvd, r.p0, s);
          be.attention(dq + r.begin * qd, dk + r.begin * kvd, dv + r.begin * kvd, 1, r.p0, nh, nkv,
                       hd, r.kv, att + r.begin * qd, s);
        }
      }
      auto a = get(s, att, 3 * qd), rq = get(s, static_cast<const float*>(dq), 3 * qd);
      a.insert(a.end(), rq.begin(), rq.end());
      out.push_back(std::move(a));
    }
    for (size_t i = 0; i < out[0].size(); ++i) ASSERT_EQ(out[0][i], out[1][i]) << i;
  }
}

TEST_P(BackendOps, AttentionAppendsAndAttendsCausally) {
  auto s = backend().make_scratch(config());
  std::mt19937 rng(4);
  TestCache c(backend(), 16, 8);
  EXPECT_LT(attend(*this, *s, c, 0, 2, rng), 1e-5);
  EXPECT_LT(attend(*this, *s, c, 2, 3, rng), 1e-5);
}

// Prompt-sized calls (64 rows and more: the GPU's GEMM path), the second after a prefix in the
// cache, and a decode row after them.
TEST_P(BackendOps, PromptSizedAttentionAfterAPrefix) {
  auto s = backend().make_scratch(config());
  std::mt19937 rng(9);
  TestCache c(backend(), 16, 160);
  EXPECT_LT(attend(*this, *s, c, 0, 70, rng), 1e-5);
  EXPECT_LT(attend(*this, *s, c, 70, 80, rng), 1e-5);
  EXPECT_LT(attend(*this, *s, c, 150, 1, rng), 1e-5);
}

// The GPU reads the stored values exactly and keeps activations in f32, except in its f16 prompt
// products (weights and activations each rounded to f16, 2^-11 of each value, sums in f32: within
// 2^-10 + 2^-22 of sum |w x|) and in its products of Q8_0 and Q4_0 weights (`q8`: activations
// rounded to 8 bits, as the CPU rounds them). The CPU quantizes activations to 8 bits
// for the quantized types (and rounds them to f16/bf16 for those): its error is that of the
// activations, about 1% of sum |w x|.
double type_tolerance(const Backend& be, epwa::DType t, bool half_gemm, bool q8) {
  if (be.name() != "cpu") return q8 ? 2e-2 : half_gemm ? 1.1e-3 : 2e-6;
  return t == epwa::DType::F32 ? 2e-6 : 2e-2;
}

const epwa::DType kTypes[] = {epwa::DType::F32,  epwa::DType::F16,  epwa::DType::BF16,
                              epwa::DType::Q8_0, epwa::DType::Q4_0, epwa::DType::Q4_1,
                              epwa::DType::Q5_0, epwa::DType::Q5_1, epwa::DType::Q4_K,
                              epwa::DType::Q5_K, epwa::DType::Q6_K, epwa::DType::MXFP4};

TEST_P(BackendOps, LinearOfEveryStorageType) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(5);
  const int64_t rows = 9, cols = 512;  // two K-quant super-blocks per row
  std::deque<StoredMat> keep;
  for (epwa::DType type : kTypes)
    for (int64_t n : {1, 11, 70}) {  // 70: a prompt's product (cuBLAS on the GPU)
      SCOPED_TRACE(std::string(epwa::dtype_name(type)) + ", n = " + std::to_string(n));
      const StoredMat& m = keep.emplace_back(type, rows, cols, rng);
      const auto x = randn(n * cols, rng);
      const TensorView* ws[] = {&m.t};
      float* ys[] = {room(*s, 1, n * rows)};
      be.linear(ws, put(*s, 0, x), n, cols, ys, *s);
      const auto y = get(*s, ys[0], n * rows);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t r = 0; r < rows; ++r) {
          double acc = 0, mag = 0;
          for (int64_t c = 0; c < cols; ++c) {
            acc += m.at(r, c) * x[i * cols + c];
            mag += std::fabs(m.at(r, c) * x[i * cols + c]);
          }
          EXPECT_NEAR(y[i * rows + r], acc,
                      type_tolerance(be, type, n >= 64 && half_gemm(type), q8_products(type)) * mag)
              << i << "," << r;
        }
    }
}

// y = W x through `be` with its own scratch (n rows of x).
std::vector<float> linear_on(const Backend& be, const TensorView& w, const std::vector<float>& x,
                             int64_t n) {
  auto s = be.make_scratch(config());
  const size_t xb = x.size() * sizeof(float), yb = static_cast<size_t>(n * w.rows()) * 4;
  void* dx = be.buffer(*s, 0, xb);
  be.upload(dx, x.data(), xb, *s);
  float* ys[] = {static_cast<float*>(be.buffer(*s, 1, yb))};
  const TensorView* ws[] = {&w};
  be.linear(ws, static_cast<const float*>(dx), n, w.cols(), ys, *s);
  std::vector<float> y(static_cast<size_t>(n * w.rows()));
  be.download(y.data(), ys[0], yb, *s);
  return y;
}

// The GPU's 8-bit products round activations exactly as the CPU does, so the two differ only in
// the order of their f32 sums (a few ulps of sum |w x|), not by the rounding (about 1 %): one token
// by rows (4096+ rows, a part-filled last warp), by chunks (a short matrix; 11 tokens), and on the
// int8 tensor cores from 16 tokens (tiles of 64 rows and 16 or 64 tokens, part-filled; six groups
// of 256 values, so each of the two stages is loaded three times).
TEST_P(BackendOps, EightBitProductsRoundAsTheCpu) {
  if (!q8_products(epwa::DType::Q8_0)) GTEST_SKIP() << "the GPU's 8-bit products only";
  std::mt19937 rng(9);
  std::deque<StoredMat> mats;  // alive until the end: the GPU keys its weight copies by address
  struct Case {
    int64_t rows, n, cols;
  };
  for (epwa::DType type : {epwa::DType::Q8_0, epwa::DType::Q4_0})
    for (const Case& c : {Case{4102, 1, 512}, Case{9, 1, 512}, Case{9, 11, 512}, Case{9, 16, 512},
                          Case{70, 20, 512}, Case{9, 70, 512}, Case{130, 200, 1536}}) {
      SCOPED_TRACE(std::string(epwa::dtype_name(type)) + ", " + std::to_string(c.rows) +
                   " rows, n = " + std::to_string(c.n) + ", " + std::to_string(c.cols) + " cols");
      const StoredMat& m = mats.emplace_back(type, c.rows, c.cols, rng);
      const auto x = randn(c.n * c.cols, rng);
      const auto gpu = linear_on(backend(), m.t, x, c.n);
      const auto cpu = linear_on(epwa::cpu_backend(), m.t, x, c.n);
      double worst = 0;
      for (int64_t i = 0; i < c.n; ++i)
        for (int64_t r = 0; r < c.rows; ++r) {
          double mag = 0;
          for (int64_t k = 0; k < c.cols; ++k) mag += std::fabs(m.at(r, k) * x[i * c.cols + k]);
          worst = std::max(worst, std::fabs(gpu[i * c.rows + r] - cpu[i * c.rows + r]) / mag);
        }
      EXPECT_LT(worst, 2e-6);
    }
}

TEST_P(BackendOps, ExpertsOfEveryStorageType) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(6);
  const int64_t d = 256, w = 512, ne = 3, k = 2;
  std::deque<std::vector<StoredMat>> keep;
  std::deque<std::vector<TensorView>> views;
  // One token and 4 tokens decode-style (the GPU reads one token's experts by rows, a few tokens'
  // by tiles of up to 8 slots of one expert); 50 and 200 tokens (100 and 400 slots of 3 experts)
  // as a prompt (tiles of up to 64 slots: 3 an expert at 200 tokens, the last part-filled). On the
  // GPU the tiles of Q8_0 and Q4_0 run on the int8 tensor cores, a prompt's other types through
  // cuBLAS per expert.
  for (epwa::DType type : kTypes)
    for (int64_t n : {1, 4, 50, 200}) {
      SCOPED_TRACE(std::string(epwa::dtype_name(type)) + ", n = " + std::to_string(n));
      auto& g = keep.emplace_back();
      auto& dn = keep.emplace_back();
      auto& u = keep.emplace_back();
      // The views stay alive too: a backend keys its expert tables by their address.
      auto& G = views.emplace_back();
      auto& D = views.emplace_back();
      auto& U = views.emplace_back();
      for (int64_t e = 0; e < ne; ++e) {
        g.emplace_back(type, w, d, rng), dn.emplace_back(type, d, w, rng),
            u.emplace_back(type, w, d, rng);
      }
      for (int64_t e = 0; e < ne; ++e)
        G.push_back(g[e].t), D.push_back(dn[e].t), U.push_back(u[e].t);
      const auto x = randn(n * d, rng);
      const TwoExperts route(n, ne);
      float* dout = room(*s, 3, n * d);
      be.expert_ffn({G, D, U}, w, {put(*s, 1, route.topk), put(*s, 2, route.weights), k},
                    put(*s, 0, x), n, d, dout, *s);
      const auto out = get(*s, dout, n * d);
      std::vector<double> want, mag;
      const auto at = [](const std::vector<StoredMat>& m) {
        return [&m](int64_t e, int64_t r, int64_t c) { return m[e].at(r, c); };
      };
      experts_ref(
          x, n, d, w, route, at(g), at(dn), at(u),
          [](int64_t, int64_t, double a, double b) { return silu(a) * b; },
          [](int64_t, int64_t) { return 0.0; }, want, mag);
      expect_experts_close(out, want, mag, type, n, k, ne);
    }
}

// The cache through a Context's life: growth (rows kept), a rewind (rows rewritten from an earlier
// position), and a fork (copy_scratch: the copy continues from the same rows, the original is
// unchanged).
TEST_P(BackendOps, AttentionFollowsTheCacheThroughGrowthRewindAndFork) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(7);
  TestCache c(be, 16, 4);
  EXPECT_LT(attend(*this, *s, c, 0, 2, rng), 1e-5);
  EXPECT_LT(attend(*this, *s, c, 2, 2, rng), 1e-5);
  c.grow(16);
  EXPECT_LT(attend(*this, *s, c, 4, 5, rng), 1e-5);
  EXPECT_LT(attend(*this, *s, c, 3, 1, rng), 1e-5);  // a rewind to position 3
  EXPECT_LT(attend(*this, *s, c, 4, 1, rng), 1e-5);
  auto fork = be.copy_scratch(*s, config());
  TestCache f = c;
  EXPECT_LT(attend(*this, *fork, f, 5, 2, rng), 1e-5);
  EXPECT_LT(attend(*this, *s, c, 5, 1, rng), 1e-5);  // the original did not see the fork's rows
  EXPECT_LT(attend(*this, *fork, f, 7, 1, rng), 1e-5);
}

// The element-wise ops between the blocks: embedding rows, residual add, biases, clamping, the
// shared expert's gate.
TEST_P(BackendOps, EmbedAddBiasClampGate) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  std::mt19937 rng(8);
  const int64_t n = 3, d = 64;
  std::deque<StoredMat> keep;
  for (epwa::DType type : {epwa::DType::F32, epwa::DType::F16, epwa::DType::Q8_0}) {
    SCOPED_TRACE(std::string(epwa::dtype_name(type)));
    const StoredMat& table = keep.emplace_back(type, 10, d, rng);
    const std::vector<int32_t> tokens = {7, 0, 7};
    float* x = room(*s, 0, n * d);
    be.embed(table.t, tokens, x, *s);
    auto got = get(*s, x, n * d);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) EXPECT_EQ(got[i * d + j], table.at(tokens[i], j));
    const auto y = randn(n * d, rng);
    be.add(x, put(*s, 1, y), n * d, *s);
    const StoredMat& bias = keep.emplace_back(type, 1, d, rng);
    be.add_bias(bias.t, x, n, *s);
    be.clamp(x, n * d, 1.5f, *s);
    got = get(*s, x, n * d);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) {
        const double want =
            std::clamp(table.at(tokens[i], j) + y[i * d + j] + bias.at(0, j), -1.5, 1.5);
        EXPECT_NEAR(got[i * d + j], want, 1e-6);
      }
    // A gate stays as stored (a float type: routers and gates are never quantized).
    const StoredMat& gate =
        keep.emplace_back(type == epwa::DType::Q8_0 ? epwa::DType::BF16 : type, 1, d, rng);
    const auto xn = randn(n * d, rng), sh = randn(n * d, rng), o = randn(n * d, rng);
    float* dout = put(*s, 2, o);
    be.add_gated(gate.t, put(*s, 3, xn), put(*s, 4, sh), n, d, dout, *s);
    got = get(*s, dout, n * d);
    for (int64_t i = 0; i < n; ++i) {
      double z = 0, mag = 0;
      for (int64_t j = 0; j < d; ++j)
        z += gate.at(0, j) * xn[i * d + j], mag += std::fabs(gate.at(0, j) * xn[i * d + j]);
      const double g = 1 / (1 + std::exp(-z));
      for (int64_t j = 0; j < d; ++j)
        EXPECT_NEAR(got[i * d + j], o[i * d + j] + g * sh[i * d + j], 1e-5 * (1 + mag));
    }
  }
}

// Routing: the k best experts (ties to the lower index, best first) and their softmax weights,
// renormalised over the k or not.
TEST_P(BackendOps, RouteTopKWithTies) {
  const Backend& be = backend();
  auto s = be.make_scratch(config());
  const int64_t ne = 6, k = 3, n = 3;
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 0.1f, 1.0f,  // a tie at the top
                                     -3.f, -2.f, -1.f,  -1.f, -1.f, -5.f,  // a tie across the cut
                                     9.f,  0.f,  0.f,   0.f,  0.f,  0.f};
  const std::vector<int32_t> want_top = {1, 3, 5, 2, 3, 4, 0, 1, 2};
  for (bool renorm : {false, true}) {
    int32_t* topk = room<int32_t>(*s, 1, n * k);
    float* topw = room(*s, 2, n * k);
    be.route(put(*s, 0, logits), n, ne, k, renorm, topk, topw, *s);
    EXPECT_EQ(get(*s, topk, n * k), want_top);
    const auto w = get(*s, topw, n * k);
    for (int64_t i = 0; i < n; ++i) {
      double z = 0, zk = 0;
      for (int64_t e = 0; e < ne; ++e) z += std::exp(double{logits[i * ne + e]});
      for (int64_t j = 0; j < k; ++j) zk += std::exp(double{logits[i * ne + want_top[i * k + j]]});
      for (int64_t j = 0; j < k; ++j) {
        const double p = std::exp(double{logits[i * ne + want_top[i * k + j]]});
        EXPECT_NEAR(w[i * k + j], p / (renorm ? zk : z), 1e-6) << i << "," << j;
      }
    }
  }
}

// download_all: small parts (staged on a device) and one over a megabyte (copied straight), after
// an op that writes one of them, every byte where it belongs; an empty part is skipped.
TEST_P(BackendOps, DownloadAllCopiesEveryPartAfterTheOpsBeforeIt) {
  const Backend& be = backend();
  std::mt19937 rng(12);
  const auto a = randn(5, rng), b = randn(300'000, rng), c = randn(33, rng);
  const std::vector<int32_t> ids{7, -1, 42};
  auto s = be.make_scratch(config());
  float* da = put(*s, 0, a);
  float* db = put(*s, 1, b);
  float* dc = put(*s, 2, c);
  int32_t* di = put(*s, 3, ids);
  be.add(dc, dc, std::ssize(c), *s);  // queued: the download must see its result
  std::vector<float> ga(a.size()), gb(b.size()), gc(c.size());
  std::vector<int32_t> gi(ids.size());
  const epwa::Download parts[] = {{ga.data(), da, ga.size() * 4},
                                  {gb.data(), db, gb.size() * 4},
                                  {},
                                  {gi.data(), di, gi.size() * 4},
                                  {gc.data(), dc, gc.size() * 4}};
  be.download_all(parts, *s);
  EXPECT_EQ(ga, a);
  EXPECT_EQ(gb, b);
  EXPECT_EQ(gi, ids);
  for (size_t i = 0; i < c.size(); ++i) EXPECT_EQ(gc[i], 2 * c[i]) << i;
}

INSTANTIATE_TEST_SUITE_P(Backends, BackendOps, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

}  // namespace
