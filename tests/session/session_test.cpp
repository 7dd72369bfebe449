// The glue of include/epwa/session.hpp on the bundled model: router hash across formats, router
// records, the watermarking generator and detection.
#include "epwa/session.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "bundled.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"

namespace fs = std::filesystem;

namespace {

// Pinned so that a change of the weights or of IRSH-v1 shows up (docs/SPEC.md).
std::string bundled_hash() {
  return epwa::router_hash(bundled::model());
}

TEST(RouterHash, IsHexAndStable) {
  const std::string h = bundled_hash();
  ASSERT_EQ(h.size(), 64u);
  EXPECT_EQ(h.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(h, epwa::router_hash(bundled::model()));
}

// The hash is a property of the checkpoint, not of the file format or the matrix precision.
// (8-bit and 4-bit loads: to be added with the load modes, issue 3.)
class HashAcrossFormats : public ::testing::TestWithParam<epwa::DType> {};

TEST_P(HashAcrossFormats, GgufConversionKeepsTheHash) {
  const fs::path out = fs::temp_directory_path() /
                       ("epwa-session-" + std::string(epwa::dtype_name(GetParam())) + ".gguf");
  epwa::GgufExportOptions o;
  o.matrix_type = GetParam();
  epwa::convert_hf_to_gguf(bundled::model_dir(), out, o);
  std::string h;
  {
    auto m = epwa::Model::load(out);
    EXPECT_EQ(m->format(), "gguf");
    h = epwa::router_hash(*m);
  }
  fs::remove(out);
  EXPECT_EQ(h, bundled_hash());
}

INSTANTIATE_TEST_SUITE_P(Types, HashAcrossFormats,
                         ::testing::Values(epwa::DType::F32, epwa::DType::F16, epwa::DType::BF16),
                         [](const auto& info) {
                           return std::string(epwa::dtype_name(info.param));
                         });

struct Recorder : epwa::RouterObserver {
  std::vector<epwa::RouterObservation> seen;
  std::vector<std::vector<float>> logits;
  void observe(const epwa::RouterObservation& o) override {
    seen.push_back(o);
    logits.emplace_back(o.logits.begin(), o.logits.end());
  }
};

std::vector<int32_t> encode(const std::string& text) {
  return bundled::tokenizer().encode(text, true, false);
}

TEST(RouterRecords, MatchTheFullForwardAtEveryLayer) {
  epwa::Model& m = bundled::model();
  const auto tokens = encode("The old man looked at the sea and said nothing for a long while.");
  ASSERT_GT(tokens.size(), 8u);
  Recorder full;
  auto cache = m.make_context();
  epwa::ForwardOptions fo;
  fo.observer = &full;
  m.forward(tokens, cache, fo);
  const int32_t layers = m.config().num_layers;
  for (int32_t layer : {0, layers / 2, layers - 1}) {
    const auto rec = epwa::router_records(m, tokens, layer);
    ASSERT_EQ(rec.size(), tokens.size());
    for (size_t i = 0; i < full.seen.size(); ++i) {
      if (full.seen[i].layer != layer) continue;
      const auto want = epwa::top1_expert(full.logits[i]);
      const auto p = static_cast<size_t>(full.seen[i].position);
      EXPECT_EQ(rec[p].expert, want.expert) << "layer " << layer << " position " << p;
      EXPECT_FLOAT_EQ(rec[p].confidence, want.confidence);
    }
  }
  // -1 is the last layer.
  const auto last = epwa::router_records(m, tokens, -1);
  const auto explicit_last = epwa::router_records(m, tokens, layers - 1);
  for (size_t i = 0; i < last.size(); ++i) EXPECT_EQ(last[i].expert, explicit_last[i].expert);
  EXPECT_THROW(epwa::router_records(m, tokens, layers), epwa::Error);
  EXPECT_THROW(epwa::router_records(m, {}, -1), epwa::Error);
}

TEST(ObserverFan, ForwardsToEveryObserverInOrder) {
  Recorder a, b;
  epwa::ObserverFan fan{&a, nullptr, &b};
  const std::vector<float> logits = {0.1f, 0.9f};
  fan.observe({3, 7, logits, {}, {}});
  ASSERT_EQ(a.seen.size(), 1u);
  ASSERT_EQ(b.seen.size(), 1u);
  EXPECT_EQ(b.seen[0].layer, 3);
  EXPECT_EQ(b.seen[0].position, 7);
}

TEST(Keys, KeyFileIsRawBytesAndErrorsAreClear) {
  const fs::path dir = fs::temp_directory_path();
  const fs::path good = dir / "epwa-session-key.bin", empty = dir / "epwa-session-empty.key";
  {
    std::ofstream(good, std::ios::binary) << std::string("k\0y\n", 4);
    std::ofstream(empty, std::ios::binary);
  }
  EXPECT_EQ(epwa::read_key_file(good), std::string("k\0y\n", 4));
  EXPECT_THROW(epwa::read_key_file(empty), epwa::Error);
  EXPECT_THROW(epwa::read_key_file(dir / "epwa-no-such-key-file"), epwa::Error);
  fs::remove(good);
  fs::remove(empty);
  EXPECT_THROW(epwa::Watermarker(bundled::model(), "", {}), epwa::Error);
}

epwa::GenerateOptions sampling(int32_t n, uint64_t seed) {
  epwa::GenerateOptions o;
  o.max_new_tokens = n;
  o.sampling.temperature = 1.0f;
  o.sampling.seed = seed;
  return o;
}

// With a huge delta every generated token is green, so detection with the same model must find
// g = n: the generation-time expert and the teacher-forced one agree at every position.
TEST(Alignment, HugeDeltaGivesAllGreen) {
  epwa::Model& m = bundled::model();
  for (auto mode : {epwa::WatermarkMode::GSG, epwa::WatermarkMode::EWP}) {
    epwa::WatermarkConfig cfg;
    cfg.mode = mode;
    cfg.delta = 1e4;
    cfg.router_layer = -1;
    epwa::Watermarker wm(m, "alignment-key", cfg);
    EXPECT_EQ(wm.config().router_layer, m.config().num_layers - 1);
    EXPECT_EQ(wm.router_hash(), bundled_hash());
    const auto prompt = encode("It was a bright cold day in April, and");
    Recorder watcher;  // the caller's observer still sees every decision
    auto o = sampling(80, 11);
    o.observer = &watcher;
    const auto out = wm.generate(m, prompt, o);
    ASSERT_GE(out.size(), 20u);
    EXPECT_EQ(watcher.seen.size(),
              static_cast<size_t>(m.config().num_layers) * (prompt.size() + out.size() - 1));
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), out.begin(), out.end());
    epwa::DetectOptions d;
    d.count_repeats = true;
    const epwa::Detector det(wm.lists(), d);
    const auto r = epwa::detect_tokens(m, det, seq, static_cast<int64_t>(prompt.size()), -1);
    EXPECT_EQ(r.n, static_cast<int64_t>(out.size()));
    EXPECT_EQ(r.g, r.n) << epwa::watermark_mode_name(mode);
    EXPECT_TRUE(r.detected);
  }
}

// The same alignment at another layer: generation and detection agree on layer 2.
TEST(Alignment, OtherRouterLayer) {
  epwa::Model& m = bundled::model();
  epwa::WatermarkConfig cfg;
  cfg.delta = 1e4;
  cfg.router_layer = 2;
  epwa::Watermarker wm(m, "alignment-key", cfg);
  const auto prompt = encode("Call me Ishmael.");
  const auto out = wm.generate(m, prompt, sampling(40, 2));
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), out.begin(), out.end());
  epwa::DetectOptions d;
  d.count_repeats = true;
  const auto r = epwa::detect_tokens(m, epwa::Detector(wm.lists(), d), seq,
                                     static_cast<int64_t>(prompt.size()), wm.config().router_layer);
  EXPECT_EQ(r.g, r.n);
  EXPECT_EQ(r.n, static_cast<int64_t>(out.size()));
}

TEST(Watermarker, RejectsASecondProcessorAndSameSeedRepeats) {
  epwa::Model& m = bundled::model();
  epwa::Watermarker wm(m, "k", {});
  const auto prompt = encode("Hello");
  const auto a = wm.generate(m, prompt, sampling(12, 5));
  const auto b = wm.generate(m, prompt, sampling(12, 5));  // reset between sequences
  EXPECT_EQ(a, b);
  auto o = sampling(4, 1);
  epwa::WatermarkProcessor other({}, wm.lists());
  o.processor = &other;
  EXPECT_THROW(wm.generate(m, prompt, o), epwa::Error);
}

TEST(DetectTokens, ValidatesInputAndNeedsAPredictorForPepi) {
  epwa::Model& m = bundled::model();
  auto lists = epwa::make_green_lists(m, "k", 0.5);
  const epwa::Detector det(lists, {});
  const auto seq = encode("A short text about nothing in particular, written for a test.");
  EXPECT_THROW(epwa::detect_tokens(m, det, {}, 0, -1), epwa::Error);
  EXPECT_THROW(epwa::detect_tokens(m, det, seq, static_cast<int64_t>(seq.size()) + 1, -1),
               epwa::Error);
  const auto r = epwa::detect_tokens(m, det, seq, 1, -1);
  EXPECT_EQ(r.candidates + r.repeats_skipped, static_cast<int64_t>(seq.size()) - 1);
  epwa::DetectOptions p;
  p.method = epwa::DetectMethod::Pepi;
  const epwa::Detector pepi(lists, p);
  EXPECT_THROW(epwa::detect_tokens(m, pepi, seq, 1, -1), epwa::Error);
}

}  // namespace

#include <nlohmann/json.hpp>

#include "epwa/load_options.hpp"

namespace {

// The router hash of each family's reference checkpoint equals the one the independent Python
// reference computes from the files (tools/spec/epwa_spec.py: IRSH-v1 for Mixtral, v2 otherwise),
// from safetensors, from the converted GGUF and in 4-bit mode.
TEST(RouterHash, MatchesTheSpecReferenceForEveryFamily) {
  std::ifstream f(fs::path(EPWA_TEST_DATA_DIR) / "spec_vectors.json");
  ASSERT_TRUE(f.good());
  const auto v = nlohmann::json::parse(f);
  ASSERT_EQ(v["families"].size(), 8u);
  for (const auto& fam : v["families"]) {
    const std::string name = fam["model"], want = fam["hash"];
    SCOPED_TRACE(name);
    const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / name;
    EXPECT_EQ(epwa::router_hash(*epwa::Model::load(dir)), want);
    const fs::path gguf = fs::temp_directory_path() / ("epwa-hash-" + name + ".gguf");
    epwa::convert_hf_to_gguf(dir, gguf, {});
    EXPECT_EQ(epwa::router_hash(*epwa::Model::load(gguf)), want);
    fs::remove(gguf);
    epwa::LoadOptions o;
    o.mode = epwa::LoadMode::Bits4;
    o.use_cache = false;
    o.warn = [](const std::string&) {};
    EXPECT_EQ(epwa::router_hash(*epwa::Model::load(dir, o)), want);
  }
}

// DeepSeek-V2/V3's routing rules as IRSH-v2 hashes them (docs/SPEC.md, section 0); every one has a
// watermark layer (V3's pathway: tests/session/deepseek3_pathway_test.cpp).
TEST(RouterHash, DeepSeekRules) {
  const fs::path ref = fs::path(EPWA_TEST_DATA_DIR) / "ref";
  auto v2 = epwa::Model::load(ref / "deepseek2");
  auto lite = epwa::Model::load(ref / "deepseek2-lite");
  auto v3 = epwa::Model::load(ref / "deepseek3");
  EXPECT_EQ(v2->config().router_rule(), "softmax,top3,raw,group4/2max,scale1.5");
  EXPECT_EQ(lite->config().router_rule(), "softmax,top3,raw,scale1.5");
  EXPECT_EQ(v3->config().router_rule(), "sigmoid,top3,renorm,bias,group4/2top2,scale2.5");
  EXPECT_EQ(epwa::model_router_layer(*v2, -1), 1);
  EXPECT_EQ(epwa::model_router_layer(*v3, -1), 1);
}

}  // namespace
