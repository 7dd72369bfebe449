#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/watermark.hpp"

namespace {

const std::string kHashA(64, 'a');
const std::string kHashB = std::string(63, 'a') + "b";

int32_t count_green(const epwa::GreenLists& gl, int32_t e) {
  int32_t c = 0;
  for (int32_t t = 0; t < gl.vocab_size(); ++t) c += gl.is_green(e, t);
  return c;
}

TEST(GreenLists, SizeIsFloorGammaV) {
  for (auto [V, gamma] : std::vector<std::pair<int32_t, double>>{
           {1000, 0.5}, {1001, 0.5}, {32000, 0.25}, {997, 0.3}, {50, 0.1}, {2, 0.5}}) {
    epwa::GreenLists gl("k", kHashA, V, gamma, 3);
    const auto expect = static_cast<int32_t>(std::floor(gamma * V));
    EXPECT_EQ(gl.green_count(), expect);
    for (int32_t e = 0; e < 3; ++e) {
      EXPECT_EQ(count_green(gl, e), expect) << "V=" << V << " gamma=" << gamma;
      const auto order = gl.green_tokens_in_order(e);
      EXPECT_EQ(static_cast<int32_t>(order.size()), expect);
      for (int32_t t : order) EXPECT_TRUE(gl.is_green(e, t));
    }
  }
}

int32_t overlap(const epwa::GreenLists& a, int32_t ea, const epwa::GreenLists& b, int32_t eb) {
  int32_t c = 0;
  for (int32_t t = 0; t < a.vocab_size(); ++t) c += a.is_green(ea, t) && b.is_green(eb, t);
  return c;
}

TEST(GreenLists, DifferAcrossExpertsKeysAndHashes) {
  const int32_t V = 4000;
  epwa::GreenLists base("key-1", kHashA, V, 0.5, 4);
  epwa::GreenLists other_key("key-2", kHashA, V, 0.5, 4);
  epwa::GreenLists other_hash("key-1", kHashB, V, 0.5, 4);
  epwa::GreenLists same("key-1", kHashA, V, 0.5, 4);
  // Independent lists of half the vocabulary overlap in ~V/4 = 1000 tokens (sd ~16).
  for (int32_t e = 1; e < 4; ++e) EXPECT_NEAR(overlap(base, 0, base, e), V / 4, 100);
  EXPECT_NEAR(overlap(base, 0, other_key, 0), V / 4, 100);
  EXPECT_NEAR(overlap(base, 2, other_hash, 2), V / 4, 100);
  EXPECT_EQ(overlap(base, 3, same, 3), V / 2);  // deterministic
}

TEST(GreenLists, FractionOfRandomTokensIsGamma) {
  epwa::GreenLists gl("fraction", kHashA, 32000, 0.25, 2);
  // Contiguous token ranges (e.g. a script's block of the vocabulary) are not biased either.
  for (int32_t lo = 0; lo < 32000; lo += 8000) {
    int32_t c = 0;
    for (int32_t t = lo; t < lo + 8000; ++t) c += gl.is_green(1, t);
    EXPECT_NEAR(c / 8000.0, 0.25, 0.025);
  }
}

TEST(GreenLists, RejectsBadInput) {
  EXPECT_THROW(epwa::GreenLists("", kHashA, 100, 0.5, 2), epwa::Error);
  EXPECT_THROW(epwa::GreenLists("k", "abc", 100, 0.5, 2), epwa::Error);
  EXPECT_THROW(epwa::GreenLists("k", std::string(64, 'A'), 100, 0.5, 2), epwa::Error);
  EXPECT_THROW(epwa::GreenLists("k", kHashA, 1, 0.5, 2), epwa::Error);
  EXPECT_THROW(epwa::GreenLists("k", kHashA, 100, 0.0, 2), epwa::Error);
  EXPECT_THROW(epwa::GreenLists("k", kHashA, 100, 1.0, 2), epwa::Error);
  EXPECT_THROW(epwa::GreenLists("k", kHashA, 100, 0.001, 2), epwa::Error);  // empty list
  EXPECT_THROW(epwa::GreenLists("k", kHashA, 100, 0.5, 0), epwa::Error);
  epwa::GreenLists gl("k", kHashA, 100, 0.5, 2);
  EXPECT_THROW(gl.is_green(2, 0), epwa::Error);
  EXPECT_THROW(gl.is_green(-1, 0), epwa::Error);
  EXPECT_THROW(gl.is_green(0, 100), epwa::Error);
  EXPECT_THROW(gl.is_green(0, -1), epwa::Error);
}

TEST(GreenLists, ConcurrentFirstUseBuildsOnce) {
  epwa::GreenLists gl("threads", kHashA, 32000, 0.5, 8);
  std::vector<int32_t> counts(4);
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&, i] {
      for (int32_t e = 0; e < 8; ++e) counts[i] += count_green(gl, (e + i) % 8);
    });
  for (auto& t : ts) t.join();
  for (int32_t c : counts) EXPECT_EQ(c, 8 * 16000);
}

TEST(GreenLists, BuildIsFast) {
  const auto t0 = std::chrono::steady_clock::now();
  epwa::GreenLists gl("speed", kHashA, 32000, 0.5, 8);
  for (int32_t e = 0; e < 8; ++e) (void)gl.bits(e);
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 500.0);  // ~10 ms on a laptop core; generous for a loaded CI machine
}

TEST(Irsh, ShapeAndPrecisionInvariance) {
  std::vector<float> w(8 * 16);
  for (size_t i = 0; i < w.size(); ++i) w[i] = std::sin(static_cast<float>(i)) * 0.1f;
  std::vector<epwa::RouterMatrix> r = {{0, 8, 16, w}, {1, 8, 16, w}};
  const std::string h = epwa::irsh_v1(r);
  EXPECT_EQ(h.size(), 64u);
  // Values that differ only below bf16 precision (as after a f16 round trip of a bf16 weight)
  // hash the same; a real change does not.
  std::vector<float> w2 = w;
  for (float& x : w2) x = std::bit_cast<float>(std::bit_cast<uint32_t>(x) ^ 1u);
  std::vector<epwa::RouterMatrix> r2 = {{0, 8, 16, w2}, {1, 8, 16, w2}};
  EXPECT_EQ(epwa::irsh_v1(r2), h);
  w2[5] += 0.01f;
  EXPECT_NE(epwa::irsh_v1(r2), h);
  // Layer index and shape are hashed.
  std::vector<epwa::RouterMatrix> r3 = {{0, 8, 16, w}, {2, 8, 16, w}};
  EXPECT_NE(epwa::irsh_v1(r3), h);
  std::vector<epwa::RouterMatrix> r4 = {{0, 16, 8, w}, {1, 16, 8, w}};
  EXPECT_NE(epwa::irsh_v1(r4), h);
  std::vector<epwa::RouterMatrix> bad = {{0, 8, 15, w}};
  EXPECT_THROW(epwa::irsh_v1(bad), epwa::Error);
  EXPECT_THROW(epwa::irsh_v1({}), epwa::Error);
}

TEST(Top1Expert, ArgmaxTiesAndConfidence) {
  const std::vector<float> l = {0.5f, 2.0f, 2.0f, -1.0f};
  const auto c = epwa::top1_expert(l);
  EXPECT_EQ(c.expert, 1);  // tie -> lower index
  const double s = std::exp(0.5 - 2) + 2 + std::exp(-3.0);
  EXPECT_NEAR(c.confidence, 1.0 / s, 1e-6);
  const std::vector<float> nan = {0.0f, std::nanf("")};
  EXPECT_THROW(epwa::top1_expert(nan), epwa::Error);
  EXPECT_EQ(epwa::resolve_router_layer(-1, 32), 31);
  EXPECT_EQ(epwa::resolve_router_layer(-2, 32), 30);  // counts from the last MoE layer
  EXPECT_EQ(epwa::resolve_router_layer(-32, 32), 0);
  EXPECT_THROW(epwa::resolve_router_layer(-33, 32), epwa::Error);
  EXPECT_EQ(epwa::resolve_router_layer(3, 32), 3);
  EXPECT_THROW(epwa::resolve_router_layer(32, 32), epwa::Error);
}

}  // namespace
