// The bench library on a tiny random model: finite positive speeds, the JSON fields, and the active
// bytes of a generated token against a hand count.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "epwa/bench.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/load_options.hpp"
#include "epwa/membw.hpp"
#include "fixture.hpp"

using namespace epwa;

namespace {

BenchOptions small_options() {
  BenchOptions o;
  o.prompt_lengths = {8};
  o.gen_lengths = {4};
  o.repetitions = 2;
  o.probe_bytes = uint64_t{8} << 20;
  o.probe_passes = 2;
  return o;
}

void expect_positive(const BenchRow& row) {
  ASSERT_EQ(row.seconds.size(), 2u) << row.test;
  for (double s : row.seconds) EXPECT_TRUE(std::isfinite(s) && s > 0) << row.test;
  EXPECT_TRUE(std::isfinite(row.tokens_per_s) && row.tokens_per_s > 0) << row.test;
  EXPECT_TRUE(std::isfinite(row.stddev) && row.stddev >= 0) << row.test;
}

}  // namespace

TEST(Bench, TinyModelRowsAreFinitePositive) {
  auto m = Model::load(bench_test::tiny_f16());
  BenchOptions o = small_options();
  o.watermark = WatermarkMode::GSG;
  o.detect = true;
  const BenchReport r = run_bench(*m, o);
  // With a watermark, tg runs plain and watermarked (alternating repetitions): two rows.
  ASSERT_EQ(r.rows.size(), 4u);
  EXPECT_EQ(r.rows[0].test, "pp8");
  EXPECT_EQ(r.rows[1].test, "tg4");
  EXPECT_EQ(r.rows[1].watermark, "none");
  EXPECT_EQ(r.rows[2].test, "tg4");
  EXPECT_EQ(r.rows[2].watermark, "gsg");
  EXPECT_EQ(r.rows[3].test, "det8");
  EXPECT_EQ(r.rows[3].kind, "detect");
  for (const BenchRow& row : r.rows) expect_positive(row);
  EXPECT_EQ(r.rows[1].vs_plain, 0.0);
  EXPECT_NEAR(r.rows[2].vs_plain, r.rows[2].tokens_per_s / r.rows[1].tokens_per_s, 1e-12);
  // Only generation has a bandwidth figure: active bytes x tokens/s.
  const BenchRow& tg = r.rows[1];
  EXPECT_NEAR(tg.effective_gb_per_s, r.active.total() * tg.tokens_per_s * 1e-9,
              1e-9 * tg.effective_gb_per_s);
  EXPECT_NEAR(tg.bandwidth_ratio, tg.effective_gb_per_s / r.probe.gb_per_s, 1e-12);
  EXPECT_EQ(r.rows[0].effective_gb_per_s, 0.0);
  EXPECT_GT(r.probe.gb_per_s, 0.0);
  EXPECT_GE(r.probe.gb_per_s, r.probe.mean_gb_per_s);
  EXPECT_EQ(r.watermark, "gsg");
  EXPECT_EQ(r.router_layer, m->config().num_layers - 1);  // the spec's default: the last layer
  EXPECT_EQ(r.model_type, "F16");
  EXPECT_EQ(r.params, m->config().parameter_count());

  const std::string md = render_bench_markdown(r);
  EXPECT_NE(md.find("| tg4 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| tg4 +gsg ("), std::string::npos) << md;
  EXPECT_NE(md.find("| det8 |"), std::string::npos) << md;
  EXPECT_NE(md.find("memory bandwidth probe:"), std::string::npos) << md;

  const nlohmann::json j = bench_to_json(r);
  for (const char* k :
       {"model_file", "model_type", "file_bytes", "weight_bytes", "params", "threads", "cpu",
        "kernels", "commit", "watermark", "active_bytes", "memory_bandwidth", "tests"})
    EXPECT_TRUE(j.contains(k)) << k;
  for (const char* k : {"attention", "router", "experts", "head", "embedding_row", "total"})
    EXPECT_TRUE(j["active_bytes"].contains(k)) << k;
  for (const char* k : {"gb_per_s", "mean_gb_per_s", "bytes", "threads", "passes", "method"})
    EXPECT_TRUE(j["memory_bandwidth"].contains(k)) << k;
  ASSERT_EQ(j["tests"].size(), 4u);
  for (const auto& t : j["tests"])
    for (const char* k : {"test", "kind", "tokens", "seconds", "tokens_per_s", "stddev",
                          "watermark", "effective_gb_per_s", "bandwidth_ratio", "vs_plain"})
      EXPECT_TRUE(t.contains(k)) << k;
  EXPECT_EQ(j["tests"][1]["watermark"], "none");
  EXPECT_EQ(j["tests"][2]["watermark"], "gsg");
  EXPECT_EQ(j["active_bytes"]["total"].get<uint64_t>(), r.active.total());
  EXPECT_EQ(j["router_layer"].get<int32_t>(), r.router_layer);
}

TEST(Bench, RouterLayerChoosesTheWatermarkLayer) {
  auto m = Model::load(bench_test::tiny_f16());
  BenchOptions o = small_options();
  o.watermark = WatermarkMode::GSG;
  o.detect = true;
  o.router_layer = 0;
  const BenchReport r = run_bench(*m, o);
  EXPECT_EQ(r.router_layer, 0);
  ASSERT_EQ(r.rows.size(), 4u);
  for (const BenchRow& row : r.rows) expect_positive(row);
  EXPECT_NE(render_bench_markdown(r).find("router layer 0"), std::string::npos);
  o.router_layer = m->config().num_layers;
  try {
    (void)run_bench(*m, o);
    FAIL() << "an out-of-range router layer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
}

TEST(Bench, ActiveBytesMatchHandCount) {
  // F16 matrices and embedding, f32 routers (the GGUF writer keeps routers and norms in f32).
  auto m = Model::load(bench_test::tiny_f16());
  const ModelConfig& c = m->config();
  const uint64_t D = c.hidden_size, V = c.vocab_size, I = c.expert_intermediate_size,
                 E = c.num_experts, k = c.experts_per_token, L = c.num_layers,
                 q = uint64_t(c.num_heads) * c.head_dim, kv = uint64_t(c.num_kv_heads) * c.head_dim;
  const ActiveBytes a = active_bytes_per_token(*m);
  EXPECT_EQ(a.attention, L * (q * D + 2 * kv * D + D * q) * 2);
  EXPECT_EQ(a.router, L * E * D * 4);
  EXPECT_EQ(a.experts, L * k * 3 * D * I * 2);
  EXPECT_EQ(a.head, V * D * 2);
  EXPECT_EQ(a.embedding_row, D * 2);
  EXPECT_EQ(a.ffn, 0u);  // Mixtral: no shared expert, no dense layer
  EXPECT_EQ(a.total(), a.attention + a.router + a.experts + a.head + a.embedding_row);
}

TEST(Bench, ActiveBytesOfQ4_0) {
  auto f16 = Model::load(bench_test::tiny_f16());
  GgufExportOptions o;
  o.matrix_type = DType::Q4_0;
  const auto path = bench_test::temp_dir() / "tiny-q4_0.gguf";
  save_model_gguf(*f16, o, path);
  auto m = Model::load(path);
  const ModelConfig& c = m->config();
  const uint64_t D = c.hidden_size, I = c.expert_intermediate_size, k = c.experts_per_token,
                 L = c.num_layers;
  const ActiveBytes a = active_bytes_per_token(*m);
  EXPECT_EQ(a.experts, L * k * 3 * (D * I / 32 * 18));  // 18 bytes per 32 weights
  EXPECT_EQ(a.embedding_row, D / 32 * 18);
  BenchOptions bo = small_options();
  bo.prompt_lengths = {};
  bo.repetitions = 1;
  const BenchReport r = run_bench(*m, bo);
  EXPECT_EQ(r.model_type, "Q4_0");
  ASSERT_EQ(r.rows.size(), 1u);
  EXPECT_EQ(r.rows[0].stddev, 0.0);  // one repetition
}

// -b 1,3: one batched row per generated length (S > 1), counting the tokens of all sequences.
TEST(Bench, SequencesAddBatchedGenerationRows) {
  auto m = Model::load(bench_test::tiny_f16());
  BenchOptions o = small_options();
  o.sequences = {1, 3};
  const BenchReport r = run_bench(*m, o);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[1].test, "tg4");
  EXPECT_EQ(r.rows[2].test, "tg4x3");
  EXPECT_EQ(r.rows[2].kind, "tg-batch");
  EXPECT_EQ(r.rows[2].tokens, 12);
  expect_positive(r.rows[2]);
  EXPECT_NEAR(r.rows[2].tokens_per_s, (12 / r.rows[2].seconds[0] + 12 / r.rows[2].seconds[1]) / 2,
              1e-9 * r.rows[2].tokens_per_s);
}

TEST(Bench, InvalidOptionsThrow) {
  auto m = Model::load(bench_test::tiny_f16());
  BenchOptions o = small_options();
  o.repetitions = 0;
  EXPECT_THROW(run_bench(*m, o), Error);
  o = small_options();
  o.prompt_lengths = {8, 0};
  EXPECT_THROW(run_bench(*m, o), Error);
  o = small_options();
  o.prompt_lengths.clear();
  o.gen_lengths.clear();
  EXPECT_THROW(run_bench(*m, o), Error);
  o = small_options();
  o.sequences = {0};
  EXPECT_THROW(run_bench(*m, o), Error);
}

TEST(Bench, MeanStddev) {
  auto [m1, s1] = mean_stddev({2.0, 4.0, 6.0});
  EXPECT_DOUBLE_EQ(m1, 4.0);
  EXPECT_DOUBLE_EQ(s1, 2.0);  // sample standard deviation
  auto [m2, s2] = mean_stddev({5.0});
  EXPECT_DOUBLE_EQ(m2, 5.0);
  EXPECT_DOUBLE_EQ(s2, 0.0);
}

TEST(Bench, MemoryProbe) {
  const MemBandwidth b = measure_memory_bandwidth(uint64_t{16} << 20, 2, 2);
  EXPECT_GT(b.gb_per_s, 0.0);
  EXPECT_TRUE(std::isfinite(b.gb_per_s));
  EXPECT_GE(b.bytes, uint64_t{15} << 20);
  EXPECT_EQ(b.passes, 2);
  EXPECT_EQ(b.threads, 2);
  EXPECT_THROW(measure_memory_bandwidth(uint64_t{16} << 20, 2, 0), Error);
}

TEST(Bench, FileTypeNames) {
  EXPECT_EQ(llama_file_type_name(2), "Q4_0");
  EXPECT_EQ(llama_file_type_name(7), "Q8_0");
  EXPECT_EQ(llama_file_type_name(15), "Q4_K - Medium");
  EXPECT_EQ(llama_file_type_name(1), "F16");
  EXPECT_EQ(llama_file_type_name(999), "unknown");
}
