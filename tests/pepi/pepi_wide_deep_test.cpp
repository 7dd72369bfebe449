// PEPI oracle, second part: context features (p-2, hashed bigram), the wide-and-deep classifier
// (a hidden layer learns what a linear model cannot), version-1 files, and raw collected data.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "epwa/error.hpp"
#include "epwa/pepi.hpp"

namespace epwa {
namespace {

namespace fs = std::filesystem;
constexpr int32_t kV = 64;

uint64_t lcg(uint64_t& s) {
  return s = s * 6364136223846793005ull + 1442695040888963407ull;
}

OracleInfo info(PepiFeatureSpec spec, int32_t experts) {
  OracleInfo i;
  i.router_hash = std::string(64, 'c');
  i.router_layer = 3;
  i.num_experts = experts;
  i.vocab_size = kV;
  i.features = spec;
  return i;
}

// Expert = (which half of the vocabulary the distribution favours) XOR (parity of the current
// token): no linear function of the one-hot features separates it, a hidden layer does.
struct Xor {
  std::vector<TokenDistribution> dists;
  std::vector<std::vector<int32_t>> hist;
  std::vector<int32_t> experts;
};
Xor xor_world(int n, uint64_t seed) {
  Xor w;
  for (int i = 0; i < n; ++i) {
    const int32_t half = static_cast<int32_t>((lcg(seed) >> 33) % 2),
                  tok = static_cast<int32_t>((lcg(seed) >> 33) % kV);
    std::vector<float> logits(kV);
    for (int32_t v = 0; v < kV; ++v)
      logits[v] =
          static_cast<float>((lcg(seed) >> 40) % 1000) / 500.0f + (v / 32 == half ? 3.0f : 0.0f);
    w.dists.push_back(top_logprobs(logits, 6));
    w.hist.push_back({static_cast<int32_t>((lcg(seed) >> 33) % kV), tok});
    w.experts.push_back(half ^ (tok % 2));
  }
  return w;
}
PepiDataset featurize(const Xor& w, const PepiFeaturizer& f) {
  PepiDataset d;
  for (size_t i = 0; i < w.dists.size(); ++i) {
    f.add_row(w.dists[i], w.hist[i], d);
    d.expert.push_back(w.experts[i]);
    d.confidence.push_back(0.7f);
  }
  return d;
}

const PepiFeatureSpec kCtx{false, 6, true, false, false};

TEST(PepiContext, Ctx3AndBigramFeatures) {
  const PepiFeatureSpec s3{false, 4, true, true, true};
  PepiFeaturizer f(s3, kV), f2(kCtx, kV);
  EXPECT_EQ(f.dimension(), 2u * kV + 4 + 3 * kV + kPepiBigramBuckets);
  EXPECT_EQ(f.hidden_input_dimension(), 2u * kV + 4 + 3 * kV);
  EXPECT_EQ(f2.dimension(), 2u * kV + 4 + 2 * kV);  // the version-1 layout
  const TokenDistribution d{{3, 4}, {-0.5f, -1.5f}};
  const std::vector<int32_t> h = {10, 11, 12, 13};  // p-3 .. p
  PepiDataset a, b, c;
  f.add_row(d, h, a);
  // tokens p, p-1, p-2 one-hot; p-3 unused; one bigram bucket.
  const uint32_t ctx = 2 * kV + 4;
  auto has = [&](const PepiDataset& x, uint32_t i) {
    return std::find(x.index.begin(), x.index.end(), i) != x.index.end();
  };
  EXPECT_TRUE(has(a, ctx + 13) && has(a, ctx + kV + 12) && has(a, ctx + 2 * kV + 11));
  EXPECT_FALSE(has(a, ctx + 3 * kV + 10));
  EXPECT_EQ(std::count_if(a.index.begin(), a.index.end(),
                          [&](uint32_t i) { return i >= f.hidden_input_dimension(); }),
            1);
  // The bigram depends on (p-1, p) only, not on older tokens.
  f.add_row(d, std::vector<int32_t>{99 % kV, 12, 13}, b);
  EXPECT_EQ(a.index.back(), b.index.back());
  f.add_row(d, std::vector<int32_t>{11, 14, 13}, c);
  EXPECT_NE(a.index.back(), c.index.back());
  // The two-argument form is the history {prev, token}.
  PepiDataset x, y;
  f2.add_row(d, 13, 12, x);
  f2.add_row(d, std::vector<int32_t>{12, 13}, y);
  EXPECT_EQ(x.index, y.index);
}

TEST(PepiWideDeep, HiddenLayerLearnsAnInteraction) {
  PepiFeaturizer f(kCtx, kV);
  const PepiDataset tr = featurize(xor_world(6000, 1), f), ho = featurize(xor_world(1000, 2), f);
  OracleTrainOptions lin;
  lin.epochs = 4;
  const Oracle l = Oracle::train(info(kCtx, 2), tr, ho, lin);
  OracleTrainOptions deep = lin;
  deep.hidden = 16;
  deep.epochs = 8;
  const Oracle d = Oracle::train(info(kCtx, 2), tr, ho, deep);
  EXPECT_LT(l.metrics().accuracy, 0.75);
  EXPECT_GT(d.metrics().accuracy, 0.9);
  EXPECT_EQ(d.hidden(), 16);
  EXPECT_EQ(d.classifier(), "wide-deep");
}

TEST(PepiWideDeep, SaveLoadGivesIdenticalPredictions) {
  PepiFeaturizer f(kCtx, kV);
  OracleTrainOptions o;
  o.hidden = 8;
  o.epochs = 2;
  const Oracle a = Oracle::train(info(kCtx, 2), featurize(xor_world(500, 3), f),
                                 featurize(xor_world(100, 4), f), o);
  const fs::path p = fs::path(testing::TempDir()) / "pepi_wide_deep.oracle";
  a.save(p);
  const Oracle b = Oracle::load(p);
  EXPECT_EQ(b.hidden(), 8);
  EXPECT_DOUBLE_EQ(b.metrics().accuracy, a.metrics().accuracy);
  const Xor w = xor_world(200, 5);
  for (size_t i = 0; i < w.dists.size(); ++i) {
    const RouterRecord x = a.predict(w.dists[i], w.hist[i]), y = b.predict(w.dists[i], w.hist[i]);
    ASSERT_EQ(x.expert, y.expert);
    ASSERT_EQ(x.confidence, y.confidence);
  }
  // A truncated hidden block is refused.
  std::string bytes;
  {
    std::ifstream in(p, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 2);
  EXPECT_THROW(Oracle::load(p), Error);
}

TEST(PepiWideDeep, VersionOneFilesStillLoad) {
  // A version-1 file is a logistic-regression file of today with version 1 (no "hidden" key).
  PepiFeaturizer f(kCtx, kV);
  const Oracle a = Oracle::train(info(kCtx, 2), featurize(xor_world(300, 6), f), {}, {});
  const fs::path p = fs::path(testing::TempDir()) / "pepi_v1.oracle";
  a.save(p);
  std::string bytes;
  {
    std::ifstream in(p, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  bytes[8] = 1;
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  const Oracle b = Oracle::load(p);
  EXPECT_EQ(b.hidden(), 0);
  const Xor w = xor_world(50, 7);
  for (size_t i = 0; i < w.dists.size(); ++i)
    EXPECT_EQ(a.predict(w.dists[i], w.hist[i]).confidence,
              b.predict(w.dists[i], w.hist[i]).confidence);
}

PepiRawData raw_world(int seqs, uint64_t seed) {
  PepiRawData r;
  r.k = 4;
  r.num_experts = 3;
  r.vocab_size = kV;
  r.router_layer = 2;
  r.router_hash = std::string(64, 'd');
  for (int s = 0; s < seqs; ++s) {
    for (int p = 0; p < 5 + s; ++p) {
      r.tokens.push_back(static_cast<int32_t>((lcg(seed) >> 33) % kV));
      std::vector<float> logits(kV);
      for (float& x : logits) x = static_cast<float>((lcg(seed) >> 40) % 1000) / 300.0f;
      const auto d = top_logprobs(logits, r.k);
      r.top_tokens.insert(r.top_tokens.end(), d.tokens.begin(), d.tokens.end());
      r.top_logprobs.insert(r.top_logprobs.end(), d.logprobs.begin(), d.logprobs.end());
      for (int e = 0; e < r.num_experts; ++e)
        r.router_logits.push_back(static_cast<float>((lcg(seed) >> 40) % 100) / 10.0f);
    }
    r.seq_offsets.push_back(static_cast<int64_t>(r.tokens.size()));
  }
  return r;
}

TEST(PepiRaw, SaveLoadAppendAndFeaturize) {
  PepiRawData a = raw_world(3, 1);
  const PepiRawData b = raw_world(2, 2);
  const fs::path p = fs::path(testing::TempDir()) / "pepi.raw";
  b.save(p);
  const PepiRawData c = PepiRawData::load(p);
  EXPECT_EQ(c.tokens, b.tokens);
  EXPECT_EQ(c.seq_offsets, b.seq_offsets);
  EXPECT_EQ(c.top_logprobs, b.top_logprobs);
  EXPECT_EQ(c.router_logits, b.router_logits);
  a.append(c);
  ASSERT_EQ(a.sequences(), 5u);
  EXPECT_EQ(a.positions(), 5 + 6 + 7 + 5 + 6);
  PepiRawData other = raw_world(1, 3);
  other.k = 5;
  EXPECT_THROW(a.append(other), Error);

  // Sequence 3 of `a` is sequence 0 of `b`: same rows, history restarting at its first token.
  const PepiFeaturizer f({false, 4, true, true, true}, kV);
  const std::vector<size_t> s3 = {3};
  const PepiDataset d = featurize_raw(a, f, s3);
  ASSERT_EQ(d.rows(), 5);
  PepiDataset want;
  for (size_t p = 0; p < 5; ++p) {
    TokenDistribution t{{b.top_tokens.begin() + p * 4, b.top_tokens.begin() + (p + 1) * 4},
                        {b.top_logprobs.begin() + p * 4, b.top_logprobs.begin() + (p + 1) * 4}};
    f.add_row(t, std::span(b.tokens).first(p + 1), want);
  }
  EXPECT_EQ(d.index, want.index);
  EXPECT_EQ(d.value, want.value);
  for (size_t p = 0; p < 5; ++p) {
    const float* rl = &b.router_logits[p * 3];
    EXPECT_EQ(d.expert[p], std::max_element(rl, rl + 3) - rl);
  }
  EXPECT_THROW(featurize_raw(a, PepiFeaturizer({false, 8, false, false, false}, kV), s3),
               Error);  // k > raw k
  std::ofstream(p, std::ios::binary | std::ios::trunc) << "EPWARAW1xx";
  EXPECT_THROW(PepiRawData::load(p), Error);
}

}  // namespace
}  // namespace epwa
