// PEPI: features, oracle training/round trip/hash check, predictor, and the HTTP client against a
// loopback server (well-formed and malformed responses).
#include "epwa/pepi.hpp"

#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "epwa/error.hpp"

namespace epwa {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kV = 64, kE = 4;
const std::string kHash(64, 'a');

uint64_t lcg(uint64_t& s) {
  return s = s * 6364136223846793005ull + 1442695040888963407ull;
}

// A synthetic world where the expert is a (noisy) function of which tokens are likely: expert e
// makes tokens [16e, 16e + 16) likely. Learnable, so accuracy must be high.
struct Synth {
  std::vector<TokenDistribution> dists;
  std::vector<int32_t> experts, ctx;
};
Synth synth(int n, uint64_t seed) {
  Synth s;
  for (int i = 0; i < n; ++i) {
    const int32_t e = static_cast<int32_t>((lcg(seed) >> 33) % kE);
    std::vector<float> logits(kV);
    for (int32_t v = 0; v < kV; ++v)
      logits[v] =
          static_cast<float>((lcg(seed) >> 40) % 1000) / 400.0f + (v / 16 == e ? 2.0f : 0.0f);
    s.dists.push_back(top_logprobs(logits, 8));
    s.experts.push_back(e);
    s.ctx.push_back(static_cast<int32_t>((lcg(seed) >> 33) % kV));
  }
  return s;
}
PepiDataset featurize(const Synth& s, const PepiFeaturizer& f) {
  PepiDataset d;
  for (size_t i = 0; i < s.dists.size(); ++i) {
    f.add_row(s.dists[i], s.ctx[i], -1, d);
    d.expert.push_back(s.experts[i]);
    d.confidence.push_back(0.5f + 0.5f * static_cast<float>(i % 2));
  }
  return d;
}
OracleInfo info(PepiFeatureSpec spec = {false, 8, false}) {
  OracleInfo i;
  i.router_hash = kHash;
  i.router_layer = 5;
  i.num_experts = kE;
  i.vocab_size = kV;
  i.features = spec;
  return i;
}
Oracle trained(PepiFeatureSpec spec = {false, 8, false}) {
  PepiFeaturizer f(spec, kV);
  return Oracle::train(info(spec), featurize(synth(2000, 1), f), featurize(synth(400, 2), f));
}

TEST(PepiFeatures, TopLogprobsSortedAndNormalised) {
  std::vector<float> logits = {1.0f, 3.0f, 2.0f, 3.0f};
  const auto d = top_logprobs(logits, 3);
  ASSERT_EQ(d.tokens, (std::vector<int32_t>{1, 3, 2}));  // tie -> lower id first
  const auto all = top_logprobs(logits, 0);
  double s = 0;
  for (float lp : all.logprobs) s += std::exp(lp);
  EXPECT_NEAR(s, 1.0, 1e-5);
}

TEST(PepiFeatures, SpecNamesRoundTripAndBadSpecsThrow) {
  for (const char* n : {"topk:20", "full", "topk:5,ctx", "full,ctx", "topk:20,ctx3",
                        "topk:8,bigram", "topk:20,ctx3,bigram"})
    EXPECT_EQ(pepi_features_name(parse_pepi_features(n)), n);
  for (const char* n :
       {"topk:", "topk:0", "topk:x", "top:5", "full,foo", "", "topk:5,", "topk:5,ctx4"})
    EXPECT_THROW(parse_pepi_features(n), Error) << n;
}

TEST(PepiFeatures, RejectsBadDistributions) {
  PepiFeaturizer f({false, 4, false}, kV);
  PepiDataset d;
  EXPECT_THROW(f.add_row({{kV}, {-1.0f}}, 0, -1, d), Error);           // token outside V
  EXPECT_THROW(f.add_row({{1}, {0.5f}}, 0, -1, d), Error);             // positive log-prob
  EXPECT_THROW(f.add_row({{1}, {NAN}}, 0, -1, d), Error);              // NaN
  EXPECT_THROW(f.add_row({{1, 2}, {-1.0f}}, 0, -1, d), Error);         // sizes differ
  EXPECT_NO_THROW(f.add_row({{1, 2}, {-0.1f, -INFINITY}}, 0, -1, d));  // -inf is floored
  for (float v : d.value) EXPECT_TRUE(std::isfinite(v));
}

TEST(PepiOracle, LearnsASeparableProblem) {
  const Oracle o = trained();
  EXPECT_GT(o.metrics().accuracy, 0.9);
  EXPECT_EQ(o.metrics().heldout_size, 400);
  EXPECT_EQ(o.metrics().train_size, 2000);
  ASSERT_EQ(o.metrics().confusion.size(), static_cast<size_t>(kE));
  int64_t total = 0;
  for (const auto& r : o.metrics().confusion)
    for (int64_t v : r) total += v;
  EXPECT_EQ(total, 400);
}

TEST(PepiOracle, SaveLoadGivesIdenticalPredictions) {
  for (PepiFeatureSpec spec : {PepiFeatureSpec{false, 8, false}, PepiFeatureSpec{false, 8, true},
                               PepiFeatureSpec{true, 0, false}}) {
    const Oracle o = trained(spec);
    const fs::path p = fs::path(testing::TempDir()) / "pepi_roundtrip.oracle";
    o.save(p);
    const Oracle l = Oracle::load(p);
    EXPECT_EQ(pepi_features_name(l.info().features), pepi_features_name(spec));
    EXPECT_EQ(l.info().router_hash, kHash);
    EXPECT_EQ(l.info().router_layer, 5);
    EXPECT_DOUBLE_EQ(l.metrics().accuracy, o.metrics().accuracy);
    EXPECT_EQ(l.metrics().confusion, o.metrics().confusion);
    const Synth s = synth(200, 9);
    for (size_t i = 0; i < s.dists.size(); ++i) {
      const RouterRecord a = o.predict(s.dists[i], s.ctx[i], -1),
                         b = l.predict(s.dists[i], s.ctx[i], -1);
      ASSERT_EQ(a.expert, b.expert);
      ASSERT_EQ(a.confidence, b.confidence);
    }
  }
}

TEST(PepiOracle, HashMismatchIsRefused) {
  const Oracle o = trained();
  EXPECT_NO_THROW(o.check_router_hash(kHash));
  try {
    o.check_router_hash(std::string(64, 'b'));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("router hash"), std::string::npos) << e.what();
  }
  const fs::path p = fs::path(testing::TempDir()) / "pepi_hash.oracle";
  o.save(p);
  struct Src : DistributionSource {
    std::vector<TokenDistribution> distributions(std::span<const int32_t>) override { return {}; }
  };
  EXPECT_THROW(make_pepi_predictor(p, std::string(64, 'b'), std::make_shared<Src>()), Error);
  EXPECT_NO_THROW(make_pepi_predictor(p, kHash, std::make_shared<Src>()));
}

TEST(PepiOracle, MalformedFilesAreRejected) {
  const Oracle o = trained();
  const fs::path p = fs::path(testing::TempDir()) / "pepi_bad.oracle";
  o.save(p);
  std::string bytes;
  {
    std::ifstream in(p, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& b) {
    std::ofstream(p, std::ios::binary | std::ios::trunc) << b;
  };
  write(bytes.substr(0, bytes.size() - 3));
  EXPECT_THROW(Oracle::load(p), Error);  // truncated weights
  std::string v = bytes;
  v[8] = 9;
  write(v);
  EXPECT_THROW(Oracle::load(p), Error);  // unknown version
  std::string m = bytes;
  m[0] = 'X';
  write(m);
  EXPECT_THROW(Oracle::load(p), Error);  // bad magic
  std::string h = bytes;
  h[17] = '#';
  write(h);
  EXPECT_THROW(Oracle::load(p), Error);  // header not JSON
  write("");
  EXPECT_THROW(Oracle::load(p), Error);
  EXPECT_THROW(Oracle::load(fs::path(testing::TempDir()) / "no_such.oracle"), Error);
}

// A source that serves fixed distributions: the predictor must align them with positions.
TEST(PepiPredictor, DetectorUsesPredictedExperts) {
  auto o = std::make_shared<const Oracle>(trained());
  const Synth s = synth(60, 5);
  struct Src : DistributionSource {
    std::vector<TokenDistribution> d;
    std::vector<TokenDistribution> distributions(std::span<const int32_t> t) override {
      return {d.begin(), d.begin() + static_cast<long>(t.size() - 1)};
    }
  };
  auto src = std::make_shared<Src>();
  src->d = s.dists;
  PepiPredictor pred(o, src);
  std::vector<int32_t> tokens(s.ctx.begin(), s.ctx.begin() + 50);
  const auto rec = pred.predict(tokens, 1);
  ASSERT_EQ(rec.size(), 49u);
  int ok = 0;
  for (size_t p = 0; p < rec.size(); ++p) ok += rec[p].expert == s.experts[p];
  EXPECT_GT(ok, 40);

  auto lists = std::make_shared<GreenLists>("k", kHash, kV, 0.5, kE);
  DetectOptions opt;
  opt.method = DetectMethod::Pepi;
  Detector det(lists, opt);
  EXPECT_THROW(det.detect({tokens, 1, {}}), Error);  // no predictor yet
  det.set_expert_predictor(std::make_shared<PepiPredictor>(o, src));
  const DetectionResult r = det.detect({tokens, 1, {}});
  EXPECT_EQ(r.method, "pepi");
  EXPECT_GT(r.n, 0);
}

// --- HTTP ---

struct LoopbackServer {
  httplib::Server srv;
  int port = 0;
  std::thread th;
  std::string body;  // what POST /v1/completions answers
  int status = 200;
  std::string last_request;
  LoopbackServer() {
    srv.Post("/v1/completions", [this](const httplib::Request& q, httplib::Response& r) {
      last_request = q.body;
      r.status = status;
      r.set_content(body, "application/json");
    });
    port = srv.bind_to_any_port("127.0.0.1");
    th = std::thread([this] { srv.listen_after_bind(); });
    while (!srv.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~LoopbackServer() {
    srv.stop();
    th.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port); }
};

std::vector<TokenDistribution> sample_dists() {
  return {{{5, 7}, {-0.1f, -2.5f}}, {{9, 5, 1}, {-0.5f, -1.0f, -3.0f}}};
}

TEST(PepiApi, ClientReadsEchoedPromptLogprobs) {
  LoopbackServer s;
  const std::vector<int32_t> toks = {1, 7, 9};
  const auto d = sample_dists();
  s.body = completions_response_json(toks, d, nullptr, true);
  ApiOptions o;
  o.url = s.url() + "/v1";
  o.top_k = 5;
  ApiDistributionSource src(o, nullptr);
  const auto got = src.distributions(toks);
  ASSERT_EQ(got.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(got[i].tokens, d[i].tokens);
    EXPECT_EQ(got[i].logprobs, d[i].logprobs);
  }
  const auto req = nlohmann::json::parse(s.last_request);
  EXPECT_EQ(req["prompt"], nlohmann::json(toks));
  EXPECT_EQ(req["max_tokens"], 0);
  EXPECT_EQ(req["echo"], true);
  EXPECT_EQ(req["logprobs"], 5);
}

void expect_error(LoopbackServer& s, const std::string& body, int status,
                  const std::string& needle) {
  s.body = body;
  s.status = status;
  ApiOptions o;
  o.url = s.url();
  ApiDistributionSource src(o, nullptr);
  const std::vector<int32_t> toks = {1, 7, 9};
  try {
    src.distributions(toks);
    ADD_FAILURE() << "no error for " << body;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(PepiApi, MalformedResponsesGiveClearErrors) {
  LoopbackServer s;
  expect_error(s, "not json", 200, "not JSON");
  expect_error(s, R"({"choices": []})", 200, "choices[0]");
  expect_error(s, R"({"choices": [{"text": ""}]})", 200, "logprobs is missing");
  expect_error(s, R"({"choices": [{"logprobs": {"top_logprobs": [null]}}]})", 200,
               "1 top_logprobs entries");
  expect_error(s, R"({"choices": [{"logprobs": {"top_logprobs": [null, 3, {}]}}]})", 200,
               "not an object");
  expect_error(s,
               R"({"choices": [{"logprobs": {"top_logprobs": [null, {"token_id:x": -1}, {}]}}]})",
               200, "bad key");
  expect_error(s,
               R"({"choices": [{"logprobs": {"top_logprobs": [null, {"token_id:3": "a"}, {}]}}]})",
               200, "not a number");
  expect_error(s,
               R"({"choices": [{"logprobs": {"top_logprobs": [null, {"token_id:3": 2.0}, {}]}}]})",
               200, "not a log-probability");
  expect_error(s, R"({"choices": [{"logprobs": {"top_logprobs": [null, {"the": -1}, {}]}}]})", 200,
               "no tokenizer");
  expect_error(s, R"({"error": {"message": "model not found"}})", 404, "HTTP 404");
  expect_error(s, R"({"error": {"message": "model not found"}})", 200, "model not found");
}

TEST(PepiApi, ConnectionAndUrlErrors) {
  ApiOptions o;
  o.url = "https://example.com";
  EXPECT_THROW(ApiDistributionSource(o, nullptr), Error);
  o.url = "ftp://x";
  EXPECT_THROW(ApiDistributionSource(o, nullptr), Error);
  int port = 0;
  {
    httplib::Server tmp;  // a port that was free a moment ago and is closed now
    port = tmp.bind_to_any_port("127.0.0.1");
  }
  o.url = "http://127.0.0.1:" + std::to_string(port);
  o.timeout_s = 2;
  ApiDistributionSource src(o, nullptr);
  const std::vector<int32_t> toks = {1, 2};
  try {
    src.distributions(toks);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("request failed"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace epwa
