// Detection with a keyring (docs/SPEC.md section 9): the best key is found, the decision is
// Bonferroni-corrected, and the corrected rule keeps the false-positive rate at its level.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/watermark.hpp"

namespace {

const std::string kHash(64, 'e');
constexpr int32_t kV = 1000, kE = 4;

struct Ring {
  std::vector<std::string> ids;
  std::vector<std::shared_ptr<const epwa::GreenLists>> lists;
  explicit Ring(int m) {
    for (int i = 0; i < m; ++i) {
      ids.push_back("k" + std::to_string(i));
      lists.push_back(
          std::make_shared<epwa::GreenLists>("ring-key-" + std::to_string(i), kHash, kV, 0.5, kE));
    }
  }
};

// Random experts; tokens drawn uniformly (null) or from the green list of `lists` (watermarked).
struct Seq {
  std::vector<int32_t> tokens;
  std::vector<epwa::RouterRecord> records;
};
Seq make(std::mt19937_64& rng, int n, const epwa::GreenLists* lists) {
  Seq s;
  s.tokens.push_back(1);
  for (int i = 0; i < n; ++i) {
    const auto e = static_cast<int32_t>(rng() % kE);
    s.records.push_back({e, 0.5f});
    int32_t t;
    do t = static_cast<int32_t>(rng() % kV);
    while (lists != nullptr && !lists->is_green(e, t));
    s.tokens.push_back(t);
  }
  return s;
}

TEST(KeyringThreshold, IsTheBonferroniQuantile) {
  EXPECT_EQ(epwa::keyring_threshold(4.0, 1), 4.0);
  double last = 4.0;
  for (int m : {2, 4, 16, 1024}) {
    const double z = epwa::keyring_threshold(4.0, m);
    EXPECT_GT(z, last);
    last = z;
    // m * P[Z > z_m] = P[Z > 4]
    EXPECT_NEAR(std::log(m) + epwa::normal_log_sf(z), epwa::normal_log_sf(4.0), 1e-9) << m;
  }
  // Independent values (Python: bisection on 0.5 erfc(z / sqrt 2)).
  EXPECT_NEAR(epwa::keyring_threshold(4.0, 4), 4.316732, 1e-5);
  EXPECT_NEAR(epwa::keyring_threshold(4.0, 16), 4.613528, 1e-5);
  EXPECT_THROW(epwa::keyring_threshold(4.0, 0), epwa::Error);
}

TEST(KeyringDetector, ReportsTheKeyThatFiredWithCorrectedP) {
  const Ring ring(4);
  std::mt19937_64 rng(3);
  const Seq s = make(rng, 200, ring.lists[2].get());
  epwa::DetectOptions o;
  o.count_repeats = true;
  const epwa::KeyringDetector d(ring.ids, ring.lists, o);
  const epwa::KeyringResult r = d.detect({s.tokens, 1, s.records});
  EXPECT_EQ(r.key_id, "k2");
  EXPECT_EQ(r.keys, 4);
  EXPECT_TRUE(r.best.detected);
  EXPECT_EQ(r.best.g, 200);
  ASSERT_EQ(r.per_key.size(), 4u);
  for (const auto& k : r.per_key) {
    if (k.id != "k2") {
      EXPECT_LT(k.z, 4.0);
    }
  }
  EXPECT_NEAR(r.log10_p_corrected, r.best.log10_p + std::log10(4.0), 1e-12);
  // The same text under a one-key detector of key 2 gives the same statistic.
  const epwa::Detector one(ring.lists[2], o);
  const auto r1 = one.detect({s.tokens, 1, s.records});
  EXPECT_EQ(r1.g, r.best.g);
  EXPECT_EQ(r1.n, r.best.n);
  const nlohmann::json j = epwa::to_json(r);
  EXPECT_EQ(j["keyring"]["key_id"], "k2");
  EXPECT_EQ(j["keyring"]["correction"], "bonferroni");
  EXPECT_EQ(j["keyring"]["per_key"].size(), 4u);
}

TEST(KeyringDetector, KeysScoredInParallelGiveTheSerialResult) {
  // Fresh rings for each detector, so both make their lists on first use (the parallel one from
  // four threads at once).
  const Ring serial_ring(64), parallel_ring(64);
  std::mt19937_64 rng(5);
  const Seq s = make(rng, 300, serial_ring.lists[37].get());
  const epwa::KeyringDetector serial(serial_ring.ids, serial_ring.lists);
  epwa::KeyringDetector parallel(parallel_ring.ids, parallel_ring.lists);
  int calls = 0;
  parallel.set_parallel_for([&](int64_t n, const auto& fn) {
    ++calls;
    std::vector<std::thread> threads;
    for (int64_t t = 0; t < 4; ++t) threads.emplace_back(fn, n * t / 4, n * (t + 1) / 4);
    for (auto& th : threads) th.join();
  });
  const epwa::KeyringResult a = serial.detect({s.tokens, 1, s.records});
  const epwa::KeyringResult b = parallel.detect({s.tokens, 1, s.records});
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(a.key_id, "k37");
  EXPECT_EQ(b.key_id, a.key_id);
  EXPECT_EQ(b.best.z, a.best.z);
  ASSERT_EQ(b.per_key.size(), a.per_key.size());
  for (size_t k = 0; k < a.per_key.size(); ++k) {
    EXPECT_EQ(b.per_key[k].id, a.per_key[k].id);
    EXPECT_EQ(b.per_key[k].g, a.per_key[k].g) << k;
    EXPECT_EQ(b.per_key[k].z, a.per_key[k].z) << k;
    EXPECT_EQ(b.per_key[k].log10_p, a.per_key[k].log10_p) << k;
  }
}

TEST(KeyringDetector, OneKeyIsTheOneKeyRule) {
  const Ring ring(1);
  std::mt19937_64 rng(5);
  epwa::DetectOptions o;
  o.threshold = 1.0;
  const epwa::KeyringDetector d(ring.ids, ring.lists, o);
  const epwa::Detector one(ring.lists[0], o);
  for (int i = 0; i < 50; ++i) {
    const Seq s = make(rng, 60, nullptr);
    const auto a = d.detect({s.tokens, 1, s.records});
    const auto b = one.detect({s.tokens, 1, s.records});
    EXPECT_EQ(a.best.detected, b.detected);
    EXPECT_EQ(a.best.z, b.z);
    EXPECT_DOUBLE_EQ(a.p_corrected, b.p_value);  // through log10 and back
  }
}

// Under the null (text independent of every key) the corrected rule fires at most at its level
// alpha = P[Z > threshold]; the uncorrected "some key has z > threshold" fires about m times more.
TEST(KeyringDetector, CorrectionKeepsTheFalsePositiveRate) {
  constexpr int kM = 16, kTrials = 3000;
  const Ring ring(kM);
  epwa::DetectOptions o;
  o.threshold = 1.5;  // alpha = 0.0668, large enough to measure with a few thousand texts
  o.count_repeats = true;
  const epwa::KeyringDetector d(ring.ids, ring.lists, o);
  std::mt19937_64 rng(11);
  int corrected = 0, uncorrected = 0;
  for (int i = 0; i < kTrials; ++i) {
    const Seq s = make(rng, 100, nullptr);
    const auto r = d.detect({s.tokens, 1, s.records});
    corrected += r.best.detected;
    uncorrected += r.best.z > o.threshold;
  }
  const double alpha = std::exp(epwa::normal_log_sf(o.threshold));
  const double sd = std::sqrt(alpha * (1 - alpha) / kTrials);
  EXPECT_LE(static_cast<double>(corrected) / kTrials, alpha + 3 * sd);
  EXPECT_GT(static_cast<double>(uncorrected) / kTrials, 4 * alpha);
}

TEST(KeyringDetector, RefusesMismatchedKeys) {
  Ring ring(2);
  EXPECT_THROW(epwa::KeyringDetector({}, {}), epwa::Error);
  EXPECT_THROW(epwa::KeyringDetector({"a"}, ring.lists), epwa::Error);
  ring.lists[1] = std::make_shared<epwa::GreenLists>("other", kHash, kV, 0.25, kE);
  EXPECT_THROW(epwa::KeyringDetector(ring.ids, ring.lists), epwa::Error);
}

TEST(KeyringPick, SpreadsOverKeysAndDependsOnSecretSeedAndPrompt) {
  const std::vector<std::string> keys{"a", "b", "c", "d"};
  const std::string secret = epwa::keyring_rotation_secret(keys);
  EXPECT_EQ(secret.size(), 32u);
  const std::vector<std::string> other_keys{"a", "b", "c", "e"};
  const std::string other = epwa::keyring_rotation_secret(other_keys);
  EXPECT_NE(secret, other);
  const std::vector<int32_t> p1{1, 5, 9}, p2{1, 5, 10};
  std::vector<int> count(4, 0);
  int same_prompt_change = 0, secret_change = 0;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    const size_t k = epwa::keyring_pick(secret, seed, p1, 4);
    ASSERT_LT(k, 4u);
    ++count[k];
    same_prompt_change += k != epwa::keyring_pick(secret, seed, p2, 4);
    secret_change += k != epwa::keyring_pick(other, seed, p1, 4);
    EXPECT_EQ(k, epwa::keyring_pick(secret, seed, p1, 4));  // reproducible
  }
  for (int c : count) EXPECT_NEAR(c, 500, 90);  // about 4 standard deviations
  EXPECT_NEAR(same_prompt_change, 1500, 150);   // 3/4 of seeds move to another key
  EXPECT_NEAR(secret_change, 1500, 150);
  EXPECT_THROW(epwa::keyring_pick(secret, 0, p1, 0), epwa::Error);
  const std::vector<std::string> with_empty{"a", ""};
  EXPECT_THROW(epwa::keyring_rotation_secret(with_empty), epwa::Error);
}

}  // namespace

namespace {

// CTX-v1 detection: a text green under (expert, bucket of the previous token) is found by the
// context-bucket lists and not by GL-v1's, and the dedup is on (context, token).
TEST(ContextBucketDetection, ScoresTheListOfExpertAndPreviousToken) {
  auto ctx = std::make_shared<epwa::GreenLists>("ctx-key", kHash, kV, 0.5, kE, 64);
  auto plain = std::make_shared<epwa::GreenLists>("ctx-key", kHash, kV, 0.5, kE);
  std::mt19937_64 rng(21);
  std::vector<int32_t> tokens{1};
  std::vector<epwa::RouterRecord> records;
  for (int i = 0; i < 150; ++i) {
    const auto e = static_cast<int32_t>(rng() % kE);
    records.push_back({e, 0.5f});
    const int32_t c = ctx->context(e, tokens.back());
    int32_t t;
    do t = static_cast<int32_t>(rng() % kV);
    while (!ctx->is_green(c, t));
    tokens.push_back(t);
  }
  const epwa::Detector d(ctx), d0(plain);
  const auto r = d.detect({tokens, 1, records});
  EXPECT_EQ(r.g, r.n);
  EXPECT_TRUE(r.detected);
  EXPECT_LT(d0.detect({tokens, 1, records}).z, 4.0);
  // Every (context, token) pair once: a text repeating one token after itself under one expert.
  std::vector<int32_t> rep(40, 7);
  rep[0] = 1;
  std::vector<epwa::RouterRecord> rec0(40, {2, 0.5f});
  const auto rr = d.detect({rep, 1, rec0});
  EXPECT_EQ(rr.n, 1 + (ctx->context(2, 1) != ctx->context(2, 7)));
}

}  // namespace

// The keys `epwa attack steal --keys` and `epwa eval --keys` derive from one key: the same rule
// for both, so that their keyrings (and their numbers) are the same.
TEST(DerivedKeys, OneKeyIsItselfSeveralAreNumbered) {
  EXPECT_EQ(epwa::derived_keys("k", 1), std::vector<std::string>{"k"});
  EXPECT_EQ(epwa::derived_keys("k", 3), (std::vector<std::string>{"k#0", "k#1", "k#2"}));
  EXPECT_THROW(epwa::derived_keys("", 2), epwa::Error);
  EXPECT_THROW(epwa::derived_keys("k", 0), epwa::Error);
}
