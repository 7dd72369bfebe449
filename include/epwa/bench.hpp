// `epwa bench`: llama-bench-style speed tests of a loaded model (prompt processing, generation with
// or without the watermark, gray-box detection), the bytes a generated token reads, and the
// machine's memory bandwidth measured in the same run.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "epwa/membw.hpp"
#include "epwa/model.hpp"
#include "epwa/watermark.hpp"

namespace epwa {

// Weight bytes one generated token reads (sparse MoE reads only the selected experts), from the
// loaded tensors' types. Norms are left out (a few KB).
struct ActiveBytes {
  uint64_t attention = 0;  // wq + wk + wv + wo, all layers
  uint64_t router = 0;     // the routers, all layers
  uint64_t experts = 0;    // per layer: experts_per_token x the mean bytes of one expert (w1+w2+w3)
  uint64_t ffn = 0;        // shared experts (and their gates) and the FFNs of dense layers
  uint64_t head = 0;       // the output head (the embedding table when tied)
  uint64_t embedding_row = 0;  // one row of the embedding table
  uint64_t total() const { return attention + router + experts + ffn + head + embedding_row; }
};
ActiveBytes active_bytes_per_token(const Model& m);

struct BenchOptions {
  std::vector<int32_t> prompt_lengths{64, 512};  // one ppN test each (and detN with `detect`)
  std::vector<int32_t> gen_lengths{32, 128};     // one tgN test each
  // Each S > 1 adds a tgNxS test per generated length: S sequences decoded together (one batch
  // per step, Model::decode), N tokens each; its tokens/s counts all N x S tokens.
  std::vector<int32_t> sequences;
  int32_t repetitions = 3;
  bool warmup = true;  // one untimed run of each test first
  // With a watermark every tgN runs twice, plain and watermarked, repetitions alternating.
  std::optional<WatermarkMode> watermark;
  std::string key = "epwa-bench-key";
  bool detect = false;  // add detN tests (gray-box, full method, over an N-token text)
  // The watermark layer of the tgN (watermarked) and detN tests; -1 = the last MoE layer (the
  // spec's default). Detection stops after this layer's router, so an earlier one is cheaper.
  int32_t router_layer = -1;
  uint64_t seed = 1234;  // the prompt's pseudo-random token ids
  uint64_t probe_bytes = uint64_t{1} << 30;
  int32_t probe_passes = 3;
  // Receives a line before each test (progress on stderr in the CLI); may be empty.
  std::function<void(const std::string&)> progress;

  // Throws Error naming the first bad field (empty test lists are fine, but not all of them).
  void validate() const;
};

struct BenchRow {
  std::string test;                // "pp512", "tg128", "tg128x16", "det512"
  std::string kind;                // "pp", "tg", "tg-batch" (several sequences), "detect"
  int32_t tokens = 0;              // N
  std::vector<double> seconds;     // one per repetition
  std::string watermark = "none";  // tg: the watermark of this row ("none", "gsg", "ewp")
  double tokens_per_s = 0;         // mean over repetitions of N / seconds
  double stddev = 0;               // sample standard deviation of those (0 for one repetition)
  // tg only (0 elsewhere): active bytes x tokens/s, and its ratio to the probe's best pass.
  double effective_gb_per_s = 0;
  double bandwidth_ratio = 0;
  // Watermarked tg only: tokens/s over the plain tgN row of the same run (repetitions alternate
  // between the two, so both see the same machine state); 0 elsewhere.
  double vs_plain = 0;
};

struct BenchReport {
  std::string model_file;
  std::string
      model_type;  // llama.cpp's file-type name ("Q4_0", "Q4_K - Medium", ...) or stored types
  uint64_t file_bytes = 0;    // size on disk (a folder: its files)
  uint64_t weight_bytes = 0;  // every weight tensor as held in memory
  int64_t params = 0;
  int32_t threads = 0;
  std::string cpu;      // CPU features, e.g. "AVX2 FMA F16C"
  std::string kernels;  // the kernel ISA in use ("avx2", "scalar")
  std::string commit;
  std::string watermark = "none";
  std::string key;
  int32_t router_layer = 0;  // the watermark layer in use (resolved: never -1)
  ActiveBytes active;
  MemBandwidth probe;
  std::vector<BenchRow> rows;
};

// Runs the tests on `model` with the global thread pool (EPWA_THREADS sizes it) after the probe.
// report.commit is left empty for the caller. Throws Error on invalid options.
BenchReport run_bench(Model& model, const BenchOptions& o);

// The llama-bench-like markdown: a header block (model file, type, size, params, threads, CPU,
// commit, bandwidth probe, active bytes) and the table, each line ending in '\n'.
std::string render_bench_markdown(const BenchReport& r);
nlohmann::json bench_to_json(const BenchReport& r);

// The mean and sample standard deviation of `v` (0 for fewer than two values).
std::pair<double, double> mean_stddev(const std::vector<double>& v);
// llama.cpp's name of a GGUF general.file_type ("F16", "Q4_0", "Q4_K - Medium", ...); "unknown"
// else.
std::string llama_file_type_name(uint32_t file_type);

}  // namespace epwa
