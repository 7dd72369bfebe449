// run_bench: the timed tests of `epwa bench` (issue 9) and the active bytes of a generated token.
#include "epwa/bench.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <span>

#include "epwa/error.hpp"
#include "epwa/generate.hpp"
#include "epwa/gguf.hpp"
#include "epwa/load_options.hpp"
#include "epwa/ops.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_pool.hpp"

namespace epwa {

namespace {

using Clock = std::chrono::steady_clock;

uint64_t bytes_of(const TensorView& t) {
  return t.data.size();
}

// The pseudo-random prompt of a ppN / detN test: BOS, then ids from a splitmix64 stream.
std::vector<int32_t> bench_tokens(const ModelConfig& c, int32_t n, uint64_t seed) {
  std::vector<int32_t> out(static_cast<size_t>(n));
  uint64_t s = seed;
  for (int32_t i = 0; i < n; ++i) {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    out[i] = static_cast<int32_t>(z % static_cast<uint64_t>(c.vocab_size));
  }
  out[0] = c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size ? c.bos_token_id : 0;
  return out;
}

uint64_t path_bytes(const std::filesystem::path& p) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(p, ec)) return std::filesystem::file_size(p, ec);
  uint64_t total = 0;
  if (std::filesystem::is_directory(p, ec))
    for (const auto& e : std::filesystem::directory_iterator(p, ec))
      if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

std::string cpu_text() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "AVX2");
  add(f.fma, "FMA");
  add(f.f16c, "F16C");
  add(f.avx512f, "AVX512F");
  add(f.avx512bw, "AVX512BW");
  add(f.avx512vnni, "AVX512_VNNI");
  add(f.avxvnni, "AVX_VNNI");
  return s.empty() ? "baseline (no AVX2)" : s;
}

// The in-memory type a llama.cpp file type stores most of its weights in.
std::string main_type_of(uint32_t file_type) {
  switch (file_type) {
    case 0:
      return "f32";
    case 1:
      return "f16";
    case 2:
      return "q4_0";
    case 3:
      return "q4_1";
    case 7:
      return "q8_0";
    case 8:
      return "q5_0";
    case 9:
      return "q5_1";
    case 14:
    case 15:
      return "q4_k";
    case 16:
    case 17:
      return "q5_k";
    case 18:
      return "q6_k";
    case 38:
      return "mxfp4";
    case 32:
      return "bf16";
    default:
      return "";
  }
}

// llama.cpp's name of the GGUF's general.file_type when the loaded weights agree with it (not
// after a quantizing load, nor when a writer left the default 0), else the type holding most
// weight bytes, upper-case, as llama.cpp's "mostly X".
std::string model_type_of(const Model& m) {
  std::string best = "unknown";
  uint64_t most = 0;
  for (const auto& [name, b] : weight_bytes_by_type(m))
    if (b > most) most = b, best = name;
  if (m.format() == "gguf") {
    try {
      GgufFile f(m.source());
      if (auto ft = f.find_u32("general.file_type"); ft && main_type_of(*ft) == best)
        return llama_file_type_name(*ft);
    } catch (const Error&) {
      // Fall through to the in-memory types.
    }
  }
  std::transform(best.begin(), best.end(), best.begin(), [](char ch) {
    return static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  });
  return best;
}

}  // namespace

ActiveBytes active_bytes_per_token(const Model& m) {
  const ModelWeights& w = m.weights();
  const int64_t k = m.config().experts_per_token;
  ActiveBytes a;
  for (const LayerWeights& L : w.layers) {
    a.attention += bytes_of(L.wq) + bytes_of(L.wk) + bytes_of(L.wv) + bytes_of(L.wo);
    a.router += bytes_of(L.router);
    uint64_t all = 0;
    for (size_t e = 0; e < L.w1.size(); ++e)
      all += bytes_of(L.w1[e]) + bytes_of(L.w2[e]) + bytes_of(L.w3[e]);
    if (!L.w1.empty()) a.experts += static_cast<uint64_t>(k) * all / L.w1.size();
    for (const FfnWeights* f : {&L.shared, &L.dense})
      a.ffn += bytes_of(f->gate) + bytes_of(f->up) + bytes_of(f->down);
    a.ffn += bytes_of(L.shared_gate_inp);
  }
  a.head = bytes_of(w.head);
  a.embedding_row =
      w.embed.rows() > 0 ? bytes_of(w.embed) / static_cast<uint64_t>(w.embed.rows()) : 0;
  return a;
}

void BenchOptions::validate() const {
  check(repetitions >= 1,
        "bench: repetitions must be at least 1, got " + std::to_string(repetitions));
  check(!prompt_lengths.empty() || !gen_lengths.empty(), "bench: no test given (empty -p and -n)");
  auto check_list = [](const std::vector<int32_t>& v, const char* what) {
    for (int32_t n : v)
      check(n >= 1 && n <= 65536, std::string("bench: ") + what + " length " + std::to_string(n) +
                                      " out of range [1, 65536]");
  };
  check_list(prompt_lengths, "prompt");
  check_list(gen_lengths, "generation");
  for (int32_t n : sequences)
    check(n >= 1 && n <= 1024,
          "bench: sequence count " + std::to_string(n) + " out of range [1, 1024]");
  check(probe_passes >= 1, "bench: probe passes must be at least 1");
  check(probe_bytes >= (uint64_t{1} << 20), "bench: probe buffer must be at least 1 MiB");
  check(!key.empty() || (!watermark && !detect), "bench: empty watermark key");
}

BenchReport run_bench(Model& model, const BenchOptions& o) {
  o.validate();
  const ModelConfig& c = model.config();
  BenchReport r;
  r.model_file = path_to_utf8(model.source());
  r.model_type = model_type_of(model);
  r.file_bytes = path_bytes(model.source());
  for (const auto& [_, b] : weight_bytes_by_type(model)) r.weight_bytes += b;
  r.params = c.parameter_count();
  r.threads = ThreadPool::global().size();
  r.cpu = cpu_text();
  r.kernels = std::string(epwa::isa_name(epwa::best_isa()));
  r.watermark = o.watermark ? std::string(watermark_mode_name(*o.watermark)) : "none";
  r.key = (o.watermark || o.detect) ? o.key : "";
  r.active = active_bytes_per_token(model);

  auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  // Checked before the probe, so a bad layer fails at once.
  const int32_t layer = model_router_layer(model, o.router_layer);
  r.router_layer = layer;
  say("memory bandwidth probe");
  r.probe = measure_memory_bandwidth(o.probe_bytes, r.threads, o.probe_passes);

  // The green lists are built once, every expert's bitset up front, so no test times their
  // construction.
  std::shared_ptr<const GreenLists> lists;
  if (o.watermark || o.detect) {
    lists = make_green_lists(model, o.key, 0.5);
    for (int32_t e = 0; e < lists->num_experts(); ++e) (void)lists->bits(e);
  }

  // Times each of `runs` o.repetitions times after one warm-up each; with several, repetitions
  // alternate and rotate which goes first, so that drifts of the machine (other load, frequency)
  // fall on all alike. Fills each row's seconds, tokens/s and stddev (rows[k].tokens set).
  auto measure = [&](std::span<BenchRow> rows, std::span<const std::function<void()>> runs) {
    if (o.warmup)
      for (const auto& run : runs) run();
    const size_t m = runs.size();
    std::vector<std::vector<double>> tps(m);
    for (int32_t i = 0; i < o.repetitions; ++i)
      for (size_t k = 0; k < m; ++k) {
        const size_t which = (static_cast<size_t>(i) + k) % m;
        const auto t0 = Clock::now();
        runs[which]();
        const double s = std::chrono::duration<double>(Clock::now() - t0).count();
        rows[which].seconds.push_back(s);
        tps[which].push_back(rows[which].tokens / std::max(s, 1e-12));
      }
    for (size_t k = 0; k < m; ++k)
      std::tie(rows[k].tokens_per_s, rows[k].stddev) = mean_stddev(tps[k]);
  };
  auto timed = [&](const std::string& test, const std::string& kind, int32_t n,
                   std::function<void()> once) {
    say(test);
    BenchRow row;
    row.test = test, row.kind = kind, row.tokens = n;
    measure({&row, 1}, {&once, 1});
    r.rows.push_back(std::move(row));
  };

  for (int32_t n : o.prompt_lengths) {
    const auto tokens = bench_tokens(c, n, o.seed);
    timed("pp" + std::to_string(n), "pp", n, [&] {
      Context cache = model.make_context(n);
      model.forward(tokens, cache);
    });
  }

  std::optional<Watermarker> wm;
  if (o.watermark) {
    WatermarkConfig cfg;
    cfg.mode = *o.watermark;
    cfg.router_layer = layer;
    wm.emplace(model, lists, cfg);
  }
  const std::vector<int32_t> prompt = bench_tokens(c, 1, o.seed);  // BOS: N decode steps exactly
  auto finish_tg = [&](BenchRow& row) {
    row.effective_gb_per_s = static_cast<double>(r.active.total()) * row.tokens_per_s * 1e-9;
    row.bandwidth_ratio = r.probe.gb_per_s > 0 ? row.effective_gb_per_s / r.probe.gb_per_s : 0;
  };
  for (int32_t n : o.gen_lengths) {
    const std::string test = "tg" + std::to_string(n);
    auto gen = [&](bool watermarked) {
      GenerateOptions g;
      g.max_new_tokens = n;  // greedy, no stop token: always n forwards of one token
      const auto out = watermarked ? wm->generate(model, prompt, g) : generate(model, prompt, g);
      check(static_cast<int32_t>(out.size()) == n, "bench: generation stopped early");
    };
    if (!wm) {
      timed(test, "tg", n, [&] { gen(false); });
      finish_tg(r.rows.back());
      continue;
    }
    // Plain and watermarked in one measurement: the ratio is the watermark's cost.
    say(test + " plain and +" + r.watermark);
    BenchRow rows[2];
    const std::function<void()> runs[2] = {[&] { gen(false); }, [&] { gen(true); }};
    for (int32_t which = 0; which < 2; ++which) {
      BenchRow& row = rows[which];
      row.test = test, row.kind = "tg", row.tokens = n;
      row.watermark = which == 1 ? r.watermark : "none";
    }
    measure(rows, runs);
    for (BenchRow& row : rows) finish_tg(row);
    rows[1].vs_plain = rows[0].tokens_per_s > 0 ? rows[1].tokens_per_s / rows[0].tokens_per_s : 0;
    r.rows.push_back(std::move(rows[0]));
    r.rows.push_back(std::move(rows[1]));
  }

  // S sequences, each from its own first token, greedy: one batch of S tokens per step.
  for (int32_t n : o.gen_lengths)
    for (int32_t seqs : o.sequences) {
      if (seqs < 2) continue;  // tgN above
      const std::vector<int32_t> first = bench_tokens(c, seqs, o.seed);
      const int64_t v = c.vocab_size;
      timed("tg" + std::to_string(n) + "x" + std::to_string(seqs), "tg-batch", n * seqs, [&] {
        Context ctx(model, n, seqs);
        std::vector<BatchToken> batch(seqs);
        for (int32_t q = 0; q < seqs; ++q) batch[q] = {first[q], 0, q};
        for (int32_t step = 0; step < n; ++step) {
          const std::vector<float> logits = model.decode(batch, ctx);
          for (int32_t q = 0; q < seqs; ++q) {
            const float* row = logits.data() + q * v;
            batch[q] = {static_cast<int32_t>(std::max_element(row, row + v) - row), step + 1, q};
          }
        }
      });
    }

  if (o.detect) {
    const Detector det(lists, DetectOptions{});
    for (int32_t n : o.prompt_lengths) {
      if (n < 2) continue;  // nothing to score
      const auto tokens = bench_tokens(c, n, o.seed);
      timed("det" + std::to_string(n), "detect", n,
            [&] { (void)detect_tokens(model, det, tokens, 1, layer); });
    }
  }
  return r;
}

std::pair<double, double> mean_stddev(const std::vector<double>& v) {
  if (v.empty()) return {0.0, 0.0};
  double mean = 0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  if (v.size() < 2) return {mean, 0.0};
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  return {mean, std::sqrt(ss / static_cast<double>(v.size() - 1))};
}

}  // namespace epwa
