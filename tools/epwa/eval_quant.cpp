// epwa eval-quant: quality of each loading mode against the stored precision on held-out text.
#include "eval_quant.hpp"

#include <fmt/core.h>

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant_quality.hpp"

namespace epwa::cli {

std::vector<std::vector<int32_t>> heldout_sequences(const Tokenizer& tok,
                                                    const std::filesystem::path& text,
                                                    int32_t lines, int32_t max_tokens) {
  std::ifstream in = open_input_file(text, "held-out text");
  std::vector<std::vector<int32_t>> out;
  std::string line;
  while (static_cast<int32_t>(out.size()) < lines && std::getline(in, line)) {
    if (line.empty()) continue;
    auto ids = tok.encode(line, true);
    if (static_cast<int32_t>(ids.size()) > max_tokens) ids.resize(max_tokens);
    if (ids.size() >= 2) out.push_back(std::move(ids));
  }
  check(!out.empty(), "no usable line in " + path_to_utf8(text));
  return out;
}

nlohmann::json quality_json(const QuantQuality& q) {
  return {{"positions", q.positions},
          {"perplexity", q.perplexity},
          {"ref_perplexity", q.ref_perplexity},
          {"mean_kl", q.mean_kl},
          {"top1_agreement", q.top1_agreement},
          {"router_agreement", q.router_agreement},
          {"watermark_layer_agreement", q.watermark_layer_agreement}};
}

namespace {

struct Args {
  ModelArgs model;
  std::string text = std::string(EPWA_SOURCE_DIR) + "/data/heldout/heldout.txt";
  int32_t lines = 40, max_tokens = 128, layer = -1;
  std::string modes = "8bit,4bit";
  bool json = false;
};

const Command kEvalQuant{
    "eval-quant", "Compare quantized loading modes with the stored precision on held-out text",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("--text", a->text, "held-out text, one paragraph a line");
      app.add_option("--lines", a->lines, "lines to use")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--max-tokens", a->max_tokens, "tokens per line at most")
          ->check(real_number({.lo = 2, .hi = 4096}));
      app.add_option("--modes", a->modes, "comma-separated modes: 8bit, 4bit (fast = 4bit)");
      app.add_option("--router-layer", a->layer,
                     "watermark MoE layer (negative: from the last, -1 = last)");
      app.add_flag("--json", a->json, "print JSON");
      return [a] {
        a->model.json_stats = a->json;
        a->model.load_mode = "standard";  // the reference: stored precision
        auto ref = a->model.load();
        const auto seqs = heldout_sequences(a->model.tokenizer(), path_from_utf8(a->text), a->lines,
                                            a->max_tokens);
        const std::filesystem::path path = ref->source();
        nlohmann::json out{{"model", path_to_utf8(path)},
                           {"text", a->text},
                           {"sequences", seqs.size()},
                           {"modes", nlohmann::json::object()}};
        if (!a->json)
          fmt::print("{:<6} {:>9} {:>9} {:>10} {:>7} {:>9}  {}\n", "mode", "ppl", "ref ppl",
                     "mean KL", "top-1", "wm layer", "router agreement per layer");
        size_t pos = 0;
        while (pos <= a->modes.size()) {
          size_t end = a->modes.find(',', pos);
          if (end == std::string::npos) end = a->modes.size();
          const std::string name = a->modes.substr(pos, end - pos);
          pos = end + 1;
          LoadOptions o;
          o.mode = load_mode_from_name(name == "fast" ? "4bit" : name);
          o.use_cache = false;
          auto m = Model::load(path, o);
          const QuantQuality q = compare_models(*ref, *m, seqs, a->layer);
          out["modes"][name] = quality_json(q);
          if (!a->json) {
            std::string per;
            for (double r : q.router_agreement) per += fmt::format("{:.3f} ", r);
            fmt::print("{:<6} {:>9.3f} {:>9.3f} {:>10.5f} {:>7.3f} {:>9.3f}  {}\n", name,
                       q.perplexity, q.ref_perplexity, q.mean_kl, q.top1_agreement,
                       q.watermark_layer_agreement, per);
          }
        }
        if (a->json) {
          out["load"] = a->model.load_json();
          std::cout << out.dump(2) << "\n";
        } else {
          fmt::print("{} sequences, {} scored positions, from {}\n", seqs.size(),
                     out["modes"].begin().value()["positions"].get<int64_t>(), a->text);
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
