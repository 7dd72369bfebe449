// The attention kernels of each ISA against dot_f32 and the scalar table, and attention_block
// against attention_head (the prompt/decode identity the engine relies on).
#include <cmath>

#include "epwa/error.hpp"
#include "ops/kernels.hpp"
#include "test_util.hpp"

namespace epwa {
namespace {
using test::kU;

// Head sizes around the kernels' 8/32/64-float steps, and key counts around the 8-key groups.
const int64_t kHeadDims[] = {1, 4, 8, 13, 32, 64, 100, 128, 136};
const int64_t kKeyCounts[] = {1, 2, 7, 8, 9, 16, 23, 67};

TEST(AttentionKernels, ScoresAreDotF32OfEachKey) {
  for (ops::Isa isa : ops::available_isas()) {
    const ops::Kernels& kern = ops::kernels_for(isa);
    for (int64_t hd : kHeadDims)
      for (int64_t n_keys : kKeyCounts) {
        const uint64_t seed = test::fresh_seed();
        SCOPED_TRACE(std::string(ops::isa_name(isa)) + " hd=" + std::to_string(hd) +
                     " keys=" + std::to_string(n_keys) + " seed=" + std::to_string(seed));
        std::mt19937_64 rng(seed);
        const int64_t stride = hd * 2 + 3;  // odd: rows at every alignment
        const auto q = test::random_vector(hd + 1, rng);
        const auto k = test::random_vector(n_keys * stride + 1, rng);
        const float scale = 0.37f;
        std::vector<float> s(n_keys + 1, -7.0f);
        // Offset by one float: unaligned q and keys.
        kern.attn_scores(k.data() + 1, stride, n_keys, q.data() + 1, hd, scale, s.data());
        for (int64_t t = 0; t < n_keys; ++t)
          ASSERT_EQ(s[t], kern.dot_f32(k.data() + 1 + t * stride, q.data() + 1, hd) * scale) << t;
        EXPECT_EQ(s[n_keys], -7.0f);  // nothing written past the last key
      }
  }
}

TEST(AttentionKernels, Avx2ScoresCloseToScalar) {
  if (ops::available_isas().size() < 2) GTEST_SKIP() << "no AVX2 on this CPU";
  const ops::Kernels& a = ops::kernels_for(ops::Isa::Avx2);
  const ops::Kernels& b = ops::scalar_kernels();
  for (int64_t hd : kHeadDims) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE("hd=" + std::to_string(hd) + " seed=" + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const int64_t n_keys = 37;
    const auto q = test::random_vector(hd, rng);
    const auto k = test::random_vector(n_keys * hd, rng);
    std::vector<float> sa(n_keys), sb(n_keys);
    a.attn_scores(k.data(), hd, n_keys, q.data(), hd, 1.0f, sa.data());
    b.attn_scores(k.data(), hd, n_keys, q.data(), hd, 1.0f, sb.data());
    for (int64_t t = 0; t < n_keys; ++t) {
      // Two orders of summation: each is within (terms in its longest chain + 2) u of the exact
      // sum of |k q|, and every chain here is at most hd / 8 + 3 terms long.
      double mag = 0;
      for (int64_t i = 0; i < hd; ++i) mag += std::abs(double(k[t * hd + i]) * q[i]);
      ASSERT_NEAR(sa[t], sb[t], 2 * (double(hd) / 8 + 5) * kU * mag) << t;
    }
  }
}

TEST(AttentionKernels, WeightedSumMatchesScalarExactly) {
  const ops::Kernels& ref = ops::scalar_kernels();
  for (ops::Isa isa : ops::available_isas()) {
    const ops::Kernels& kern = ops::kernels_for(isa);
    for (int64_t hd : kHeadDims)
      for (int64_t n_keys : kKeyCounts) {
        const uint64_t seed = test::fresh_seed();
        SCOPED_TRACE(std::string(ops::isa_name(isa)) + " hd=" + std::to_string(hd) +
                     " keys=" + std::to_string(n_keys) + " seed=" + std::to_string(seed));
        std::mt19937_64 rng(seed);
        const int64_t stride = hd + 5;
        const auto p = test::random_vector(n_keys, rng);
        const auto v = test::random_vector(n_keys * stride + 1, rng, 4.0f);
        // The same order of float operations on both sides (products rounded, added by key).
        std::vector<float> want(hd + 1, 9.0f), got(hd + 1, 9.0f);
        ref.attn_wsum(p.data(), v.data() + 1, stride, n_keys, hd, want.data(), false);
        kern.attn_wsum(p.data(), v.data() + 1, stride, n_keys, hd, got.data(), false);
        ASSERT_EQ(got, want);  // the 9.0f past the end included: nothing written there
        // Split over two calls, the second accumulating: the same bits as one call.
        const int64_t cut = n_keys / 3;
        std::vector<float> split(hd + 1, 9.0f);
        kern.attn_wsum(p.data(), v.data() + 1, stride, cut, hd, split.data(), false);
        kern.attn_wsum(p.data() + cut, v.data() + 1 + cut * stride, stride, n_keys - cut, hd,
                       split.data(), cut > 0);
        ASSERT_EQ(split, want);
        // And it is the weighted sum.
        for (int64_t i = 0; i < hd; ++i) {
          double r = 0, mag = 0;
          for (int64_t t = 0; t < n_keys; ++t) {
            r += double(p[t]) * v[1 + t * stride + i];
            mag += std::abs(double(p[t]) * v[1 + t * stride + i]);
          }
          ASSERT_NEAR(got[i], r, (n_keys + 1) * kU * mag) << i;
        }
      }
  }
}

// Causal prompt blocks: query j of a block attends to the first base + j keys.
TEST(AttentionBlock, EqualsAttentionHeadPerQuery) {
  for (ops::Isa isa : ops::available_isas()) {
    test::IsaGuard guard(isa);
    for (int64_t hd : {4, 64, 100, 128})
      for (int64_t base : {1, 15, 40}) {
        const uint64_t seed = test::fresh_seed();
        SCOPED_TRACE(std::string(ops::isa_name(isa)) + " hd=" + std::to_string(hd) +
                     " base=" + std::to_string(base) + " seed=" + std::to_string(seed));
        std::mt19937_64 rng(seed);
        const int64_t nq = 11, heads = 3, stride = hd * heads;
        const int64_t n_max = base + nq - 1;
        const auto k = test::random_vector(n_max * stride, rng);
        const auto v = test::random_vector(n_max * stride, rng);
        const auto q = test::random_vector(nq * hd, rng, 2.0f);
        std::vector<float> out(nq * hd, -1.0f), scores(nq * n_max);
        std::vector<AttentionQuery> qs;
        for (int64_t j = 0; j < nq; ++j)
          qs.push_back({q.data() + j * hd, out.data() + j * hd, base + j});
        // The middle head of each cache row.
        attention_block(qs, hd, k.data() + hd, v.data() + hd, stride, scores);
        std::vector<float> one(hd), sc(n_max);
        for (int64_t j = 0; j < nq; ++j) {
          attention_head({q.data() + j * hd, size_t(hd)}, k.data() + hd, v.data() + hd, base + j,
                         stride, sc, one);
          ASSERT_EQ(std::vector<float>(out.begin() + j * hd, out.begin() + (j + 1) * hd), one)
              << "query " << j;
        }
      }
  }
}

TEST(AttentionBlock, RejectsBadInput) {
  std::vector<float> q(8), kv(64), out(8), scores(8);
  std::vector<AttentionQuery> qs{{q.data(), out.data(), 4}, {q.data(), out.data(), 5}};
  EXPECT_THROW(attention_block(qs, 8, kv.data(), kv.data(), 8, scores), Error);  // 9 scores
  scores.resize(9);
  EXPECT_NO_THROW(attention_block(qs, 8, kv.data(), kv.data(), 8, scores));
  EXPECT_THROW(attention_block(qs, 8, kv.data(), kv.data(), 7, scores), Error);  // stride
  EXPECT_THROW(attention_block(qs, 0, kv.data(), kv.data(), 8, scores), Error);
  qs[1].n_keys = 0;
  EXPECT_THROW(attention_block(qs, 8, kv.data(), kv.data(), 8, scores), Error);
  qs[1] = {nullptr, out.data(), 1};
  EXPECT_THROW(attention_block(qs, 8, kv.data(), kv.data(), 8, scores), Error);
}

}  // namespace
}  // namespace epwa
