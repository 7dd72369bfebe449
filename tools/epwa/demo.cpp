// epwa demo: the main job of the README. Generates a watermarked and an unwatermarked text from one
// prompt with the bundled model, detects both, and prints them side by side.
#include <fmt/core.h>

#include <chrono>
#include <iostream>

#include "command.hpp"
#include "common.hpp"
#include "epwa/detect.hpp"
#include "epwa/generate.hpp"
#include "epwa/tokenizer.hpp"
#include "epwa/watermark.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string prompt = "And it came to pass in those days, that the king";
  std::string key = "epwa-demo-key";
  int32_t tokens = 200;
  uint64_t seed = 7;
};

// Expert and confidence at `layer` for every position of `ids`, from one pass that stops there.
std::vector<RouterRecord> records(Model& m, std::span<const int32_t> ids, int32_t layer) {
  struct Rec : RouterObserver {
    int32_t layer;
    std::vector<RouterRecord> out;
    void observe(const RouterObservation& o) override {
      if (o.layer == layer) out.push_back(top1_expert(o.logits));
    }
  } rec;
  rec.layer = layer;
  auto cache = m.make_cache(static_cast<int64_t>(ids.size()));
  ForwardOptions fo;
  fo.observer = &rec;
  fo.stop_after_router = layer;
  m.forward(ids, cache, fo);
  return rec.out;
}

std::string one_line(std::string s, size_t width) {
  for (char& ch : s)
    if (ch == '\n') ch = ' ';
  return s.size() > width ? s.substr(0, width) + "..." : s;
}

const Command kDemo{"demo", "Watermark and detect a text with the bundled model (the README's main job)",
                    [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  a->model.add(app);
  app.add_option("--prompt", a->prompt, "prompt text");
  app.add_option("--key", a->key, "watermark key (the demo's own default key is for the demo only)");
  app.add_option("--tokens", a->tokens, "tokens to generate")->check(CLI::PositiveNumber);
  app.add_option("--seed", a->seed, "sampling seed");
  return [a] {
    const auto t0 = std::chrono::steady_clock::now();
    auto model = a->model.load();
    auto tok = load_tokenizer(model->source());
    const ModelConfig& c = model->config();
    std::vector<RouterMatrix> routers;
    std::vector<std::vector<float>> router_data;
    for (int32_t l = 0; l < c.num_layers; ++l) router_data.push_back(model->router_f32(l));
    for (int32_t l = 0; l < c.num_layers; ++l)
      routers.push_back({l, c.num_experts, c.hidden_size, router_data[l]});
    const std::string hash = irsh_v1(routers);
    const int32_t layer = resolve_router_layer(-1, c.num_layers);
    auto lists = std::make_shared<GreenLists>(a->key, hash, c.vocab_size, 0.5, c.num_experts);
    WatermarkConfig wc;
    wc.router_layer = layer;
    WatermarkProcessor wm(wc, lists);

    const auto prompt = tok->encode(a->prompt, true, false);
    GenerateOptions go;
    go.max_new_tokens = a->tokens;
    go.sampling = {1.0f, 0, 0.95f, a->seed};
    const auto plain = generate(*model, prompt, go);
    go.observer = &wm;
    go.processor = &wm;
    const auto marked = generate(*model, prompt, go);

    fmt::print("epwa demo: model {} ({} layers, {} experts top-{}), router hash {}...\n",
               model->source().filename().string(), c.num_layers, c.num_experts, c.experts_per_token,
               hash.substr(0, 16));
    fmt::print("watermark: GSG, gamma 0.5, delta 2, router layer {}, key '{}'\n", layer, a->key);
    fmt::print("prompt: {}\n\n", a->prompt);
    struct Row {
      std::string name;
      const std::vector<int32_t>* text;
    };
    fmt::print("{:<14} {:<7} {:>5} {:>5} {:>8} {:>10} {:>9}\n", "text", "method", "green", "n", "z",
               "p-value", "detected");
    for (const Row& r : {Row{"watermarked", &marked}, Row{"unwatermarked", &plain}}) {
      std::vector<int32_t> ids(prompt);
      ids.insert(ids.end(), r.text->begin(), r.text->end());
      const auto recs = records(*model, ids, layer);
      for (const auto& [method, sample] : {std::pair{DetectMethod::Full, int64_t{0}},
                                           std::pair{DetectMethod::Cspv, int64_t{60}}}) {
        DetectOptions opt;
        opt.method = method;
        opt.sample = sample;
        const DetectionResult res =
            Detector(lists, opt).detect({ids, static_cast<int64_t>(prompt.size()), recs});
        fmt::print("{:<14} {:<7} {:>5} {:>5} {:>8.2f} {:>10.2e} {:>9}\n", r.name, res.method, res.g,
                   res.n, res.z, res.p_value, res.detected ? "yes" : "no");
      }
    }
    fmt::print("\nwatermarked:   {}\n", one_line(tok->decode(marked, true), 160));
    fmt::print("unwatermarked: {}\n", one_line(tok->decode(plain, true), 160));
    fmt::print("\n({:.1f} s)\n", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return 0;
  };
}};

}  // namespace
}  // namespace epwa::cli
