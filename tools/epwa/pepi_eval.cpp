// epwa pepi-eval: PEPI against the gray-box full method on the same texts. Positives: GSG texts
// generated from prompts; negatives: human passages and unwatermarked generations. Reports TPR
// at the z threshold, false positives, and how often the oracle's expert equals the router's.
#include <fmt/core.h>

#include <chrono>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/pepi.hpp"
#include "epwa/session.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string oracle, prompts = std::string(EPWA_SOURCE_DIR) + "/data/heldout/prompts.txt",
                      human = std::string(EPWA_SOURCE_DIR) + "/data/heldout/heldout.txt",
                      key = "epwa-eval", out_json;
  int32_t n = 50, tokens = 200;
  double gamma = 0.5, delta = 2.0, threshold = 4.0;
  float temperature = 0.8f, top_p = 0.95f;
  uint64_t seed = 1;
};

// The non-empty lines of an input file; none is an error (the sets cycle through them).
std::vector<std::string> read_set(const std::string& path, const std::string& flag) {
  std::vector<std::string> v = read_input_lines(path_from_utf8(path), flag + " file");
  check(!v.empty(), flag + " file '" + path + "' has no text");
  return v;
}

struct Tally {
  int64_t texts = 0, full_hits = 0, pepi_hits = 0, agree = 0, positions = 0;
  double full_z = 0, pepi_z = 0;
  nlohmann::json json(const char* name) const {
    const double n = std::max<int64_t>(texts, 1);
    return {{"set", name},
            {"texts", texts},
            {"full_detected", full_hits},
            {"pepi_detected", pepi_hits},
            {"full_rate", full_hits / n},
            {"pepi_rate", pepi_hits / n},
            {"mean_full_z", full_z / n},
            {"mean_pepi_z", pepi_z / n},
            {"oracle_agreement", positions ? static_cast<double>(agree) / positions : 0.0}};
  }
};

const Command kPepiEval{
    "pepi-eval", "Measure PEPI detection against the full method", [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("--oracle", a->oracle, "oracle file")->required();
      app.add_option("--prompts", a->prompts, "prompts, one a line");
      app.add_option("--human", a->human, "human passages (negatives), one a line");
      app.add_option("-n", a->n, "texts per set")->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--tokens", a->tokens, "new tokens per text")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--key", a->key);
      app.add_option("--gamma", a->gamma);
      app.add_option("--delta", a->delta);
      app.add_option("--threshold", a->threshold);
      app.add_option("--temperature", a->temperature);
      app.add_option("--top-p", a->top_p);
      app.add_option("--seed", a->seed);
      app.add_option("--json", a->out_json, "write the summary here");
      return [a] {
        const auto t0 = std::chrono::steady_clock::now();
        auto secs = [&] {
          return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        };
        const auto prompts = read_set(a->prompts, "--prompts"),
                   human = read_set(a->human, "--human");
        std::ofstream json_file;  // opened first: a bad path fails before the run, not after it
        if (!a->out_json.empty()) {
          check_output_not_input(
              path_from_utf8(a->out_json),
              {path_from_utf8(a->prompts), path_from_utf8(a->human), path_from_utf8(a->oracle)},
              "--json");
          json_file.open(path_from_utf8(a->out_json), std::ios::binary);
          check(json_file.good(), "--json '" + a->out_json + "' cannot be written");
        }
        const auto path = resolve_model_path(a->model.model);
        auto m = a->model.load();
        auto tok = load_tokenizer(path);
        auto oracle = std::make_shared<const Oracle>(Oracle::load(path_from_utf8(a->oracle)));
        oracle->check_router_hash(router_hash(*m));
        const int32_t layer = oracle->info().router_layer;
        auto lists = make_green_lists(*m, a->key, a->gamma);
        DetectOptions fo;
        fo.threshold = a->threshold;
        DetectOptions po = fo;
        po.method = DetectMethod::Pepi;
        Detector full(lists, fo), pepi(lists, po);
        const int32_t k = oracle->info().features.full ? 0 : oracle->info().features.k;
        auto predictor = std::make_shared<PepiPredictor>(
            oracle, std::make_shared<LocalDistributionSource>(*m, k));
        pepi.set_expert_predictor(predictor);
        WatermarkConfig wc;
        wc.gamma = a->gamma;
        wc.delta = a->delta;
        wc.router_layer = layer;
        Watermarker wm(*m, lists, wc);

        auto score = [&](Tally& t, const std::vector<int32_t>& seq, int64_t P) {
          const auto truth = router_records(*m, seq, layer);
          const auto guess = predictor->predict(seq, P);
          for (size_t p = static_cast<size_t>(std::max<int64_t>(P, 1)) - 1; p + 1 < seq.size();
               ++p) {
            t.agree += truth[p].expert == guess[p].expert;
            ++t.positions;
          }
          const DetectionResult rf = full.detect({seq, P, truth, {}});
          const DetectionResult rp = pepi.detect({seq, P, {}, {}});
          ++t.texts;
          t.full_hits += rf.detected;
          t.pepi_hits += rp.detected;
          t.full_z += rf.z;
          t.pepi_z += rp.z;
        };
        Tally pos, unmarked, people;
        for (int32_t i = 0; i < a->n; ++i) {
          const auto prompt =
              tok->encode(prompts[static_cast<size_t>(i) % prompts.size()], true, false);
          GenerateOptions go;
          go.max_new_tokens = a->tokens;
          go.sampling.temperature = a->temperature;
          go.sampling.top_p = a->top_p;
          go.sampling.seed = a->seed * 7919 + static_cast<uint64_t>(i);
          go.stop_tokens = {m->config().eos_token_id};
          for (int marked = 1; marked >= 0; --marked) {
            const auto out = marked ? wm.generate(*m, prompt, go) : generate(*m, prompt, go);
            std::vector<int32_t> seq = prompt;
            seq.insert(seq.end(), out.begin(), out.end());
            score(marked ? pos : unmarked, seq, static_cast<int64_t>(prompt.size()));
          }
          auto h = tok->encode(human[static_cast<size_t>(i) % human.size()], true, false);
          h.resize(std::min<size_t>(h.size(), static_cast<size_t>(a->tokens) + 1));
          if (h.size() > 11) score(people, h, 1);
          std::cerr << fmt::format(
              "pepi-eval: {}/{} (TPR full {}/{}, pepi {}/{}; FP pepi {}+{}) {:.0f} s\n", i + 1,
              a->n, pos.full_hits, pos.texts, pos.pepi_hits, pos.texts, unmarked.pepi_hits,
              people.pepi_hits, secs());
        }
        nlohmann::json j = {
            {"oracle", a->oracle},
            {"features", pepi_features_name(oracle->info().features)},
            {"router_layer", layer},
            {"oracle_heldout_accuracy", oracle->metrics().accuracy},
            {"gamma", a->gamma},
            {"delta", a->delta},
            {"tokens", a->tokens},
            {"threshold", a->threshold},
            {"temperature", a->temperature},
            {"top_p", a->top_p},
            {"sets",
             {pos.json("watermarked"), unmarked.json("unwatermarked"), people.json("human")}},
            {"seconds", secs()}};
        if (json_file.is_open()) {
          json_file << j.dump(2) << "\n";
          check(json_file.good(), "--json '" + a->out_json + "' could not be written");
        }
        std::cout << j.dump(2) << "\n";
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
