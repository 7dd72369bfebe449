// epwa demo: the main job of the README. Generates a watermarked and an unwatermarked text from one
// prompt with the bundled model, detects both, and prints them side by side.
#include <fmt/core.h>

#include <chrono>
#include <iostream>

#include "command.hpp"
#include "common.hpp"
#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/generate.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "epwa/tokenizer.hpp"
#include "epwa/watermark.hpp"
#include "pepi_args.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  PepiArgs pepi;
  std::string prompt = "And it came to pass in those days, that the king";
  std::string key = "epwa-demo-key";
  int32_t tokens = 200;
  uint64_t seed = 7;
};

std::string one_line(std::string s, size_t width) {
  for (char& ch : s)
    if (ch == '\n') ch = ' ';
  return s.size() > width ? s.substr(0, width) + "..." : s;
}

const Command kDemo{
    "demo", "Watermark and detect a text with the bundled model (the README's main job)",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("--prompt", a->prompt, "prompt text");
      app.add_option("--key", a->key,
                     "watermark key (the demo's own default key is for the demo only)");
      app.add_option("--tokens", a->tokens, "tokens to generate")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--seed", a->seed, "sampling seed");
      a->pepi.add(app);
      return [a] {
        const auto t0 = std::chrono::steady_clock::now();
        const auto path = resolve_model_path(a->model.model);
        auto model = a->model.load();
        auto tok = load_tokenizer(model->source());
        const ModelConfig& c = model->config();
        WatermarkConfig wc;
        wc.router_layer = -1;  // the spec's default: the last MoE layer
        Watermarker wm(*model, a->key, wc);
        const int32_t layer = wm.config().router_layer;
        const std::string& hash = wm.router_hash();

        const auto prompt = tok->encode(a->prompt, true, false);
        GenerateOptions go;
        go.max_new_tokens = a->tokens;
        go.stop_tokens = {c.eos_token_id};
        go.sampling = {1.0f, 0, 0.95f, a->seed};
        const auto plain = generate(*model, prompt, go);
        const auto marked = wm.generate(*model, prompt, go);

        fmt::print("epwa demo: model {} ({} layers, {} experts top-{}), router hash {}...\n",
                   path_to_utf8(model->source().filename()), c.num_layers, c.num_experts,
                   c.experts_per_token, hash.substr(0, 16));
        fmt::print("watermark: GSG, gamma 0.5, delta 2, router layer {}, key '{}'\n", layer,
                   a->key);
        // PEPI (black-box): experts predicted by the oracle from top-k log-probs (the local model
        // as the API unless --api-url); skipped with the reason when no oracle fits this model.
        std::shared_ptr<ExpertPredictor> pepi;
        std::string pepi_note;
        try {
          pepi = a->pepi.predictor(*model, path);
        } catch (const Error& e) {
          pepi_note = e.what();
        }
        fmt::print("prompt: {}\n\n", a->prompt);
        struct Row {
          std::string name;
          const std::vector<int32_t>* text;
        };
        fmt::print("{:<14} {:<7} {:>5} {:>5} {:>8} {:>10} {:>9}\n", "text", "method", "green", "n",
                   "z", "p-value", "detected");
        for (const Row& r : {Row{"watermarked", &marked}, Row{"unwatermarked", &plain}}) {
          std::vector<int32_t> ids(prompt);
          ids.insert(ids.end(), r.text->begin(), r.text->end());
          for (const auto& [method, sample] : {std::pair{DetectMethod::Full, int64_t{0}},
                                               std::pair{DetectMethod::Cspv, int64_t{60}},
                                               std::pair{DetectMethod::Pepi, int64_t{0}}}) {
            if (method == DetectMethod::Pepi && !pepi) continue;
            DetectOptions opt;
            opt.method = method;
            opt.sample = sample;
            Detector det(wm.lists(), opt);
            if (method == DetectMethod::Pepi) det.set_expert_predictor(pepi);
            const DetectionResult res =
                detect_tokens(*model, det, ids, static_cast<int64_t>(prompt.size()), layer);
            fmt::print("{:<14} {:<7} {:>5} {:>5} {:>8.2f} {:>10.2e} {:>9}\n", r.name, res.method,
                       res.g, res.n, res.z, res.p_value, res.detected ? "yes" : "no");
          }
        }
        if (!pepi) fmt::print("pepi: skipped ({})\n", pepi_note);
        fmt::print("\nwatermarked:   {}\n", one_line(tok->decode(marked, true), 160));
        fmt::print("unwatermarked: {}\n", one_line(tok->decode(plain, true), 160));
        fmt::print("\n({:.1f} s)\n",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
