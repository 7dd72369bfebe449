// Watermark stealing on the bundled model: the estimator recovers the real green lists from a
// few thousand watermarked tokens, the spoofer gets the real key to fire, the scrubber gets it to
// stop; and the KGW-style baseline is what it claims to be.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <memory>
#include <numeric>
#include <set>
#include <vector>

#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/eval.hpp"
#include "epwa/make_model.hpp"
#include "epwa/pepi.hpp"
#include "epwa/session.hpp"
#include "epwa/tokenizer.hpp"

namespace fs = std::filesystem;
using namespace epwa;
using namespace epwa::attack;

namespace {

const fs::path kBundled = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
constexpr char kKey[] = "attack-test-key";

const char* const kPrompts[] = {
    "No sooner was her answer dispatched, than",
    "A deed may be avoided by delivering it",
    "And there went a man of the house of Levi, and took",
    "While employed in God's work, we are under his",
    "From his mighty bulk the whale affords a most",
    "It was the best of times, it was the",
    "The old man looked out over the sea and",
    "In the beginning of the year the king",
};

// The bundled model, its tokenizer, and EPW-A texts observed once for the whole suite.
class Steal : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_ = Model::load(kBundled).release();
    tok_ = load_tokenizer(kBundled).release();
    victim_ = new Victim(*model_, Scheme::Epwa, kKey, 0.5, 2.0);
    // ~2400 watermarked tokens: 24 texts of 100 from the first 4 prompts.
    observed_ = new std::vector<ObservedText>;
    for (uint64_t k = 0; k < 24; ++k) {
      ObservedText x{prompt(k % 4), {}};
      x.text = victim_->generate(*model_, x.prompt, options(k, 100));
      observed_->push_back(std::move(x));
    }
    const int64_t checkpoints[] = {2000};
    stolen_ = new StolenLists(steal(*model_, Scheme::Epwa, -1, *observed_, checkpoints, 0.8f)[0]);
  }
  static void TearDownTestSuite() {
    delete stolen_;
    delete observed_;
    delete victim_;
    delete tok_;
    delete model_;
  }

  static std::vector<int32_t> prompt(size_t i) { return tok_->encode(kPrompts[i], true, false); }
  static GenerateOptions options(uint64_t seed, int32_t tokens) {
    GenerateOptions go;
    go.max_new_tokens = tokens;
    go.sampling.temperature = 0.8f;
    go.sampling.top_p = 0.95f;
    go.sampling.seed = seed;
    for (int32_t id : non_text_token_ids(*tok_, model_->config().vocab_size))
      go.suppress_tokens.push_back(id);
    return go;
  }
  static double z_of(const Victim& v, const std::vector<int32_t>& prompt,
                     const std::vector<int32_t>& text) {
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), text.begin(), text.end());
    return v.detect(*model_, seq, static_cast<int64_t>(prompt.size())).z;
  }

  static Model* model_;
  static Tokenizer* tok_;
  static Victim* victim_;
  static std::vector<ObservedText>* observed_;
  static StolenLists* stolen_;
};
Model* Steal::model_ = nullptr;
Tokenizer* Steal::tok_ = nullptr;
Victim* Steal::victim_ = nullptr;
std::vector<ObservedText>* Steal::observed_ = nullptr;
StolenLists* Steal::stolen_ = nullptr;

TEST_F(Steal, ObservedTextsAreWatermarked) {
  for (size_t i = 0; i < 4; ++i)
    EXPECT_GT(z_of(*victim_, (*observed_)[i].prompt, (*observed_)[i].text), 4.0) << i;
}

TEST_F(Steal, CountsEveryObservedTokenOnce) {
  EXPECT_EQ(stolen_->observed_tokens, 2000);
  double observed = 0, expected = 0;
  for (int32_t e = 0; e < stolen_->contexts(); ++e)
    for (const PairCount& p : stolen_->pairs(e)) {
      observed += p.observed;
      expected += p.expected;
    }
  EXPECT_DOUBLE_EQ(observed, 2000.0);
  // Expected counts are kept for the pairs seen only, so they add up to less than N.
  EXPECT_GT(expected, 0.0);
  EXPECT_LT(expected, 2000.0);
}

TEST_F(Steal, EstimatorRanksTrulyGreenAboveRedForEachExpert) {
  const GreenLists& truth = victim_->lists();
  int32_t experts_seen = 0;
  for (int32_t e = 0; e < stolen_->contexts(); ++e) {
    if (stolen_->pairs(e).size() < 50) continue;  // an expert the texts hardly reach
    ++experts_seen;
    EXPECT_GT(context_auc(*stolen_, truth, e), 0.75) << "expert " << e;
  }
  EXPECT_GE(experts_seen, 4);
  const ScoreQuality q = score_quality(*stolen_, truth);
  EXPECT_GT(q.auc_seen, 0.8);
  EXPECT_GT(q.auc_context, 0.75);
  EXPECT_GT(q.precision, 0.8);  // tokens weighted green are mostly green
  EXPECT_GT(q.coverage, 0.0);
  // A wrong key's lists are unrelated to the scores.
  const auto wrong = make_green_lists(*model_, "another key", 0.5);
  EXPECT_NEAR(score_quality(*stolen_, *wrong).auc_seen, 0.5, 0.08);
}

TEST_F(Steal, SpoofRaisesZUnderTheRealKey) {
  double spoofed = 0, plain = 0;
  for (size_t i = 4; i < 7; ++i) {
    const auto p = prompt(i);
    spoofed += z_of(*victim_, p, spoof(*model_, *stolen_, -1, 4.0, p, options(100 + i, 80)));
    plain += z_of(*victim_, p, generate(*model_, p, options(100 + i, 80)));
  }
  EXPECT_GT(spoofed / 3, plain / 3 + 2.0) << "spoofed " << spoofed / 3 << ", plain " << plain / 3;
  EXPECT_GT(spoofed / 3, 3.0);
}

// A second model writes while the public model, run in lockstep on the same tokens, gives the
// contexts. With the public model itself as the writer, that is the ordinary spoof, token for
// token (gray-box and black-box).
TEST_F(Steal, LockstepContextsEqualTheWritersOwn) {
  const auto oracle = std::make_shared<const Oracle>(
      Oracle::load(fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe.oracle"));
  for (const Oracle* o : {static_cast<const Oracle*>(nullptr), oracle.get()}) {
    for (size_t i = 4; i < 6; ++i) {
      const auto p = prompt(i);
      const auto own = spoof(*model_, *stolen_, -1, 4.0, p, options(300 + i, 60), o);
      const auto lockstep = spoof(*model_, *stolen_, -1, 4.0, p, options(300 + i, 60), o, model_);
      EXPECT_EQ(own, lockstep) << i << (o ? " black-box" : " gray-box");
    }
  }
}

// A different model (random weights on the same vocabulary) writes text the real key does not
// detect; biased by the stolen lists through the public model's contexts, the real key fires. (A
// strong bias: a random writer puts most of its mass on tokens the lists never saw; at 4 its
// spoofs reach z 0.8.)
TEST_F(Steal, SecondModelSpoofsWithThePublicModelsContexts) {
  const fs::path dir = fs::temp_directory_path() / "epwa-steal-writer-models";
  ModelConfig c = shape_config("tiny");
  c.vocab_size = model_->config().vocab_size;
  ModelConfig small = c;
  small.vocab_size = 1000;
  write_random_hf(c, 99, DType::F32, dir / "same");
  write_random_hf(small, 99, DType::F32, dir / "other");
  // Released before the folder is removed (Windows cannot remove a mapped file).
  std::unique_ptr<Model> writer = Model::load(dir / "same"), other = Model::load(dir / "other");
  double spoofed = 0, plain = 0;
  for (size_t i = 4; i < 7; ++i) {
    const auto p = prompt(i);
    spoofed +=
        z_of(*victim_, p,
             spoof(*model_, *stolen_, -1, 10.0, p, options(100 + i, 80), nullptr, writer.get()));
    plain += z_of(*victim_, p, generate(*writer, p, options(100 + i, 80)));
  }
  EXPECT_GT(spoofed / 3, 4.0) << "spoofed " << spoofed / 3 << " plain " << plain / 3;
  EXPECT_LT(plain / 3, 2.0) << "plain " << plain / 3;
  try {
    spoof(*model_, *stolen_, -1, 4.0, prompt(4), options(1, 10), nullptr, other.get());
    ADD_FAILURE() << "a writer on another vocabulary was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the writing model has 1000 tokens"), std::string::npos)
        << e.what();
  }
  writer.reset();
  other.reset();
  fs::remove_all(dir);
}

TEST_F(Steal, ScrubLowersZMoreThanBlindEditsOfTheSameBudget) {
  ScrubOptions so;
  so.budget = 0.3;
  double marked = 0, informed = 0, blind = 0;
  for (size_t i = 4; i < 7; ++i) {
    const auto p = prompt(i);
    const auto text = victim_->generate(*model_, p, options(200 + i, 80));
    const auto a = scrub(*model_, Scheme::Epwa, -1, stolen_, p, text, so);
    const auto b = scrub(*model_, Scheme::Epwa, -1, nullptr, p, text, so);
    ASSERT_EQ(a.size(), text.size());
    size_t changed = 0;
    for (size_t k = 0; k < a.size(); ++k) changed += a[k] != text[k];
    EXPECT_LE(changed, static_cast<size_t>(0.3 * static_cast<double>(text.size())));
    marked += z_of(*victim_, p, text);
    informed += z_of(*victim_, p, a);
    blind += z_of(*victim_, p, b);
  }
  EXPECT_LT(informed, marked - 3 * 2.0) << marked << " -> " << informed;
  EXPECT_LT(informed, blind) << "informed " << informed << ", blind " << blind;
}

TEST_F(Steal, ZeroBudgetScrubChangesNothing) {
  ScrubOptions so;
  so.budget = 0;
  const auto& x = (*observed_)[0];
  EXPECT_EQ(scrub(*model_, Scheme::Epwa, -1, stolen_, x.prompt, x.text, so), x.text);
  so.budget = 1.5;
  EXPECT_THROW(scrub(*model_, Scheme::Epwa, -1, stolen_, x.prompt, x.text, so), Error);
}

TEST_F(Steal, CheckpointsArePrefixesOfTheObservedTokens) {
  const std::vector<ObservedText> few(observed_->begin(), observed_->begin() + 3);
  const int64_t checkpoints[] = {50, 150, 100000};
  const auto s = steal(*model_, Scheme::Epwa, -1, few, checkpoints, 0.8f);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].observed_tokens, 50);
  EXPECT_EQ(s[1].observed_tokens, 150);
  EXPECT_EQ(s[2].observed_tokens, 300);  // fewer tokens than asked: all of them
  EXPECT_LE(s[0].pair_count(), s[1].pair_count());
  const int64_t bad[] = {100, 50};
  EXPECT_THROW(steal(*model_, Scheme::Epwa, -1, few, bad, 0.8f), Error);
}

TEST_F(Steal, KgwBaselineIsKeyedByThePreviousToken) {
  const Victim kgw(*model_, Scheme::Kgw, kKey, 0.5, 2.0);
  const int32_t v = model_->config().vocab_size;
  EXPECT_EQ(kgw.lists().num_experts(), v);
  // Its own lists, not EPW-A's under the same key.
  int differ = 0;
  for (int32_t t = 0; t < 200; ++t)
    differ += kgw.lists().is_green(0, t) != victim_->lists().is_green(0, t);
  EXPECT_GT(differ, 50);
  Victim gen(*model_, Scheme::Kgw, kKey, 0.5, 2.0);
  const auto p = prompt(5);
  const auto marked = gen.generate(*model_, p, options(7, 100));
  const auto plain = generate(*model_, p, options(7, 100));
  EXPECT_GT(z_of(kgw, p, marked), 4.0);
  EXPECT_LT(z_of(kgw, p, plain), 4.0);
  // Each token is green in its predecessor's list: check the detector's count by hand.
  std::vector<int32_t> seq = p;
  seq.insert(seq.end(), marked.begin(), marked.end());
  const DetectionResult r = kgw.detect(*model_, seq, static_cast<int64_t>(p.size()));
  EXPECT_GT(r.g, r.n / 2);
}

// Defence 2: a victim with a keyring watermarks each text with the key KR-v1 picks, and its
// detector finds that text with the corrected rule, where another key alone sees nothing.
TEST_F(Steal, KeyringVictimRotatesKeysAndDetectsEach) {
  const Victim ring(*model_, Scheme::Epwa, kKey, 0.5, 2.0, -1, 4);
  Victim gen(*model_, Scheme::Epwa, kKey, 0.5, 2.0, -1, 4);
  EXPECT_EQ(ring.keys(), 4);
  std::set<size_t> used;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    const auto p = prompt(seed);
    const size_t k = ring.key_for(seed, p);
    used.insert(k);
    const auto text = gen.generate(*model_, p, options(seed, 120));
    std::vector<int32_t> seq = p;
    seq.insert(seq.end(), text.begin(), text.end());
    const DetectionResult r = ring.detect(*model_, seq, static_cast<int64_t>(p.size()));
    EXPECT_TRUE(r.detected) << seed;
    // The key used is the key that fires: its lists hold more of the text than another key's.
    const auto hits = [&](const GreenLists& gl) {
      const auto rec = router_records(*model_, seq, -1);
      int g = 0;
      for (size_t t = p.size(); t < seq.size(); ++t) g += gl.is_green(rec[t - 1].expert, seq[t]);
      return g;
    };
    EXPECT_GT(hits(ring.lists(k)), hits(ring.lists((k + 1) % 4)) + 20) << seed;
  }
  EXPECT_GE(used.size(), 2u);
  EXPECT_THROW(Victim(*model_, Scheme::Epwa, kKey, 0.5, 2.0, -1, 0), Error);
}

// The harness on EPW-A with a keyring of 4 keys, N observed tokens, one attacked text.
StealOptions keyring_of_four(int64_t observed) {
  StealOptions o;
  o.key = kKey;
  o.prompts.assign(std::begin(kPrompts), std::end(kPrompts));
  o.observed = {observed};
  o.schemes = {Scheme::Epwa};
  o.tokens = 100;
  o.texts = 1;
  o.keys = 4;
  return o;
}

// Defence 2 against an attacker told which key made each text (the bound on clustering by key):
// each key's lists, stolen from its own texts, rank the truth far better than the pooled estimate.
TEST_F(Steal, AttackerWhoKnowsTheKeysStealsEachKeyFromItsOwnTexts) {
  StealOptions o = keyring_of_four(2000);
  const nlohmann::json pooled = run_steal(*model_, *tok_, o)["schemes"][0]["rows"][0];
  o.attacker_knows_keys = true;
  const nlohmann::json told = run_steal(*model_, *tok_, o)["schemes"][0]["rows"][0];
  EXPECT_EQ(pooled["observed_tokens"], 2000);
  EXPECT_EQ(told["observed_tokens"], 2000);
  EXPECT_EQ(pooled["target_key_tokens"], 2000);
  // The spoofer's key: the most seen of the four, so at least a quarter of the tokens.
  EXPECT_GE(told["target_key_tokens"].get<int64_t>(), 500);
  EXPECT_LT(told["target_key_tokens"].get<int64_t>(), 2000);
  EXPECT_GT(told["auc_seen"].get<double>(), pooled["auc_seen"].get<double>() + 0.15);
  EXPECT_GT(told["precision"].get<double>(), pooled["precision"].get<double>() + 0.15);
}

// The attacker who is not told the keys sorts the texts itself: its clusters follow the keys
// well above chance on EPW-A with a keyring of 4, and the run names their purity.
TEST_F(Steal, AttackerClustersTextsByKey) {
  StealOptions o = keyring_of_four(3000);
  o.attacker_clusters_keys = true;
  const nlohmann::json s = run_steal(*model_, *tok_, o)["schemes"][0];
  EXPECT_GT(s["clustering"]["purity"].get<double>(), 0.45);  // chance: about 0.3 for 4 keys
  EXPECT_GE(s["clustering"]["rounds"].get<int>(), 1);
  EXPECT_EQ(s["rows"][0]["observed_tokens"], 3000);
  EXPECT_LT(s["rows"][0]["target_key_tokens"].get<int64_t>(), 3000);
  o.observed = {1000, 3000};
  EXPECT_THROW(run_steal(*model_, *tok_, o), Error);  // one N only
}

// The black-box attacker reads experts off a PEPI oracle: its contexts are the detector's PEPI
// predictions (the same oracle through PepiPredictor), the tracker of its generations keys each
// step as the teacher-forced pass over the finished text does, and the estimator counts how
// often the guesses were the router's.
TEST_F(Steal, BlackBoxAttackerUsesTheOraclesExperts) {
  const auto oracle = std::make_shared<const Oracle>(
      Oracle::load(fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe.oracle"));
  check_oracle(*oracle, *model_, -1);
  const int32_t layer = model_router_layer(*model_, -1);
  const ObservedText& x = (*observed_)[0];
  std::vector<int32_t> seq = x.prompt;
  seq.insert(seq.end(), x.text.begin(), x.text.end());
  const std::vector<int32_t> guessed = contexts_of(*model_, Scheme::Epwa, seq, layer, oracle.get());
  PepiPredictor pepi(oracle, std::make_shared<LocalDistributionSource>(*model_, 0));
  const std::vector<RouterRecord> want = pepi.predict(seq, 1);
  const std::vector<RouterRecord> router = router_records(*model_, seq, layer);
  size_t same_as_router = 0;
  for (size_t p = 0; p + 1 < seq.size(); ++p) {
    EXPECT_EQ(guessed[p], want[p].expert) << p;
    same_as_router += guessed[p] == router[p].expert;
  }
  // A guess, not the router: right mostly (held-out accuracy 0.855), not always.
  const double right = static_cast<double>(same_as_router) / static_cast<double>(seq.size() - 1);
  EXPECT_GT(right, 0.6);
  EXPECT_LT(right, 1.0);

  // Spoofing: each step's context is the oracle's guess from that step's logits and tokens.
  std::vector<int32_t> seen;
  ContextBias watch(
      Scheme::Epwa, layer, [&](int32_t c, std::span<float>) { seen.push_back(c); }, 0,
      oracle.get());
  const auto p = prompt(5);
  const auto text = watch.generate(*model_, p, options(7, 40));
  std::vector<int32_t> all = p;
  all.insert(all.end(), text.begin(), text.end() - 1);
  const auto after = contexts_of(*model_, Scheme::Epwa, all, layer, oracle.get());
  ASSERT_EQ(seen.size(), text.size());
  for (size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], after[p.size() - 1 + i]) << i;

  const int64_t checkpoints[] = {2000};
  const StolenLists blind =
      steal(*model_, Scheme::Epwa, -1, *observed_, checkpoints, 0.8f, {}, oracle.get())[0];
  EXPECT_EQ(blind.observed_tokens, 2000);
  EXPECT_GT(blind.expert_hits, 1200);
  EXPECT_LT(blind.expert_hits, 2000);
  EXPECT_EQ(stolen_->expert_hits, 2000);  // the gray-box attacker reads the router
  // Still a useful estimate of the real lists.
  EXPECT_GT(score_quality(blind, victim_->lists()).auc_seen, 0.7);
}

// The API attacker's base at one position, by hand: the top 20 probabilities as they are, the
// rest of the mass spread evenly over the other tokens.
TEST_F(Steal, ApiAttackerSeesOnlyTheTopKOfEachPosition) {
  const auto p = prompt(6);
  ForwardOptions fo;
  Context cache = model_->make_context(std::ssize(p) + 1);
  const std::vector<float> last = model_->forward(p, cache, fo);
  const auto V = static_cast<size_t>(model_->config().vocab_size);
  ASSERT_EQ(last.size(), V);
  const float mx = *std::max_element(last.begin(), last.end());
  std::vector<double> prob(V);
  double z = 0;
  for (size_t v = 0; v < V; ++v) z += prob[v] = std::exp((last[v] - mx) / 0.8);
  for (double& q : prob) q /= z;
  std::vector<uint8_t> top;
  top_k_mask(last, 20, top);
  double kept = 0;
  for (size_t v = 0; v < V; ++v) kept += top[v] ? prob[v] : 0.0;
  const auto best = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
  const auto worst =
      static_cast<int32_t>(std::min_element(last.begin(), last.end()) - last.begin());
  ASSERT_TRUE(top[static_cast<size_t>(best)]);
  ASSERT_FALSE(top[static_cast<size_t>(worst)]);
  const int64_t one[] = {1};
  for (const int32_t t : {best, worst}) {
    const std::vector<ObservedText> x = {{p, {t}}};
    const auto expected_of = [&](int32_t k) {
      const StolenLists s = steal(*model_, Scheme::Epwa, -1, x, one, 0.8f, {}, nullptr, k)[0];
      std::vector<double> found;
      for (int32_t c = 0; c < s.contexts(); ++c)
        for (const PairCount& pc : s.pairs(c)) found.push_back(pc.expected);
      EXPECT_EQ(found.size(), 1u);
      return found.empty() ? -1.0 : found[0];
    };
    const double want = top[static_cast<size_t>(t)] ? prob[static_cast<size_t>(t)]
                                                    : (1.0 - kept) / static_cast<double>(V - 20);
    SCOPED_TRACE("token " + std::to_string(t));
    EXPECT_NEAR(expected_of(20), want, 1e-5 * want);
    // The whole vocabulary is the full distribution.
    EXPECT_EQ(expected_of(static_cast<int32_t>(V)), expected_of(0));
    EXPECT_NEAR(expected_of(0), prob[static_cast<size_t>(t)], 1e-5 * prob[static_cast<size_t>(t)]);
  }
  EXPECT_NE(prob[static_cast<size_t>(worst)], (1.0 - kept) / static_cast<double>(V - 20));
}

// An API's spoofer writes only tokens of the writer's top k at each step (the bias reorders them,
// never adds others), however strongly it is biased.
TEST_F(Steal, ApiSpoofWritesOnlyTheWritersTopK) {
  const auto p = prompt(5);
  const GenerateOptions go = options(11, 40);
  const auto text = spoof(*model_, *stolen_, -1, 8.0, p, go, nullptr, nullptr, 2);
  ASSERT_FALSE(text.empty());
  std::vector<int32_t> seq = p;
  seq.insert(seq.end(), text.begin(), text.end());
  ForwardOptions fo;
  fo.all_logits = true;
  Context cache = model_->make_context(std::ssize(seq));
  const std::vector<float> logits = model_->forward(seq, cache, fo);
  const auto V = static_cast<size_t>(model_->config().vocab_size);
  const std::set<int32_t> suppressed(go.suppress_tokens.begin(), go.suppress_tokens.end());
  for (size_t i = 0; i < text.size(); ++i) {
    const float* row = logits.data() + (p.size() - 1 + i) * V;
    std::vector<float> allowed;
    for (size_t v = 0; v < V; ++v)
      if (!suppressed.count(static_cast<int32_t>(v))) allowed.push_back(row[v]);
    std::nth_element(allowed.begin(), allowed.begin() + 1, allowed.end(), std::greater<>());
    // The generation's incremental logits may differ from this pass's in the last bits.
    EXPECT_GE(row[text[i]], allowed[1] - 1e-3f) << "token " << i;
  }
}

TEST(TopKMask, KeepsTheKLargestWithTiesToTheLowerIndex) {
  const std::vector<float> v = {1, 3, 3, 2, 3};
  std::vector<uint8_t> m;
  top_k_mask(v, 2, m);
  EXPECT_EQ(m, (std::vector<uint8_t>{0, 1, 1, 0, 0}));
  top_k_mask(v, 4, m);
  EXPECT_EQ(m, (std::vector<uint8_t>{0, 1, 1, 1, 1}));
  top_k_mask(v, 0, m);
  EXPECT_EQ(m, std::vector<uint8_t>(5, 1));
  top_k_mask(v, 5, m);
  EXPECT_EQ(m, std::vector<uint8_t>(5, 1));
}

TEST(StolenLists, ScoresAndWeights) {
  EXPECT_DOUBLE_EQ(StolenLists::score({0, 0, 0}), 0.0);
  EXPECT_NEAR(StolenLists::score({0, 3, 1}), std::log(2.0), 1e-12);
  EXPECT_DOUBLE_EQ(StolenLists::weight({0, 1, 5}), 0.0);   // seen less than expected
  EXPECT_DOUBLE_EQ(StolenLists::weight({0, 20, 1}), 1.0);  // clamped
  StolenLists s(Scheme::Kgw, 4, 10);
  s.add(2, {{3, 5, 0.1}, {7, 1, 3}});
  EXPECT_GT(s.weight(2, 3), 0.99);
  EXPECT_EQ(s.weight(2, 7), 0.0);
  EXPECT_EQ(s.weight(1, 3), 0.0);
  std::vector<float> logits(10, 0.0f);
  s.add_bias(2, 4.0, logits);
  EXPECT_FLOAT_EQ(logits[3], static_cast<float>(4.0 * s.weight(2, 3)));
  EXPECT_EQ(std::accumulate(logits.begin(), logits.end(), 0.0f), logits[3]);
  EXPECT_EQ(s.pair_count(), 2);
  EXPECT_THROW(s.pairs(4), Error);
  EXPECT_EQ(scheme_from_name("kgw"), Scheme::Kgw);
  EXPECT_THROW(scheme_from_name("kgw2"), Error);
}

// The text-only attacker's counts by hand: contexts are the previous tokens, each occurrence of a
// context adds the base probability of every token tracked in it.
TEST(StealTextOnly, CountsFollowThePreviousTokenAndTheBase) {
  const std::vector<double> base = {0.1, 0.2, 0.3, 0.4};
  const std::vector<ObservedText> texts = {{{0, 1}, {2, 2, 3}}, {{0}, {1, 2}}};
  const int64_t checkpoints[] = {2, 5};
  const auto s = steal_text_only(texts, checkpoints, base);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].scheme(), Scheme::Kgw);
  EXPECT_EQ(s[0].contexts(), 4);
  EXPECT_EQ(s[0].observed_tokens, 2);
  EXPECT_EQ(s[1].observed_tokens, 5);
  // After 2 tokens: 1 -> 2 and 2 -> 2 seen; context 2 tracks tokens 2 and 3 (2 -> 3 comes later).
  ASSERT_EQ(s[0].pairs(1).size(), 1u);
  EXPECT_EQ(s[0].pairs(1)[0].token, 2);
  EXPECT_DOUBLE_EQ(s[0].pairs(1)[0].observed, 1);
  EXPECT_DOUBLE_EQ(s[0].pairs(1)[0].expected, 0.3);
  ASSERT_EQ(s[0].pairs(2).size(), 1u);
  EXPECT_DOUBLE_EQ(s[0].pairs(2)[0].expected, 0.3);
  // All 5: context 2 came twice (before the second 2 and before 3), context 1 twice (once in each
  // text), context 0 once.
  ASSERT_EQ(s[1].pairs(2).size(), 2u);
  EXPECT_DOUBLE_EQ(s[1].pairs(2)[0].expected, 2 * 0.3);  // token 2
  EXPECT_DOUBLE_EQ(s[1].pairs(2)[1].observed, 1);        // token 3
  EXPECT_DOUBLE_EQ(s[1].pairs(2)[1].expected, 2 * 0.4);
  ASSERT_EQ(s[1].pairs(1).size(), 1u);
  EXPECT_DOUBLE_EQ(s[1].pairs(1)[0].observed, 2);
  EXPECT_DOUBLE_EQ(s[1].pairs(1)[0].expected, 2 * 0.3);
  ASSERT_EQ(s[1].pairs(0).size(), 1u);  // 0 -> 1 in the second text
  EXPECT_EQ(s[1].pairs(0)[0].token, 1);
  EXPECT_EQ(s[1].expert_hits, 0);

  const std::vector<int32_t> toks = {0, 0, 3};
  const auto u = unigram_base(toks, 4);
  EXPECT_DOUBLE_EQ(u[0], 3.0 / 7);
  EXPECT_DOUBLE_EQ(u[1], 1.0 / 7);
  EXPECT_DOUBLE_EQ(u[3], 2.0 / 7);
  const std::vector<int32_t> bad = {5};
  EXPECT_THROW(unigram_base(bad, 4), Error);
  const std::vector<ObservedText> outside = {{{0}, {9}}};
  EXPECT_THROW(steal_text_only(outside, checkpoints, base), Error);
}

}  // namespace
