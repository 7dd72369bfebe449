// DeepSeek's multi-head latent attention ops of the backend seam (latent_attention, its batched
// form for one row of each of several sequences, the strided RMSNorm of the latents) on every
// backend built and usable here, against a double reference.
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

class LatentOps : public BackendFixture {};

// A small MLA layer: 3 heads of 6 nope + 4 rope query values, a 32-value latent, 5 values a head.
epwa::ModelConfig latent_config() {
  epwa::ModelConfig c = config();
  c.num_heads = 3;
  c.qk_nope_head_dim = 6;
  c.qk_rope_head_dim = 4;
  c.kv_lora_rank = 32;
  c.v_head_dim = 5;
  c.head_dim = c.qk_nope_head_dim + c.qk_rope_head_dim;
  return c;
}

epwa::LatentShape shape_of(const epwa::ModelConfig& c) {
  return {c.num_heads, c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank, c.v_head_dim, 0.3f};
}

// One sequence's rows so far (its kv rows as given: the latent, then the unrotated rope part).
struct History {
  std::vector<float> kv;
};

// Latent attention in double (transformers' DeepseekV2Attention with the absorption written
// out): for query row i at position p0 + i of a sequence whose kv rows are `h` (every position up
// to the query's), per head: scores scale * (q_nope W_uk . c_t + rope(q_pe) . rope(k_pe_t)),
// softmax, W_uv (sum_t p_t c_t). Rotations by the shared RopeTable (its values against
// transformers are the model tests' business).
std::vector<double> latent_ref(const std::vector<float>& q, int64_t n, int64_t p0, const History& h,
                               const epwa::LatentShape& sh, const StoredMat& kv_b,
                               const epwa::RopeTable& rope) {
  const int64_t row = sh.latent + sh.rope, qd = sh.nope + sh.rope;
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t hd = 0; hd < sh.heads; ++hd) {
      const float* qh = q.data() + (i * sh.heads + hd) * qd;
      const int64_t base = hd * (sh.nope + sh.v), keys = p0 + i + 1;
      std::vector<float> qpe(qh + sh.nope, qh + qd);
      rope.apply_pairs(qpe.data(), p0 + i);
      std::vector<double> qlat(sh.latent, 0), sc(keys);
      for (int64_t j = 0; j < sh.latent; ++j)
        for (int64_t t = 0; t < sh.nope; ++t) qlat[j] += double{qh[t]} * kv_b.at(base + t, j);
      double mx = -INFINITY;
      for (int64_t t = 0; t < keys; ++t) {
        const float* c = h.kv.data() + t * row;
        std::vector<float> kpe(c + sh.latent, c + row);
        rope.apply_pairs(kpe.data(), t);
        double dot = 0;
        for (int64_t j = 0; j < sh.latent; ++j) dot += qlat[j] * c[j];
        for (int64_t j = 0; j < sh.rope; ++j) dot += double{qpe[j]} * kpe[j];
        mx = std::max(mx, sc[t] = dot * sh.scale);
      }
      double z = 0;
      for (double& e : sc) z += (e = std::exp(e - mx));
      std::vector<double> olat(sh.latent, 0);
      for (int64_t t = 0; t < keys; ++t)
        for (int64_t j = 0; j < sh.latent; ++j) olat[j] += sc[t] / z * h.kv[t * row + j];
      for (int64_t v = 0; v < sh.v; ++v) {
        double acc = 0;
        for (int64_t j = 0; j < sh.latent; ++j) acc += kv_b.at(base + sh.nope + v, j) * olat[j];
        out.push_back(acc);
      }
    }
  return out;
}

// Three sequences: prompts of different lengths one by one (latent_attention; the second grows
// its cache past the first capacity), then two decode steps of all three at once
// (latent_attention_batch), on kv_b stored as F32, BF16 and Q8_0.
TEST_P(LatentOps, SequencesAloneAndOneRowEachInABatch) {
  const Backend& be = backend();
  if (!be.supports(epwa::BackendOp::LatentAttention, epwa::DType::F32))
    GTEST_SKIP() << be.name() << " has no latent attention";
  const epwa::ModelConfig c = latent_config();
  const epwa::LatentShape sh = shape_of(c);
  const int64_t row = sh.latent + sh.rope, qd = sh.heads * (sh.nope + sh.rope);
  const int64_t vd = sh.heads * sh.v;
  const epwa::RopeTable rope(c.qk_rope_head_dim, c.rope_theta, 64);
  std::mt19937 rng(5);
  std::deque<StoredMat> keep;
  for (epwa::DType type : {epwa::DType::F32, epwa::DType::BF16, epwa::DType::Q8_0}) {
    SCOPED_TRACE(epwa::dtype_name(type));
    const StoredMat& kv_b = keep.emplace_back(type, sh.heads * (sh.nope + sh.v), sh.latent, rng);
    // The CPU multiplies the value rows as stored, rounding the weighted latents to bf16 or 8
    // bits for those types (about 1 % of the largest output); f32 sums elsewhere.
    const double tol = be.name() == "cpu" && type != epwa::DType::F32 ? 2e-2 : 1e-5;
    auto check = [&](const std::vector<float>& got, const std::vector<double>& want) {
      double scale = 1;
      for (double v : want) scale = std::max(scale, std::fabs(v));
      ASSERT_EQ(got.size(), want.size());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], tol * scale) << i;
    };
    auto s = be.make_scratch(c);
    be.reserve(*s, 40);
    std::vector<History> seqs(3);
    std::vector<std::vector<float>> host(3);  // the CPU's caches (capacity 40)
    auto layer = [&](int32_t q) {
      if (!be.keeps_kv_cache() && host[q].empty()) host[q].resize(40 * row);
      return epwa::KvLayer{host[q].empty() ? nullptr : host[q].data(), nullptr, 40, q, 2};
    };
    const int64_t prompt[] = {5, 17, 1};
    for (int32_t q = 0; q < 3; ++q) {
      const int64_t n = prompt[q];
      const auto qv = randn(n * qd, rng), kv = randn(n * row, rng);
      seqs[q].kv.insert(seqs[q].kv.end(), kv.begin(), kv.end());
      float* att = room(*s, 2, n * vd);
      be.latent_attention(put(*s, 0, qv), put(*s, 1, kv), n, 0, sh, kv_b.t, layer(q), att, *s);
      check(get(*s, att, n * vd), latent_ref(qv, n, 0, seqs[q], sh, kv_b, rope));
    }
    for (int step = 0; step < 2; ++step) {
      const auto qv = randn(3 * qd, rng), kv = randn(3 * row, rng);
      std::vector<epwa::SeqRows> rows;
      // Sequences in the batch in another order than their ids: entry b is sequence 2 - b.
      for (int64_t b = 0; b < 3; ++b) {
        const auto q = static_cast<int32_t>(2 - b);
        const auto p0 = static_cast<int64_t>(seqs[q].kv.size()) / row;
        seqs[q].kv.insert(seqs[q].kv.end(), kv.begin() + b * row, kv.begin() + (b + 1) * row);
        rows.push_back({b, 1, p0, layer(q)});
      }
      float* att = room(*s, 2, 3 * vd);
      be.latent_attention_batch(put(*s, 0, qv), put(*s, 1, kv), sh, kv_b.t, rows, att, *s);
      const auto got = get(*s, att, 3 * vd);
      for (int64_t b = 0; b < 3; ++b) {
        const std::vector<float> qb(qv.begin() + b * qd, qv.begin() + (b + 1) * qd);
        const auto want = latent_ref(qb, 1, rows[b].p0, seqs[2 - b], sh, kv_b, rope);
        check({got.begin() + b * vd, got.begin() + (b + 1) * vd}, want);
      }
    }
  }
}

// The latents of kv rows (16 of 20 values, rows 20 apart) normalised in place, the rope parts left
// as they are; each row as rmsnorm() of that row alone.
TEST_P(LatentOps, StridedRmsnormTouchesOnlyTheLatents) {
  const Backend& be = backend();
  const int64_t n = 7, d = 16, stride = 20;
  std::mt19937 rng(8);
  const Mat w(1, d, rng, 1.0f);
  const auto x = randn(n * stride, rng);
  auto s = be.make_scratch(config());
  float* dx = put(*s, 0, x);
  be.rmsnorm_strided(dx, n, d, stride, w.t, 1e-6f, *s);
  const auto got = get(*s, dx, n * stride);
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<float> one(x.begin() + i * stride, x.begin() + i * stride + d);
    float* o = put(*s, 1, one);
    be.rmsnorm(o, 1, d, w.t, 1e-6f, o, *s);
    const auto want = get(*s, o, d);
    for (int64_t j = 0; j < stride; ++j)
      EXPECT_EQ(got[i * stride + j], j < d ? want[j] : x[i * stride + j]) << i << ", " << j;
  }
}

INSTANTIATE_TEST_SUITE_P(Backends, LatentOps, ::testing::ValuesIn(backends()),
                         [](const auto& info) { return info.param; });

}  // namespace
