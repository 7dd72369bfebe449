// Statistical behaviour end to end (processor -> sampled tokens -> detector) with fixed seeds.
#include <gtest/gtest.h>

#include <random>

#include "epwa/detect.hpp"
#include "simulate.hpp"

namespace {

const std::string kHash = "16b7817718e938a999ea5fc9fb66c9457b9641c0d0c05cc1b31b79770537b561";
constexpr int32_t kV = 1000, kE = 8, kLayer = 3;

std::shared_ptr<const epwa::GreenLists> lists() {
  return std::make_shared<epwa::GreenLists>("simulation-key", kHash, kV, 0.5, kE);
}

epwa::DetectionResult detect(const std::shared_ptr<const epwa::GreenLists>& gl,
                             const sim::Sequence& s, epwa::DetectOptions o = {}) {
  const auto rec = epwa::records_from_logits(s.router_logits, kE);
  return epwa::Detector(gl, o).detect({s.tokens, s.prompt_tokens, rec});
}

TEST(Simulation, ForcedGreenGivesGEqualsN) {
  auto gl = lists();
  epwa::WatermarkConfig cfg;
  cfg.delta = 1e4;  // forces every sampled token into the green list
  cfg.router_layer = kLayer;
  epwa::WatermarkProcessor wm(cfg, gl);
  std::mt19937_64 rng(11);
  const auto s = sim::generate(rng, kV, kE, kLayer, 8, 100, 3.0, &wm);
  const auto r = detect(gl, s);
  EXPECT_EQ(r.g, r.n);
  EXPECT_GE(r.n, 95);
  EXPECT_TRUE(r.detected);
}

TEST(Simulation, UnwatermarkedNeverDetected) {
  auto gl = lists();
  std::mt19937_64 rng(12);
  double max_z = -1e9;
  for (int trial = 0; trial < 50; ++trial) {
    const auto s = sim::generate(rng, kV, kE, kLayer, 6, 200, 3.0, nullptr);
    for (auto m : {epwa::DetectMethod::Full, epwa::DetectMethod::Weighted}) {
      epwa::DetectOptions o;
      o.method = m;
      const auto r = detect(gl, s, o);
      EXPECT_FALSE(r.detected) << "trial " << trial << " z " << r.z;
      max_z = std::max(max_z, r.z);
    }
  }
  EXPECT_LT(max_z, 4.0);
}

TEST(Simulation, WatermarkedDetected) {
  auto gl = lists();
  for (auto mode : {epwa::WatermarkMode::GSG, epwa::WatermarkMode::EWP}) {
    epwa::WatermarkConfig cfg;
    cfg.mode = mode;
    cfg.delta = mode == epwa::WatermarkMode::GSG ? 2.0 : 4.0;  // EWP scales by c (~0.5 here)
    cfg.router_layer = kLayer;
    epwa::WatermarkProcessor wm(cfg, gl);
    std::mt19937_64 rng(13);
    int detected = 0, weighted_detected = 0;
    double entropy = 0.0, z_sum = 0.0;
    for (int trial = 0; trial < 50; ++trial) {
      wm.reset();
      const auto s = sim::generate(rng, kV, kE, kLayer, 6, 200, 3.0, &wm);
      entropy += s.mean_entropy / 50;
      const auto r = detect(gl, s);
      detected += r.detected;
      z_sum += r.z;
      epwa::DetectOptions o;
      o.method = epwa::DetectMethod::Weighted;
      weighted_detected += detect(gl, s, o).detected;
    }
    // Gaussian logits with sd 3 over 1000 tokens: ~3 nats, a plausible LM next-token entropy.
    EXPECT_GT(entropy, 2.5);
    EXPECT_LT(entropy, 5.5);
    EXPECT_GE(detected, 48) << watermark_mode_name(mode) << " mean z " << z_sum / 50;
    EXPECT_GE(weighted_detected, 45) << watermark_mode_name(mode);
    std::printf("%s: entropy %.2f nats, detected %d/50 (weighted %d/50), mean z %.2f\n",
                std::string(watermark_mode_name(mode)).c_str(), entropy, detected,
                weighted_detected, z_sum / 50);
  }
}

TEST(Simulation, CspvKeepsPowerWithAFraction) {
  auto gl = lists();
  epwa::WatermarkConfig cfg;
  cfg.router_layer = kLayer;
  epwa::WatermarkProcessor wm(cfg, gl);
  std::mt19937_64 rng(14);
  int detected = 0;
  for (int trial = 0; trial < 20; ++trial) {
    wm.reset();
    const auto s = sim::generate(rng, kV, kE, kLayer, 6, 400, 3.0, &wm);
    epwa::DetectOptions o;
    o.method = epwa::DetectMethod::Cspv;
    o.sample = 150;
    const auto r = detect(gl, s, o);
    EXPECT_EQ(r.n, 150);
    detected += r.detected;
  }
  EXPECT_GE(detected, 19);
}

}  // namespace
