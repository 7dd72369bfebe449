// The C++ implementation must reproduce the vectors of the independent Python reference
// (tools/spec/epwa_spec.py -> tests/data/spec_vectors.json).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/generate.hpp"
#include "epwa/half.hpp"
#include "epwa/watermark.hpp"
#include "watermark/sha256.hpp"

namespace {

nlohmann::json load_vectors() {
  std::ifstream f(std::string(EPWA_TEST_DATA_DIR) + "/spec_vectors.json");
  EXPECT_TRUE(f.good());
  return nlohmann::json::parse(f);
}

// Same set as spec_routers() in the Python reference.
struct SpecRouters {
  std::vector<std::vector<float>> values;
  std::vector<epwa::RouterMatrix> mats;
  SpecRouters() {
    for (int32_t layer : {0, 2}) {
      std::vector<float> w(24);
      for (int i = 0; i < 24; ++i)
        w[i] = static_cast<float>(((i * 37 + layer * 11) % 101 - 50) / 7.0);
      values.push_back(std::move(w));
    }
    values.push_back({1.00390625f, 1.01171875f, -0.0f, 3.4e38f, 1e-40f, -2.5f, 65504.0f, 0.1f});
    mats = {{0, 4, 6, values[0]}, {2, 4, 6, values[1]}, {5, 2, 4, values[2]}};
  }
};

TEST(SpecVectors, Bf16Rounding) {
  const auto v = load_vectors();
  SpecRouters r;
  ASSERT_EQ(v["bf16"].size(), r.values[2].size());
  for (size_t i = 0; i < r.values[2].size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(r.values[2][i]), v["bf16"][i][0].get<uint32_t>());
    EXPECT_EQ(epwa::f32_to_bf16(r.values[2][i]), v["bf16"][i][1].get<uint16_t>()) << i;
  }
}

TEST(SpecVectors, Irsh) {
  const auto v = load_vectors();
  SpecRouters r;
  EXPECT_EQ(epwa::irsh_v1(r.mats), v["irsh"]["hash"].get<std::string>());
}

TEST(SpecVectors, IrshV2) {
  const auto v = load_vectors();
  SpecRouters r;
  const std::vector<float> bias{0.5f, -1.25f, 3.0f, 1e-3f};
  std::vector<epwa::RouterMatrix> mats = r.mats;
  mats[0].block = 0, mats[1].block = 2, mats[2].block = 5;
  mats[1].layer = 1, mats[2].layer = 2;
  mats[1].bias = bias;
  const std::string want = v["irsh_v2"]["hash"];
  EXPECT_EQ(epwa::irsh_v2(7, "softmax,top2,raw", mats), want);
  EXPECT_NE(epwa::irsh_v2(7, "softmax,top2,renorm", mats), want);  // the rule counts
  EXPECT_NE(epwa::irsh_v2(8, "softmax,top2,raw", mats), want);     // the layer count counts
  mats[2].block = 6;
  EXPECT_NE(epwa::irsh_v2(7, "softmax,top2,raw", mats), want);  // where the MoE layers are counts
  mats[2].block = 1;
  EXPECT_THROW(epwa::irsh_v2(7, "softmax,top2,raw", mats), epwa::Error);  // out of order
}

TEST(SpecVectors, GreenLists) {
  const auto v = load_vectors();
  for (const auto& entry : v["green_lists"]) {
    epwa::GreenLists gl(entry["key"].get<std::string>(), entry["router_hash"].get<std::string>(),
                        entry["vocab"].get<int32_t>(), entry["gamma"].get<double>(),
                        entry["experts"].get<int32_t>());
    ASSERT_EQ(gl.green_count(), entry["green_count"].get<int32_t>());
    for (const auto& list : entry["lists"]) {
      const int32_t e = list["expert"].get<int32_t>();
      const std::vector<int32_t> order = gl.green_tokens_in_order(e);
      const auto first16 = list["first16"].get<std::vector<int32_t>>();
      EXPECT_TRUE(std::equal(first16.begin(), first16.end(), order.begin()))
          << "V=" << gl.vocab_size() << " gamma=" << gl.gamma() << " expert " << e;
      // The whole list, through the bitset: sorted green ids as u32 LE, hashed.
      std::vector<uint8_t> bytes;
      for (int32_t t = 0; t < gl.vocab_size(); ++t)
        if (gl.is_green(e, t))
          for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<uint8_t>(t >> (8 * b)));
      epwa::detail::Sha256 h;
      h.update(bytes);
      EXPECT_EQ(epwa::detail::to_hex(h.finish()), list["sorted_sha256"].get<std::string>());
    }
  }
}

TEST(SpecVectors, CspvSampler) {
  const auto v = load_vectors()["cspv"];
  const auto tokens = v["tokens"].get<std::vector<int32_t>>();
  const uint64_t seed = epwa::cspv_seed(tokens);
  EXPECT_EQ(std::to_string(seed), v["seed"].get<std::string>());
  std::vector<float> conf(40);
  for (int i = 0; i < 40; ++i) conf[i] = static_cast<float>(((i * 13) % 29) / 29.0 + 0.125);
  const auto picks = epwa::cspv_sample(conf, v["sample_n"].get<int64_t>(), seed);
  ASSERT_EQ(picks.size(), v["picks"].size());
  for (size_t i = 0; i < picks.size(); ++i) {
    EXPECT_EQ(picks[i].index, v["picks"][i][0].get<size_t>()) << i;
    EXPECT_EQ(picks[i].stratum, v["picks"][i][1].get<int32_t>()) << i;
  }
}

}  // namespace

namespace {

// The entropy threshold's rule (docs/SPEC.md): next_token_entropy over the vector rows equals the
// reference's double-precision values, and the rows at or above the threshold are those listed.
TEST(SpecVectors, EntropyThreshold) {
  const nlohmann::json all = load_vectors();
  const auto& e = all["entropy"];
  const double tau = e["threshold"].get<double>();
  std::vector<int64_t> eligible;
  for (int j = 0; j < 5; ++j) {
    std::vector<float> row(32);
    for (int v = 0; v < 32; ++v)
      row[static_cast<size_t>(v)] =
          j < 4 ? static_cast<float>(((v * 17 + j * 5) % 23) / (j + 1.0)) : (v == 3 ? 40.0f : 0.0f);
    const double want = std::stod(e["values"][static_cast<size_t>(j)].get<std::string>());
    EXPECT_NEAR(epwa::next_token_entropy(row), want, 1e-12 * std::max(1.0, want)) << "row " << j;
    if (epwa::next_token_entropy(row) >= tau) eligible.push_back(j);
  }
  EXPECT_EQ(nlohmann::json(eligible), e["eligible"]);
}

}  // namespace

TEST(SpecVectors, KeyringRotation) {
  const auto v = load_vectors()["keyring"];
  const auto keys = v["keys"].get<std::vector<std::string>>();
  const std::string secret = epwa::keyring_rotation_secret(keys);
  EXPECT_EQ(epwa::detail::to_hex({reinterpret_cast<const uint8_t*>(secret.data()), secret.size()}),
            v["rotation_secret"].get<std::string>());
  const auto prompt = v["prompt"].get<std::vector<int32_t>>();
  const std::vector<int32_t> prompt2{1, 2};
  for (uint64_t seed = 0; seed < 16; ++seed) {
    EXPECT_EQ(epwa::keyring_pick(secret, seed, prompt, keys.size()), v["picks"][seed].get<size_t>())
        << seed;
    EXPECT_EQ(epwa::keyring_pick(secret, seed, prompt2, keys.size()),
              v["picks_prompt_2"][seed].get<size_t>())
        << seed;
  }
}

TEST(SpecVectors, ContextBuckets) {
  const auto v = load_vectors()["context_buckets"];
  const int32_t H = v["buckets"].get<int32_t>();
  epwa::GreenLists gl(v["key"].get<std::string>(), v["router_hash"].get<std::string>(),
                      v["vocab"].get<int32_t>(), v["gamma"].get<double>(),
                      v["experts"].get<int32_t>(), H);
  EXPECT_EQ(gl.num_contexts(), v["experts"].get<int32_t>() * H);
  for (int32_t t = 0; t < 16; ++t)
    EXPECT_EQ(gl.bucket(t), v["bucket_of_tokens_0_to_15"][t].get<int32_t>()) << t;
  for (const auto& list : v["lists"]) {
    const int32_t c =
        gl.context(list["expert"].get<int32_t>(), list["previous_token"].get<int32_t>());
    ASSERT_EQ(c, list["context"].get<int32_t>());
    const std::vector<int32_t> order = gl.green_tokens_in_order(c);
    const auto first16 = list["first16"].get<std::vector<int32_t>>();
    EXPECT_TRUE(std::equal(first16.begin(), first16.end(), order.begin())) << c;
    std::vector<uint8_t> bytes;
    for (int32_t t = 0; t < gl.vocab_size(); ++t)
      if (gl.is_green(c, t))
        for (int b = 0; b < 4; ++b) bytes.push_back(static_cast<uint8_t>(t >> (8 * b)));
    epwa::detail::Sha256 h;
    h.update(bytes);
    EXPECT_EQ(epwa::detail::to_hex(h.finish()), list["sorted_sha256"].get<std::string>());
  }
  // H = 0 is GL-v1: the context is the expert and bucket() is refused.
  epwa::GreenLists plain(v["key"].get<std::string>(), v["router_hash"].get<std::string>(), 1000,
                         0.5, 4);
  EXPECT_EQ(plain.context(3, 999), 3);
  EXPECT_THROW(plain.bucket(1), epwa::Error);
  EXPECT_THROW(epwa::GreenLists("k", v["router_hash"].get<std::string>(), 1000, 0.5, 4, 1),
               epwa::Error);
  EXPECT_THROW(gl.context(4, 0), epwa::Error);
  EXPECT_THROW(gl.context(0, 1000), epwa::Error);
}

namespace {

// EXP-v1 (section 11): step seeds, the keyed uniforms, the race over fixed probabilities and the
// Gamma tail, as tools/spec/epwa_spec.py computes them.
TEST(SpecVectors, ExpSampling) {
  const auto v = load_vectors()["exp"];
  const epwa::GreenLists gl(v["key"].get<std::string>(), v["router_hash"].get<std::string>(), 1000,
                            0.5, 4);
  const auto probs = v["probs"].get<std::vector<double>>();
  std::vector<float> logits;
  for (double p : probs)
    logits.push_back(p > 0 ? static_cast<float>(std::log(p))
                           : -std::numeric_limits<float>::infinity());
  struct Fixed : epwa::KeyedUniforms {
    uint64_t seed = 0;
    double uniform(int32_t t) const override { return epwa::GreenLists::exp_uniform(seed, t); }
  } u;
  epwa::SamplingOptions so;
  so.temperature = 1.0f;
  epwa::Sampler sampler(so);
  for (const auto& c : v["cases"]) {
    const uint64_t seed =
        gl.exp_seed(c["expert"].get<int32_t>(), c["previous_token"].get<int32_t>());
    EXPECT_EQ(std::to_string(seed), c["seed"].get<std::string>());
    for (int32_t t = 0; t < 5; ++t)
      EXPECT_EQ(epwa::GreenLists::exp_uniform(seed, t),
                std::stod(c["uniforms_0_to_4"][t].get<std::string>()))
          << t;
    u.seed = seed;
    std::vector<float> row = logits;
    EXPECT_EQ(sampler.sample(row, &u), c["race"].get<int32_t>());
  }
  for (const auto& g : v["gamma_tail"])
    EXPECT_NEAR(std::exp(epwa::gamma_log_sf(g[0].get<int64_t>(), g[1].get<double>())) /
                    std::stod(g[2].get<std::string>()),
                1.0, 1e-12);
}

}  // namespace
