// epwa bench-load: the seven loading configurations, each loaded in fresh processes (this binary
// re-run with --child), with median load time, peak RSS, weight bytes and quality vs stored.
#include <fmt/core.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant_quality.hpp"
#include "eval_quant.hpp"
#include "progress.hpp"

namespace epwa::cli {
namespace {

struct Config {
  const char* name;
  const char* flags;
  const char* precision;  // which quality row applies
};
constexpr std::array<Config, 7> kConfigs{{{"standard", "--load standard", "stored"},
                                          {"fast", "--fast-loading", "4bit"},
                                          {"4-bit", "--load-in-4bit", "4bit"},
                                          {"8-bit", "--load-in-8bit", "8bit"},
                                          {"CPU", "--load standard --cpu", "stored"},
                                          {"4-bit+CPU", "--load-in-4bit --cpu", "4bit"},
                                          {"fast+CPU", "--fast-loading --cpu", "4bit"}}};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

nlohmann::json run_child(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  check(p != nullptr, "cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  check(rc == 0, "child load failed (exit " + std::to_string(rc) + "): " + cmd);
  return nlohmann::json::parse(out);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Args {
  ModelArgs model;
  int32_t runs = 5, lines = 20, max_tokens = 96;
  bool child = false, json = false, no_quality = false;
  std::string text = std::string(EPWA_SOURCE_DIR) + "/data/heldout/heldout.txt";
};

const Command kBenchLoad{
    "bench-load",
    "Load time, peak RSS, weight bytes and quality of the seven loading configurations",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("--runs", a->runs, "fresh processes per configuration (median reported)")
          ->check(real_number({.lo = 1, .hi = 50}));
      app.add_option("--text", a->text, "held-out text for the quality columns");
      app.add_option("--lines", a->lines, "held-out lines for the quality columns")
          ->check(real_number({.lo = 0, .lo_open = true}));
      app.add_option("--max-tokens", a->max_tokens, "tokens per line at most")
          ->check(real_number({.lo = 2, .hi = 4096}));
      app.add_flag("--no-quality", a->no_quality, "skip the quality columns");
      app.add_flag("--json", a->json, "print JSON");
      app.add_flag("--child", a->child, "internal: load once and print the figures as JSON")
          ->group("");
      return [a] {
        if (a->child) {
          a->model.json_stats = true;
          auto m = a->model.load();
          nlohmann::json j = a->model.load_json();
          j["peak_rss_bytes"] = peak_rss_bytes();
          std::cout << j.dump() << "\n";
          return 0;
        }
        namespace fs = std::filesystem;
        const fs::path self = fs::read_symlink("/proc/self/exe");
        const fs::path model = resolve_model_path(a->model.resolved().model.value_or(""));
        const fs::path cache =
            fs::temp_directory_path() / fmt::format("epwa-bench-cache-{}", ::getpid());
        fs::create_directories(cache);
        // Variables would override nothing (every child gets explicit flags) but are cleared for
        // clarity.
        const std::string env =
            "env -u EPW_LOAD_IN_4BIT -u EPW_LOAD_IN_8BIT -u EPW_FAST_LOADING -u EPW_USE_CPU ";
        const std::string base = env + shell_quote(path_to_utf8(self)) +
                                 " bench-load --child --quiet --model " +
                                 shell_quote(path_to_utf8(model)) + " --cache-dir " +
                                 shell_quote(path_to_utf8(cache)) + " ";

        // Each configuration loads the model in a child process `runs` times: a progress line
        // counts the loads on a terminal (quiet with -q or when piped).
        TerminalProgress progress("bench-load", a->model.quiet);
        const int64_t loads = static_cast<int64_t>(kConfigs.size()) * a->runs;
        int64_t loaded = 0;
        std::map<std::string, QuantQuality> quality;
        if (!a->no_quality) {
          auto tok = load_tokenizer(model);
          const auto seqs =
              heldout_sequences(*tok, path_from_utf8(a->text), a->lines, a->max_tokens);
          auto ref = Model::load(model);
          for (const char* p : {"8bit", "4bit"}) {
            LoadOptions o;
            o.mode = load_mode_from_name(p);
            o.use_cache = false;
            auto m = Model::load(model, o);
            quality[p] = compare_models(*ref, *m, seqs);
          }
          quality["stored"] = compare_models(*ref, *ref, seqs);
        }

        nlohmann::json rows = nlohmann::json::array();
        if (!a->json)
          fmt::print("{:<10} {:>9} {:>9} {:>9} {:>10} {:>11} {:>8} {:>9} {:>7} {:>8}\n", "config",
                     "load s", "first s", "model s", "peak RSS", "weights", "ppl", "mean KL",
                     "top-1", "wm rtr");
        for (const Config& c : kConfigs) {
          std::vector<double> totals, models;
          nlohmann::json last, first;
          for (int32_t r = 0; r < a->runs; ++r) {
            last = run_child(base + c.flags);
            progress.update(++loaded, loads, " loads");
            if (r == 0) first = last;
            totals.push_back(last["load_time_statistics"]["total_s"]);
            models.push_back(last["load_time_statistics"]["model_s"]);
          }
          // Fast modes: the first run writes the cache; the median is over the cached runs.
          const bool fast = std::string(c.flags).find("fast") != std::string::npos;
          if (fast && totals.size() > 1) totals.erase(totals.begin()), models.erase(models.begin());
          nlohmann::json row{{"config", c.name},
                             {"flags", c.flags},
                             {"median_total_s", median(totals)},
                             {"median_model_s", median(models)},
                             {"first_total_s", first["load_time_statistics"]["total_s"]},
                             {"first_cache", first["cache"]},
                             {"cache", last["cache"]},
                             {"peak_rss_bytes", last["peak_rss_bytes"]},
                             {"weight_bytes", last["weight_bytes"]},
                             {"effective", last["effective"]},
                             {"router_hash", last["router_hash"]}};
          if (!a->no_quality) row["quality"] = quality_json(quality.at(c.precision));
          rows.push_back(row);
          if (!a->json) {
            progress.finish();  // the row below, not over the progress line
            const QuantQuality q = a->no_quality ? QuantQuality{} : quality.at(c.precision);
            fmt::print(
                "{:<10} {:>9.3f} {:>9.3f} {:>9.3f} {:>8.1f}MB {:>9.1f}MB {:>8.3f} {:>9.5f} "
                "{:>7.3f} {:>8.3f}\n",
                c.name, median(totals), first["load_time_statistics"]["total_s"].get<double>(),
                median(models), last["peak_rss_bytes"].get<double>() / 1e6,
                last["weight_bytes"].get<double>() / 1e6, q.perplexity, q.mean_kl, q.top1_agreement,
                q.watermark_layer_agreement);
          }
        }
        std::error_code ec;
        fs::remove_all(cache, ec);
        if (a->json) {
          std::cout << nlohmann::json{{"model", path_to_utf8(model)},
                                      {"runs", a->runs},
                                      {"rows", rows}}
                           .dump(2)
                    << "\n";
        } else {
          fmt::print(
              "{} runs per configuration, each a fresh process; load s = median total (fast: "
              "cached runs), "
              "first s = first run (fast: writes the cache); quality vs stored precision on {} "
              "lines of {}\n",
              a->runs, a->lines, a->text);
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
