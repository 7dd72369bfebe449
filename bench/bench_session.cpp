// End-to-end watermark costs and detection power on the bundled model (docs/RESULTS.md):
//   BM_WatermarkOverhead  generation tokens/s without / with GSG / with EWP, interleaved in one run
//   BM_DetectPass         teacher-forced pass stopping at layer L's router vs a full forward
//   BM_PowerStudy         50 watermarked 200-token generations + 50 human passages: detection rate
//                         of full / weighted / CSPV, false positives, and the prompt-less effect
// Run: build/bench/bench_session [--benchmark_filter=...]; EPWA_THREADS sets the thread count.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "epwa/session.hpp"
#include "epwa/tokenizer.hpp"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// The repository root, from this file's (absolute) path: the bench targets define no source dir.
fs::path root() {
  return fs::path(__FILE__).parent_path().parent_path();
}
fs::path model_dir() {
  return root() / "models" / "epwa-tiny-moe";
}

epwa::Model& model() {
  static std::unique_ptr<epwa::Model> m = epwa::Model::load(model_dir());
  return *m;
}
const epwa::Tokenizer& tok() {
  static std::unique_ptr<epwa::Tokenizer> t = epwa::load_tokenizer(model_dir());
  return *t;
}
std::vector<std::string> lines(const std::string& name, size_t count) {
  std::ifstream f(root() / "data" / "heldout" / name);
  std::vector<std::string> out;
  for (std::string s; out.size() < count && std::getline(f, s);)
    if (!s.empty()) out.push_back(s);
  return out;
}
double since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

epwa::GenerateOptions sampling(int32_t n, uint64_t seed) {
  epwa::GenerateOptions o;
  o.max_new_tokens = n;
  o.sampling.temperature = 1.0f;
  o.sampling.seed = seed;
  return o;
}

// Rounds alternate plain / GSG / EWP (rotating the order) so that machine noise hits all three
// alike.
void BM_WatermarkOverhead(benchmark::State& state) {
  epwa::Model& m = model();
  const auto prompt = tok().encode("The ship sailed into the harbour at dawn", true, false);
  epwa::WatermarkConfig gsg, ewp;
  gsg.router_layer = ewp.router_layer = -1;
  ewp.mode = epwa::WatermarkMode::EWP;
  epwa::Watermarker wg(m, "bench-key", gsg), we(m, "bench-key", ewp);
  (void)wg.generate(m, prompt, sampling(4, 0));  // lists built outside the timing
  (void)we.generate(m, prompt, sampling(4, 0));
  double secs[3] = {0, 0, 0};
  int64_t toks[3] = {0, 0, 0};
  uint64_t round = 0;
  for (auto _ : state) {
    for (int k = 0; k < 3; ++k) {
      const int which = static_cast<int>((round + k) % 3);
      const auto t0 = Clock::now();
      const auto o = sampling(static_cast<int32_t>(state.range(0)), round);
      const auto out =
          which == 0 ? epwa::generate(m, prompt, o) : (which == 1 ? wg : we).generate(m, prompt, o);
      secs[which] += since(t0);
      toks[which] += static_cast<int64_t>(out.size());
    }
    ++round;
  }
  const double plain = toks[0] / secs[0], g = toks[1] / secs[1], e = toks[2] / secs[2];
  state.counters["plain_tok_s"] = plain;
  state.counters["gsg_tok_s"] = g;
  state.counters["ewp_tok_s"] = e;
  state.counters["gsg_overhead_pct"] = 100.0 * (plain / g - 1.0);
  state.counters["ewp_overhead_pct"] = 100.0 * (plain / e - 1.0);
}
BENCHMARK(BM_WatermarkOverhead)->Arg(64)->Iterations(12)->Unit(benchmark::kSecond);

// range(0): layer to stop at (-1 = the last MoE layer, i.e. router_records), or -2 = full forward
// with the output head; range(1): tokens.
void BM_DetectPass(benchmark::State& state) {
  epwa::Model& m = model();
  std::vector<int32_t> ids;
  for (const auto& l : lines("heldout.txt", 40)) {
    const auto x = tok().encode(l, ids.empty(), false);
    ids.insert(ids.end(), x.begin(), x.end());
    if (ids.size() >= static_cast<size_t>(state.range(1))) break;
  }
  ids.resize(state.range(1));
  const auto lists = epwa::make_green_lists(m, "bench-key", 0.5);
  const epwa::Detector det(lists, {});
  for (auto _ : state) {
    if (state.range(0) == -2) {
      auto cache = m.make_context(static_cast<int64_t>(ids.size()));
      benchmark::DoNotOptimize(m.forward(ids, cache).data());
    } else {
      benchmark::DoNotOptimize(
          epwa::detect_tokens(m, det, ids, 1, static_cast<int32_t>(state.range(0))).z);
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(ids.size()));
  state.SetLabel(state.range(0) == -2
                     ? "full forward + head (tokens/s = items/s)"
                     : "detect_tokens full, stop at router layer " +
                           std::to_string(epwa::model_router_layer(m, state.range(0))));
}
BENCHMARK(BM_DetectPass)
    ->Args({-2, 256})
    ->Args({-1, 256})
    ->Args({0, 256})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);

struct Rate {
  int32_t hit = 0, total = 0;
  double zsum = 0, zmax = -1e9;
  void add(const epwa::DetectionResult& r) {
    hit += r.detected ? 1 : 0;
    ++total;
    zsum += r.z;
    zmax = std::max(zmax, r.z);
  }
};

void BM_PowerStudy(benchmark::State& state) {
  epwa::Model& m = model();
  const int32_t n_texts = static_cast<int32_t>(state.range(0)), len = 200;
  epwa::WatermarkConfig cfg;
  cfg.router_layer = -1;
  epwa::Watermarker wm(m, "power-study-key", cfg);
  auto make = [&](epwa::DetectMethod method, int64_t sample) {
    epwa::DetectOptions o;
    o.method = method;
    o.sample = sample;
    return epwa::Detector(wm.lists(), o);
  };
  const epwa::Detector full = make(epwa::DetectMethod::Full, 0),
                       weighted = make(epwa::DetectMethod::Weighted, 0),
                       c30 = make(epwa::DetectMethod::Cspv, 30),
                       c60 = make(epwa::DetectMethod::Cspv, 60),
                       c100 = make(epwa::DetectMethod::Cspv, 100);
  const epwa::Detector* dets[] = {&full, &weighted, &c30, &c60, &c100};
  const char* names[] = {"full", "weighted", "cspv30", "cspv60", "cspv100"};
  for (auto _ : state) {
    Rate wmr[5], human[5], promptless;
    int64_t diff = 0, positions = 0;
    double gen_s = 0;
    const auto prompts = lines("prompts.txt", n_texts);
    for (size_t i = 0; i < prompts.size(); ++i) {
      const auto prompt = tok().encode(prompts[i], true, false);
      auto t0 = Clock::now();
      const auto out = wm.generate(m, prompt, sampling(len, i));
      gen_s += since(t0);
      std::vector<int32_t> seq = prompt;
      seq.insert(seq.end(), out.begin(), out.end());
      const auto P = static_cast<int64_t>(prompt.size());
      for (int k = 0; k < 5; ++k) wmr[k].add(epwa::detect_tokens(m, *dets[k], seq, P, -1));
      // Prompt unknown: BOS + text only. Compare the expert governing each generated token.
      std::vector<int32_t> bare = {seq[0]};
      bare.insert(bare.end(), out.begin(), out.end());
      promptless.add(epwa::detect_tokens(m, full, bare, 1, -1));
      const auto with = epwa::router_records(m, seq);
      const auto without = epwa::router_records(m, bare);
      for (size_t j = 1; j < out.size(); ++j) {  // token j of the text, governed by position j-1
        ++positions;
        diff += with[P + j - 1].expert != without[j].expert ? 1 : 0;
      }
    }
    for (const auto& passage : lines("heldout.txt", n_texts)) {
      auto ids = tok().encode(passage, true, false);
      if (ids.size() > static_cast<size_t>(len + 1)) ids.resize(len + 1);
      for (int k = 0; k < 5; ++k) human[k].add(epwa::detect_tokens(m, *dets[k], ids, 1, -1));
    }
    for (int k = 0; k < 5; ++k) {
      state.counters[std::string(names[k]) + "_tpr"] =
          static_cast<double>(wmr[k].hit) / wmr[k].total;
      state.counters[std::string(names[k]) + "_mean_z"] = wmr[k].zsum / wmr[k].total;
      state.counters[std::string(names[k]) + "_fp"] = human[k].hit;
      state.counters[std::string(names[k]) + "_human_max_z"] = human[k].zmax;
    }
    state.counters["promptless_tpr"] = static_cast<double>(promptless.hit) / promptless.total;
    state.counters["promptless_mean_z"] = promptless.zsum / promptless.total;
    state.counters["promptless_expert_diff"] = static_cast<double>(diff) / positions;
    state.counters["gen_tok_s"] = n_texts * len / gen_s;
  }
}
BENCHMARK(BM_PowerStudy)->Arg(50)->Iterations(1)->Unit(benchmark::kSecond);

}  // namespace
