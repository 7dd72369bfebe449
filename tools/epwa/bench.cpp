// epwa bench: llama-bench-like speed table (prompt, generation, detection, bandwidth; issue 9).
#include "epwa/bench.hpp"

#include <fmt/core.h>

#include <charconv>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "command.hpp"
#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa_git_describe.hpp"  // generated at build time (cmake/git_describe.cmake)

namespace epwa::cli {
namespace {

struct Args {
  ModelArgs model;
  std::string prompts = "64,512", gens = "32,128", sequences, watermark = "none",
              key = "epwa-bench-key";
  int32_t reps = 3, threads = 0, router_layer = -1;
  bool detect = false, json = false, no_warmup = false;
  double probe_mib = 1024;
};

// "64,512" -> {64, 512}; "0" -> {} (the test kind is skipped, as in llama-bench).
std::vector<int32_t> parse_lengths(const std::string& s, const char* flag) {
  std::vector<int32_t> out;
  size_t pos = 0;
  for (;;) {
    const size_t end = std::min(s.find(',', pos), s.size());
    const std::string item = s.substr(pos, end - pos);
    int32_t v = 0;
    const auto r = std::from_chars(item.data(), item.data() + item.size(), v);
    check(!item.empty() && r.ec == std::errc() && r.ptr == item.data() + item.size() && v >= 0,
          std::string(flag) + ": invalid length '" + item + "' in '" + s +
              "' (expected a comma-separated list of positive integers)");
    out.push_back(v);
    if (end == s.size()) break;
    pos = end + 1;
  }
  if (out.size() == 1 && out[0] == 0) return {};
  for (int32_t v : out)
    check(v > 0, std::string(flag) + ": length 0 in '" + s + "' (use 0 alone to skip)");
  return out;
}

const Command kBench{
    "bench",
    "Speed table: prompt/generation/detection tokens/s and memory bandwidth (llama-bench-like)",
    [](CLI::App& app) {
      auto a = std::make_shared<Args>();
      a->model.add(app);
      app.add_option("-p,--n-prompt", a->prompts, "prompt lengths, comma-separated (0 = none)");
      app.add_option("-n,--n-gen", a->gens, "generated lengths, comma-separated (0 = none)");
      app.add_option("-b,--sequences", a->sequences,
                     "sequence counts, comma-separated: each S > 1 adds tgNxS tests (S sequences "
                     "decoded together; tokens/s over all of them)");
      app.add_option("-r,--repetitions", a->reps, "repetitions of each test");
      add_threads_option(app, a->threads);
      app.add_option("--watermark", a->watermark,
                     "gsg or ewp: each generation test also runs watermarked, alternating with "
                     "the plain run (overhead = the ratio); none (default)")
          ->check(CLI::IsMember({"gsg", "ewp", "none"}));
      app.add_option("--key", a->key, "watermark key (default: a fixed bench key)");
      app.add_flag("--detect", a->detect, "add gray-box detection tests over each prompt length");
      app.add_option(
          "--router-layer", a->router_layer,
          "watermark layer of the watermarked and detection tests (-1 = last MoE layer)");
      app.add_flag("--json", a->json, "print JSON instead of the table");
      app.add_flag("--no-warmup", a->no_warmup, "skip the untimed warm-up run of each test");
      app.add_option("--probe-mib", a->probe_mib, "memory bandwidth probe buffer in MiB (>= 1)");
      return [a] {
        BenchOptions o;
        o.prompt_lengths = parse_lengths(a->prompts, "-p");
        o.gen_lengths = parse_lengths(a->gens, "-n");
        if (!a->sequences.empty()) o.sequences = parse_lengths(a->sequences, "-b");
        check(a->reps >= 1, "-r: repetitions must be at least 1, got " + std::to_string(a->reps));
        check(a->probe_mib >= 1 && a->probe_mib <= 1 << 20, "--probe-mib: must be in [1, 1048576]");
        o.repetitions = a->reps;
        o.warmup = !a->no_warmup;
        o.detect = a->detect;
        o.key = a->key;
        o.router_layer = a->router_layer;
        if (a->watermark != "none") o.watermark = watermark_mode_from_name(a->watermark);
        o.probe_bytes = static_cast<uint64_t>(a->probe_mib * 1048576.0);
        o.validate();
        start_thread_pool(a->threads);
        a->model.json_stats = a->json;
        auto m = a->model.load();
        if (!a->model.quiet && !a->json)
          o.progress = [](const std::string& s) { fmt::print(stderr, "bench: {}\n", s); };
        BenchReport r = run_bench(*m, o);
        r.commit = EPWA_GIT_DESCRIBE;
        if (a->json) {
          nlohmann::json j = bench_to_json(r);
          j["load"] = a->model.load_json();
          fmt::print("{}\n", j.dump(2));
        } else {
          fmt::print("{}", render_bench_markdown(r));
        }
        return 0;
      };
    }};

}  // namespace
}  // namespace epwa::cli
