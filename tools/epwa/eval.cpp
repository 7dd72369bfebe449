// epwa eval: the evaluation pipeline (issue 8, docs/EVAL.md) -> DIR/results.json and
// DIR/report.html.
#include "epwa/eval.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/files.hpp"
#include "epwa/platform.hpp"

namespace epwa::cli {
namespace {

// The commit of the source tree (empty when git is unavailable).
std::string source_commit() {
  const std::string cmd = std::string("git -C '") + EPWA_SOURCE_DIR +
                          "' describe --always --dirty --abbrev=40 2>/dev/null";
  std::string out;
  if (FILE* p = popen(cmd.c_str(), "r")) {
    char buf[128];
    while (fgets(buf, sizeof buf, p)) out += buf;
    pclose(p);
  }
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

struct Args {
  ModelArgs model;
  eval::EvalOptions o;
  std::string out = "eval-out";
  std::string deltas, rates, frontier, lengths;
  std::string oracle;
  bool no_pepi = false;
  bool report_only = false;
};

const Command kEval{
    "eval", "Evaluate the watermark: detection, quality, attacks -> results.json + report.html",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      const std::filesystem::path data = path_from_utf8(EPWA_SOURCE_DIR) / "data" / "heldout";
      a->o.prompts = data / "prompts.txt";
      a->o.human = data / "heldout.txt";
      a->model.add(app);
      app.add_option("--key", a->o.key, "watermark key (default: epwa-eval)");
      app.add_option("--keys", a->o.keys,
                     "a keyring of M keys derived from --key, a key per text (KR-v1), detection "
                     "over all M with the corrected threshold (default 1)")
          ->check(whole_number(1, 1024));
      app.add_option("--context-buckets", a->o.context_buckets,
                     "CTX-v1: lists keyed by the expert and a bucket of the previous token (H in "
                     "[2, 65536]; default 0 = GL-v1)")
          ->check(CLI::Range(0, 65536));
      add_path_option(app, "--prompts", a->o.prompts, "prompts, one a line")
          ->check(existing_file());
      add_path_option(app, "--human", a->o.human, "human passages, one a line")
          ->check(existing_file());
      app.add_option("--n", a->o.n, "texts per mode (and unwatermarked)")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--n-human", a->o.n_human, "human passages (default: --n)");
      CLI::Option* tokens = app.add_option("--tokens", a->o.tokens, "new tokens per text")
                                ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--gamma", a->o.gamma, "green-list fraction")
          ->check(real_number({.lo = 0, .hi = 1, .lo_open = true, .hi_open = true}));
      app.add_option("--delta", a->o.delta, "watermark bias");
      app.add_option("--deltas", a->deltas, "extra GSG deltas for perplexity vs delta, e.g. 1,4");
      app.add_option("--temperature", a->o.temperature, "sampling temperature")
          ->check(real_number({.lo = 0}));
      app.add_option("--top-p", a->o.top_p, "nucleus mass")
          ->check(real_number({.lo = 0, .hi = 1, .lo_open = true}));
      app.add_option("--seed", a->o.seed, "first sampling seed (text i uses seed + i)");
      app.add_option("--cspv-sample", a->o.cspv_sample, "CSPV sample size")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--attack-rates", a->rates, "edit rates (default 0.05,0.1,0.2,0.3)");
      app.add_option("--attack-texts", a->o.attack_texts,
                     "positives attacked per mode (default: all)");
      app.add_option("--attack-top-k", a->o.top_k_attack, "model top-k for fluent edits")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--crop-window", a->o.crop_window, "tokens kept by span cropping")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--bootstrap", a->o.bootstrap, "bootstrap resamples")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--cross-texts", a->o.cross_texts,
                     "GSG texts per precision for cross-precision (default: all)")
          ->check(real_number({.lo = 0}));
      app.add_option("--delta-texts", a->o.delta_texts,
                     "texts per extra delta of --deltas (default: --n)")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--oracle", a->oracle,
                     "PEPI oracle (default: MODEL.oracle when it exists, e.g. "
                     "models/epwa-tiny-moe.oracle)")
          ->check(existing_file());
      app.add_flag("--no-pepi", a->no_pepi, "skip PEPI even when an oracle is found");
      app.add_flag("--exp", a->o.exp,
                   "also the distortion-free exp mode: its texts, quality and detection (scheme "
                   "exp) against the same negatives");
      app.add_option("--frontier", a->frontier,
                     "measure only the strength/quality frontier of these settings, e.g. "
                     "gsg:1,gsg:2,ewp:2,exp (docs/EVAL.md)");
      app.add_option("--frontier-entropy", a->o.frontier_entropy,
                     "with --frontier: also entropy-aware detection and selective bias at this "
                     "entropy threshold (nats)")
          ->check(CLI::NonNegativeNumber);
      app.add_option("--frontier-lengths", a->lengths,
                     "with --frontier: text lengths scored (default 50,100,200,400; --tokens "
                     "defaults to the longest)");
      app.add_option("--frontier-attacks", a->o.frontier_attacks,
                     "with --frontier: robustness of every setting on its first N texts at "
                     "min(200, --tokens) tokens: substitution, deletion (--attack-rates) and "
                     "4-bit generation (unless --no-cross-precision)")
          ->check(CLI::NonNegativeNumber);
      app.add_option("--out", a->out, "output folder");
      app.add_flag("--report-only", a->report_only,
                   "only write OUT/report.html again from OUT/results.json (e.g. after an update)");
      bool* cross = &a->o.cross_precision;
      app.add_flag_callback(
          "--no-cross-precision", [cross] { *cross = false; }, "skip 4-bit/8-bit loads");
      return [a, tokens] {
        if (a->report_only) {
          const std::filesystem::path dir = path_from_utf8(a->out);
          const auto r = nlohmann::json::parse(read_input_file(dir / "results.json", "results"),
                                               nullptr, false);
          check(!r.is_discarded() && r.is_object(),
                "eval: '" + path_to_utf8(dir / "results.json") + "' is not a results document");
          const std::string html = eval::render_report(r);
          write_via_temp(dir / "report.html", [&](const std::filesystem::path& tmp) {
            std::ofstream f(tmp, std::ios::binary);
            f << html;
            check(f.good(), "eval: cannot write '" + path_to_utf8(tmp) + "'");
          });
          std::cerr << "[eval] wrote " << path_to_utf8(dir / "report.html") << "\n";
          return 0;
        }
        const bool tokens_given = tokens->count() > 0;
        a->o.model_path = resolve_model_path(a->model.model);
        if (!a->no_pepi) {
          if (!a->oracle.empty()) {
            a->o.oracle = path_from_utf8(a->oracle);
          } else {  // the oracle shipped beside the model (folder name + ".oracle")
            std::filesystem::path m = a->o.model_path;
            if (!m.has_filename()) m = m.parent_path();
            std::filesystem::path def = m;
            def += ".oracle";
            if (std::filesystem::is_regular_file(def)) a->o.oracle = def;
          }
        }
        if (!a->deltas.empty())
          for (float d : parse_float_list(a->deltas))
            a->o.delta_grid.push_back(std::round(d * 1e6) / 1e6);
        if (!a->rates.empty()) {
          a->o.attack_rates.clear();
          for (float r : parse_float_list(a->rates))
            a->o.attack_rates.push_back(std::round(r * 1e6) / 1e6);
        }
        if (!a->frontier.empty()) {
          a->o.frontier = eval::parse_frontier(a->frontier);
          if (!a->lengths.empty()) {
            a->o.frontier_lengths.clear();
            for (float l : parse_float_list(a->lengths)) {
              check(l >= 1 && l == std::floor(l),
                    "eval: --frontier-lengths takes whole numbers of tokens");
              a->o.frontier_lengths.push_back(static_cast<int32_t>(l));
            }
          }
          if (!tokens_given)
            a->o.tokens =
                *std::max_element(a->o.frontier_lengths.begin(), a->o.frontier_lengths.end());
        } else {
          check(a->lengths.empty() && a->o.frontier_entropy == 0 && a->o.frontier_attacks == 0,
                "eval: --frontier-lengths, --frontier-entropy and --frontier-attacks need "
                "--frontier");
        }
        a->o.commit = source_commit();
        a->o.progress = [](const std::string& s) { std::cerr << "[eval] " << s << std::endl; };
        const auto r = eval::run_eval_to_dir(a->o, path_from_utf8(a->out));
        std::cerr << "[eval] wrote " << a->out << "/results.json and report.html\n";
        if (r.contains("frontier"))
          for (const auto& row : r["frontier"]["rows"])
            std::cout << row["setting"].get<std::string>()
                      << (row["entropy_detection"].get<double>() > 0 ? " (entropy-aware)" : "")
                      << ": perplexity " << row["ppl_mean"].get<double>() << ", TPR@z4 at "
                      << row["lengths"].back()["tokens"] << " tokens "
                      << row["lengths"].back()["tpr_z4"].get<double>() << "\n";
        for (const auto& d : r.value("detection", nlohmann::json::array()))
          if (d["method"] == "full" && d["prompt"] == true && d["repeats"] == false)
            std::cout << d["mode"].get<std::string>() << " full: TPR@z4 " << d.value("tpr_z4", 0.0)
                      << ", FPR@z4 " << d.value("fpr_z4", 0.0) << ", AUC " << d.value("auc", 0.0)
                      << "\n";
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
