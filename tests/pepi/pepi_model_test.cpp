// PEPI on a real (random-weight) model: data collection labels, the local source, the router
// hash, and the HTTP round trip through a loopback server that serves the model's distributions.
#include <gtest/gtest.h>
#include <httplib.h>

#include <filesystem>
#include <thread>

#include "epwa/error.hpp"
#include "epwa/make_model.hpp"
#include "epwa/model.hpp"
#include "epwa/pepi.hpp"
#include "epwa/watermark.hpp"

namespace epwa {
namespace {

namespace fs = std::filesystem;

std::unique_ptr<Model> tiny_model() {
  const fs::path dir = fs::path(testing::TempDir()) / "pepi_tiny_model";
  if (!fs::exists(dir / "config.json")) write_random_hf(shape_config("tiny"), 7, DType::F32, dir);
  return Model::load(dir);
}

std::vector<std::vector<int32_t>> sequences(int n, int len, int32_t V) {
  std::vector<std::vector<int32_t>> s;
  uint64_t x = 3;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> t = {1};
    for (int j = 1; j < len; ++j)
      t.push_back(static_cast<int32_t>((x = x * 6364136223846793005ull + 1) >> 40) % V);
    s.push_back(t);
  }
  return s;
}

TEST(PepiModel, CollectedLabelsAreTheRoutersTopExpert) {
  auto m = tiny_model();
  const auto seqs = sequences(3, 12, m->config().vocab_size);
  CollectOptions co;
  co.features = parse_pepi_features("topk:5");
  const PepiDataset d = collect_pepi_data(*m, seqs, co);
  ASSERT_EQ(d.rows(), 36);
  // Recompute sequence 0's labels with an observer at the last layer.
  struct Tap : RouterObserver {
    int32_t layer;
    std::vector<int32_t> experts;
    void observe(const RouterObservation& o) override {
      if (o.layer == layer) experts.push_back(top1_expert(o.logits).expert);
    }
  } tap;
  tap.layer = m->config().num_layers - 1;
  Context c = m->make_context(16);
  ForwardOptions fo;
  fo.observer = &tap;
  m->forward(seqs[0], c, fo);
  ASSERT_EQ(tap.experts.size(), 12u);
  for (size_t p = 0; p < 12; ++p) EXPECT_EQ(d.expert[p], tap.experts[p]) << p;
  EXPECT_EQ(model_router_hash(*m).size(), 64u);
}

TEST(PepiModel, ApiRoundTripMatchesLocalSource) {
  auto m = tiny_model();
  LocalDistributionSource local(*m, 6);
  const auto seq = sequences(1, 10, m->config().vocab_size)[0];
  const auto want = local.distributions(seq);
  httplib::Server srv;
  srv.Post("/v1/completions", [&](const httplib::Request&, httplib::Response& r) {
    r.set_content(completions_response_json(seq, want, nullptr, true), "application/json");
  });
  const int port = srv.bind_to_any_port("127.0.0.1");
  std::thread th([&] { srv.listen_after_bind(); });
  while (!srv.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ApiOptions o;
  o.url = "http://127.0.0.1:" + std::to_string(port) + "/v1/completions";
  o.top_k = 6;
  ApiDistributionSource api(o, nullptr);
  const auto got = api.distributions(seq);
  srv.stop();
  th.join();
  ASSERT_EQ(got.size(), seq.size() - 1);
  for (size_t p = 0; p < got.size(); ++p) {
    EXPECT_EQ(got[p].tokens, want[p].tokens);
    for (size_t j = 0; j < got[p].logprobs.size(); ++j)
      EXPECT_NEAR(got[p].logprobs[j], want[p].logprobs[j], 1e-6);
  }
}

}  // namespace
}  // namespace epwa
