// Watermark costs: green-list build, per-token process() at V = 32000, detection statistics.
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "epwa/detect.hpp"
#include "epwa/watermark.hpp"

namespace {

const std::string kHash(64, 'e');
constexpr int32_t kV = 32000, kE = 8;

void BM_GreenListBuild(benchmark::State& state) {  // all E lists for one key
  for (auto _ : state) {
    epwa::GreenLists gl("bench-key", kHash, kV, 0.5, kE);
    for (int32_t e = 0; e < kE; ++e) benchmark::DoNotOptimize(gl.bits(e).data());
  }
  state.SetLabel("V=32000, E=8");
}
BENCHMARK(BM_GreenListBuild)->Unit(benchmark::kMillisecond);

void BM_Process(benchmark::State& state) {
  auto gl = std::make_shared<epwa::GreenLists>("bench-key", kHash, kV, 0.5, kE);
  epwa::WatermarkConfig cfg;
  cfg.mode = state.range(0) == 0 ? epwa::WatermarkMode::GSG : epwa::WatermarkMode::EWP;
  epwa::WatermarkProcessor wm(cfg, gl);
  std::vector<float> router(kE), logits(kV, 0.0f);
  for (int32_t e = 0; e < kE; ++e) (void)gl->bits(e);  // lists built outside the timed loop
  int64_t pos = 0;
  for (auto _ : state) {
    router[pos % kE] += 1.0f;  // move the top-1 expert around
    wm.observe({0, pos++, router, {}, {}});
    wm.process(logits);
    benchmark::ClobberMemory();
  }
  state.SetLabel(cfg.mode == epwa::WatermarkMode::GSG ? "GSG, observe + process"
                                                      : "EWP, observe + process");
}
BENCHMARK(BM_Process)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond);

void BM_DetectStatistics(benchmark::State& state) {
  auto gl = std::make_shared<epwa::GreenLists>("bench-key", kHash, kV, 0.5, kE);
  const int64_t T = state.range(1);
  std::mt19937 rng(1);
  std::vector<int32_t> tokens(static_cast<size_t>(T));
  std::vector<epwa::RouterRecord> rec(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) {
    tokens[i] = static_cast<int32_t>(rng() % kV);
    rec[i] = {static_cast<int32_t>(rng() % kE), 0.2f + 0.001f * static_cast<float>(rng() % 700)};
  }
  epwa::DetectOptions o;
  o.method = static_cast<epwa::DetectMethod>(state.range(0));
  o.sample = T / 4;
  epwa::Detector d(gl, o);
  for (int32_t e = 0; e < kE; ++e) (void)gl->bits(e);
  for (auto _ : state) benchmark::DoNotOptimize(d.detect({tokens, 1, rec}).z);
  state.SetItemsProcessed(state.iterations() * T);
  state.SetLabel(std::string(epwa::detect_method_name(o.method)) + ", tokens/s = items/s");
}
BENCHMARK(BM_DetectStatistics)
    ->Args({0, 200})
    ->Args({0, 100000})
    ->Args({1, 100000})
    ->Args({2, 100000})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
