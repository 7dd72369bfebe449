// The `epwa eval` pipeline: generate watermarked / unwatermarked texts, take human passages, run
// teacher-forced passes for router records and oracle perplexity, detect with every method, attack,
// and collect every number into one JSON document.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <numeric>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/eval.hpp"
#include "epwa/files.hpp"
#include "epwa/generate.hpp"
#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/pepi.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/tokenizer.hpp"
#include "epwa/watermark.hpp"
#include "eval/frontier.hpp"
#include "eval/generation.hpp"

namespace epwa::eval {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Keeps the top-1 expert of every position at one router layer.
class LayerTap : public RouterObserver {
 public:
  explicit LayerTap(int32_t layer) : layer_(layer) {}
  void observe(const RouterObservation& o) override {
    if (o.layer != layer_) return;
    const size_t p = static_cast<size_t>(o.position);
    if (records.size() <= p) records.resize(p + 1);
    records[p] = top1_expert(o);
  }
  std::vector<RouterRecord> records;

 private:
  int32_t layer_;
};

struct Analysis {
  std::vector<RouterRecord> records;
  std::vector<RouterRecord> pepi;          // PEPI's predicted experts (when an oracle is loaded)
  double pepi_seconds = 0;                 // oracle predictions (the logits come with the pass)
  std::vector<double> nll;                 // tokens[start..]
  std::vector<std::vector<int32_t>> topk;  // per text position i (= sequence start + i)
};

// Hands the detector the PEPI records computed from the pass's own logits, so that PEPI costs no
// second forward pass (the local model plays the API).
class CachedPredictor : public ExpertPredictor {
 public:
  std::vector<RouterRecord> predict(std::span<const int32_t>, int64_t) override { return records; }
  std::vector<RouterRecord> records;
};

// Why perplexity rises: next-token entropy and the green mass the bias moves, per scored position
// of unwatermarked texts (router expert of the same pass).
struct Spread {
  std::vector<double> entropy_t, entropy_1, green;  // at the sampling temperature and at T = 1
};

}  // namespace

std::vector<double> token_nll(Model& model, std::span<const int32_t> tokens, int64_t start) {
  check(start >= 1 && start < static_cast<int64_t>(tokens.size()),
        "token_nll: start must be in [1, " + std::to_string(tokens.size()) + ")");
  Context cache = model.make_context(static_cast<int64_t>(tokens.size()));
  ForwardOptions fo;
  fo.all_logits = true;
  const std::vector<float> lg = model.forward(tokens, cache, fo);
  const size_t V = static_cast<size_t>(model.config().vocab_size);
  std::vector<double> out;
  for (size_t p = static_cast<size_t>(start) - 1; p + 1 < tokens.size(); ++p) {
    const float* row = lg.data() + p * V;
    const double mx = *std::max_element(row, row + V);
    double s = 0;
    for (size_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
    out.push_back(mx + std::log(s) - row[tokens[p + 1]]);
  }
  return out;
}

namespace {

class Pipeline {
 public:
  explicit Pipeline(const EvalOptions& o) : o_(o) {}
  json run();

 private:
  struct Text {
    std::vector<int32_t> prompt;  // BOS + prompt tokens
    std::vector<int32_t> text;    // generated / human tokens after the prompt
    std::vector<std::vector<int32_t>> topk;
    double ppl = 0;
    double z_full = 0;  // full method, with prompt (for the delta grid)
    size_t key = 0;     // the keyring's key that watermarked it (KR-v1)
  };
  // z of each detector label for one text under one condition.
  using Scores = std::map<std::string, double>;

  void say(const std::string& s) const {
    if (o_.progress) o_.progress(s);
  }
  Analysis analyze(std::span<const int32_t> seq, int64_t start, bool logits) {
    return analyze(*model_, seq, start, logits);
  }
  Analysis analyze(Model& m, std::span<const int32_t> seq, int64_t start, bool logits);
  json cross_precision(const std::vector<Text>& full_texts);
  Scores detect_all(std::span<const int32_t> seq, int64_t prompt_len, const Analysis& a,
                    bool timed);
  json spread_json() const;
  json pepi_json() const;
  void checkpoint(const json& out, const std::string& phase) const {
    if (!o_.checkpoint) return;
    json c = out;
    c["partial"] = "finished up to: " + phase;
    o_.checkpoint(c);
  }
  std::vector<int32_t> generate_one(std::span<const int32_t> prompt, WatermarkProcessor* wp,
                                    uint64_t seed) {
    return generate_one(*model_, prompt, wp, seed);
  }
  std::vector<int32_t> generate_one(Model& m, std::span<const int32_t> prompt,
                                    WatermarkProcessor* wp, uint64_t seed);
  // Generates (or takes) texts and fills scores for both prompt conditions.
  void score_texts(const std::string& name, std::vector<Text>& texts, bool quality);
  json summarize(const std::vector<double>& pos, const std::vector<double>& neg,
                 uint64_t seed) const;
  json attacks(const std::string& mode, std::vector<Text>& texts);
  json grid_point(const std::string& mode, double delta, const std::vector<Text>& texts,
                  size_t count) const;
  json token_view(const Text& t);
  // One processor of `mode` per key of the keyring (index = key).
  std::vector<std::unique_ptr<WatermarkProcessor>> processors(WatermarkMode mode,
                                                              double delta) const {
    std::vector<std::unique_ptr<WatermarkProcessor>> v;
    WatermarkConfig cfg{mode, o_.gamma, delta, {}, layer_};
    cfg.context_buckets = o_.context_buckets;
    for (const auto& lists : keyring_)
      v.push_back(std::make_unique<WatermarkProcessor>(cfg, lists));
    return v;
  }
  KeyringDetector keyring_detector(const DetectOptions& opt) const {
    std::vector<std::string> ids;
    for (size_t k = 0; k < keyring_.size(); ++k) ids.push_back(std::to_string(k));
    KeyringDetector d(ids, keyring_, opt);
    d.set_parallel_for([](int64_t n, const auto& fn) { ThreadPool::global().parallel_for(n, fn); });
    return d;
  }

  const EvalOptions& o_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Tokenizer> tok_;
  std::vector<int32_t> suppress_;  // ids that are not text (EOS aside, a stop token)
  // The keyring (one key unless o_.keys > 1), KR-v1's rotation secret, and the correction of the
  // detectors' z for its size: z_m - 4 (EvalOptions::keys).
  std::vector<std::shared_ptr<const GreenLists>> keyring_;
  std::string rotation_;
  double z_shift_ = 0;
  std::vector<std::pair<std::string, KeyringDetector>> detectors_;
  int32_t layer_ = 0;
  int32_t first_normal_ = 0;
  std::vector<std::vector<int32_t>> human_texts_;  // human passages' text tokens (for splicing)
  // scores_[source]["prompt"|"noprompt"][label] = z per text
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<double>>>> scores_;
  std::map<std::string, json> quality_;
  std::shared_ptr<const Oracle> oracle_;
  std::shared_ptr<CachedPredictor> cached_ = std::make_shared<CachedPredictor>();
  Spread spread_;
  bool collect_spread_ = false;
  bool pepi_on_ = true;
  double pass_seconds_ = 0;
  int64_t pass_tokens_ = 0;
  std::map<std::string, double> detect_seconds_;
  int64_t detect_tokens_ = 0;
  json cross_precision_ = {{"skipped", "disabled (--no-cross-precision)"}};
};

Analysis Pipeline::analyze(Model& m, std::span<const int32_t> seq, int64_t start, bool logits) {
  const auto t0 = Clock::now();
  LayerTap tap(layer_);
  Context cache = m.make_context(static_cast<int64_t>(seq.size()));
  ForwardOptions fo;
  fo.observer = &tap;
  // PEPI reads the logits of the main load; a pass with logits costs several times one that
  // stops after the watermark layer, so attacks use it only where pepi_attacks_ says.
  const bool pepi = oracle_ && pepi_on_ && &m == model_.get();
  if (logits || pepi)
    fo.all_logits = true;
  else
    fo.stop_after_router = layer_;
  const std::vector<float> lg = m.forward(seq, cache, fo);
  Analysis a;
  a.records = std::move(tap.records);
  check(a.records.size() >= seq.size(),
        "eval: the model reported fewer router records than positions");
  const size_t V = static_cast<size_t>(model_->config().vocab_size);
  if (pepi) {
    const auto tp = Clock::now();
    const int32_t k = oracle_->info().features.full ? 0 : oracle_->info().features.k;
    a.pepi.assign(seq.size() - 1, RouterRecord{0, 0.0f});
    for (size_t p = static_cast<size_t>(std::max<int64_t>(start, 1)) - 1; p + 1 < seq.size(); ++p)
      a.pepi[p] = oracle_->predict(top_logprobs(std::span(lg).subspan(p * V, V), k), seq[p],
                                   p > 0 ? seq[p - 1] : -1);
    a.pepi_seconds = seconds_since(tp);
  }
  if (logits) {
    const size_t k = static_cast<size_t>(std::max(1, o_.top_k_attack));
    std::vector<int32_t> order(V);
    for (size_t p = static_cast<size_t>(start) - 1; p + 1 < seq.size(); ++p) {
      const float* row = lg.data() + p * V;
      const double mx = *std::max_element(row, row + V);
      double s = 0;
      for (size_t v = 0; v < V; ++v) s += std::exp(static_cast<double>(row[v]) - mx);
      a.nll.push_back(mx + std::log(s) - row[seq[p + 1]]);
      if (collect_spread_) {
        // Entropy at T = 1 from the same sums; at the sampling temperature and the green mass
        // of the router's expert with one more pass over the row.
        double e1 = 0, st = 0, et = 0, gt = 0;
        const double T = std::max(1e-3, static_cast<double>(o_.temperature));
        const GreenLists& gl = *keyring_[0];  // unwatermarked text: any key's lists alike
        const auto bits = gl.bits(gl.context(a.records[p].expert, seq[p]));
        for (size_t v = 0; v < V; ++v) {
          const double x = static_cast<double>(row[v]) - mx;
          e1 -= std::exp(x) / s * (x - std::log(s));
          const double w = std::exp(x / T);
          st += w;
          et += w * x / T;
          if ((bits[v >> 6] >> (v & 63)) & 1u) gt += w;
        }
        spread_.entropy_1.push_back(e1);
        spread_.entropy_t.push_back(std::log(st) - et / st);
        spread_.green.push_back(gt / st);
      }
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(std::min(k, V)),
                        order.end(), [row](int32_t x, int32_t y) { return row[x] > row[y]; });
      std::vector<int32_t> top;
      for (size_t i = 0; i < std::min(k, V); ++i)
        if (order[i] >= first_normal_) top.push_back(order[i]);
      a.topk.push_back(std::move(top));
    }
  }
  pass_seconds_ += seconds_since(t0);
  pass_tokens_ += static_cast<int64_t>(seq.size());
  return a;
}

Pipeline::Scores Pipeline::detect_all(std::span<const int32_t> seq, int64_t prompt_len,
                                      const Analysis& a, bool timed) {
  Scores out;
  DetectionInput in{seq, prompt_len, a.records, {}};
  cached_->records = a.pepi;
  for (auto& [label, det] : detectors_) {
    const bool is_pepi = label.rfind("pepi", 0) == 0;
    if (is_pepi && a.pepi.empty()) continue;  // PEPI not run on this pass
    const auto t0 = Clock::now();
    out[label] = det.detect(in).best.z - z_shift_;
    if (timed) detect_seconds_[label] += seconds_since(t0) + (is_pepi ? a.pepi_seconds : 0);
  }
  if (timed) detect_tokens_ += static_cast<int64_t>(seq.size());
  return out;
}

std::vector<int32_t> Pipeline::generate_one(Model& m, std::span<const int32_t> prompt,
                                            WatermarkProcessor* wp, uint64_t seed) {
  return generate_text(m, prompt, wp, seed, {o_.tokens, o_.temperature, o_.top_p, suppress_});
}

std::vector<int32_t> concat(std::span<const int32_t> a, std::span<const int32_t> b) {
  std::vector<int32_t> s(a.begin(), a.end());
  s.insert(s.end(), b.begin(), b.end());
  return s;
}

void Pipeline::score_texts(const std::string& name, std::vector<Text>& texts, bool quality) {
  std::vector<double> ppl, d1, d2, d3, len;
  auto& sc = scores_[name];
  const int32_t bos = model_->config().bos_token_id;
  for (size_t i = 0; i < texts.size(); ++i) {
    Text& t = texts[i];
    if (t.text.empty()) continue;
    const auto seq = concat(t.prompt, t.text);
    const int64_t P = static_cast<int64_t>(t.prompt.size());
    collect_spread_ = quality && name == "none";
    Analysis a = analyze(seq, P, quality);
    collect_spread_ = false;
    for (auto& [label, z] : detect_all(seq, P, a, true)) {
      sc["prompt"][label].push_back(z);
      if (label == (name == "exp" ? "exp" : "full")) t.z_full = z;  // the text's own scheme
    }
    if (quality) {
      t.ppl = perplexity_from_nll(a.nll);
      t.topk = std::move(a.topk);
      ppl.push_back(t.ppl);
      d1.push_back(distinct_n(t.text, 1));
      d2.push_back(distinct_n(t.text, 2));
      d3.push_back(distinct_n(t.text, 3));
    }
    len.push_back(static_cast<double>(t.text.size()));
    const std::vector<int32_t> bare = concat(std::vector<int32_t>{bos}, t.text);
    Analysis b = analyze(bare, 1, false);
    for (auto& [label, z] : detect_all(bare, 1, b, true)) sc["noprompt"][label].push_back(z);
    if ((i + 1) % 5 == 0 || i + 1 == texts.size())
      say("detect " + name + " " + std::to_string(i + 1) + "/" + std::to_string(texts.size()));
  }
  json q = {{"texts", len.size()}, {"mean_tokens", mean(len)}};
  if (quality && !ppl.empty()) {
    q["ppl_mean"] = mean(ppl);
    q["ppl_median"] = median(ppl);
    const auto ci = bootstrap_ci(
        ppl, [](std::span<const double> v) { return mean(v); }, o_.bootstrap, 11);
    q["ppl_mean_ci"] = {ci.lo, ci.hi};
    q["distinct_1"] = mean(d1);
    q["distinct_2"] = mean(d2);
    q["distinct_3"] = mean(d3);
    q["ppl"] = ppl;
  }
  quality_[name] = q;
}

json Pipeline::summarize(const std::vector<double>& pos, const std::vector<double>& neg,
                         uint64_t seed) const {
  json j;
  j["n_pos"] = pos.size();
  j["n_neg"] = neg.size();
  const double thr = 4.0;
  auto above = [thr](std::span<const double> v) { return rate_above(v, thr); };
  j["tpr_z4"] = rate_above(pos, thr);
  j["z_pos_mean"] = mean(pos);
  j["z_pos_median"] = median(pos);
  j["z_pos"] = pos;
  if (!pos.empty()) {
    const auto c = bootstrap_ci(pos, above, o_.bootstrap, seed);
    j["tpr_z4_ci"] = {c.lo, c.hi};
  }
  if (neg.empty() || pos.empty()) return j;
  j["fpr_z4"] = rate_above(neg, thr);
  const auto cf = bootstrap_ci(neg, above, o_.bootstrap, seed + 1);
  j["fpr_z4_ci"] = {cf.lo, cf.hi};
  j["auc"] = roc_auc(pos, neg);
  const auto ca = bootstrap_ci2(
      pos, neg, [](std::span<const double> p, std::span<const double> n) { return roc_auc(p, n); },
      o_.bootstrap, seed + 2);
  j["auc_ci"] = {ca.lo, ca.hi};
  for (auto [name, f] : {std::pair{"fpr1", 0.01}, std::pair{"fpr01", 0.001}}) {
    j[std::string("thr_") + name] = threshold_at_fpr(neg, f);
    j[std::string("tpr_") + name] = tpr_at_fpr(pos, neg, f);
    const auto c = bootstrap_ci2(
        pos, neg,
        [f](std::span<const double> p, std::span<const double> n) { return tpr_at_fpr(p, n, f); },
        o_.bootstrap, seed + 3);
    j[std::string("tpr_") + name + "_ci"] = {c.lo, c.hi};
  }
  j["z_neg_mean"] = mean(neg);
  j["z_neg_median"] = median(neg);
  j["z_neg"] = neg;
  json roc = json::array();
  for (const RocPoint& p : roc_curve(pos, neg)) roc.push_back({p.fpr, p.tpr});
  j["roc"] = roc;
  return j;
}

json Pipeline::attacks(const std::string& mode, std::vector<Text>& texts) {
  const int32_t count = o_.attack_texts < 0 ? static_cast<int32_t>(texts.size())
                                            : std::min<int32_t>(o_.attack_texts, texts.size());
  const int32_t bos = model_->config().bos_token_id;
  // key "source|kind|rate|prompt" -> label -> z
  std::map<std::string, std::map<std::string, std::vector<double>>> z;
  const AttackKind kinds[] = {AttackKind::Substitute, AttackKind::Delete, AttackKind::Insert};
  for (int32_t i = 0; i < count; ++i) {
    const Text& t = texts[i];
    if (t.text.empty()) continue;
    for (const std::string source : {"vocab", "topk"}) {
      TokenSource src{first_normal_, model_->config().vocab_size, {}};
      if (source == "topk") src.candidates = t.topk;
      for (AttackKind kind : kinds) {
        for (double rate : o_.attack_rates) {
          const uint64_t seed = o_.seed * 1000003ULL + static_cast<uint64_t>(i) * 7919ULL +
                                static_cast<uint64_t>(std::llround(rate * 1000));
          const auto edited = attack(t.text, kind, rate, src, seed);
          const std::string key = source + "|" + attack_name(kind) + "|" + std::to_string(rate);
          const auto seq = concat(t.prompt, edited);
          // PEPI only on the fluent substitution with prompt (and the crops below).
          pepi_on_ = source == "topk" && kind == AttackKind::Substitute;
          const Analysis a = analyze(seq, static_cast<int64_t>(t.prompt.size()), false);
          pepi_on_ = false;
          for (auto& [label, v] : detect_all(seq, static_cast<int64_t>(t.prompt.size()), a, false))
            z[key + "|prompt"][label].push_back(v);
          if (kind == AttackKind::Substitute) {  // the prompt-less target is on substitution
            const auto bare = concat(std::vector<int32_t>{bos}, edited);
            const Analysis b = analyze(bare, 1, false);
            for (auto& [label, v] : detect_all(bare, 1, b, false))
              z[key + "|noprompt"][label].push_back(v);
          }
        }
      }
    }
    say("attacks " + mode + " " + std::to_string(i + 1) + "/" + std::to_string(count));
  }
  json out = json::array();
  uint64_t seed = 100;
  for (auto& [key, by_label] : z) {
    std::vector<std::string> parts;
    size_t pos = 0;
    for (size_t e; (e = key.find('|', pos)) != std::string::npos; pos = e + 1)
      parts.push_back(key.substr(pos, e - pos));
    parts.push_back(key.substr(pos));
    for (auto& [label, v] : by_label) {
      // Dedup only, to keep the table short; the exp scheme is not what these texts carry.
      if (label.find("repeats") != std::string::npos || label == "exp") continue;
      const auto ci = bootstrap_ci(
          v, [](std::span<const double> s) { return rate_above(s, 4.0); }, o_.bootstrap, seed++);
      out.push_back({{"mode", mode},
                     {"source", parts[0]},
                     {"attack", parts[1]},
                     {"rate", std::stod(parts[2])},
                     {"prompt", parts[3] == "prompt"},
                     {"method", label},
                     {"n", v.size()},
                     {"tpr_z4", rate_above(v, 4.0)},
                     {"tpr_z4_ci", {ci.lo, ci.hi}},
                     {"z_mean", mean(v)}});
    }
  }
  pepi_on_ = true;
  // Span cropping: a window alone, and a window inside human text (no prompt either way).
  std::map<std::string, std::vector<double>> crop;
  const auto& humans = human_texts_;
  for (int32_t i = 0; i < count; ++i) {
    const Text& t = texts[i];
    if (t.text.empty()) continue;
    const Spliced s =
        splice_window(t.text, humans.empty() ? std::vector<int32_t>{} : humans[i % humans.size()],
                      static_cast<size_t>(o_.crop_window), o_.seed + i);
    const std::span<const int32_t> window(s.tokens.data() + s.window_start, s.window_size);
    for (auto [name, body] :
         {std::pair{std::string("crop"), std::vector<int32_t>(window.begin(), window.end())},
          std::pair{std::string("splice"), s.tokens}}) {
      const auto seq = concat(std::vector<int32_t>{bos}, body);
      const Analysis a = analyze(seq, 1, false);
      for (auto& [label, v] : detect_all(seq, 1, a, false)) crop[name + "|" + label].push_back(v);
    }
  }
  for (auto& [key, v] : crop) {
    const auto bar = key.find('|');
    const std::string label = key.substr(bar + 1);
    if (label.find("repeats") != std::string::npos || label == "exp") continue;
    const auto ci = bootstrap_ci(
        v, [](std::span<const double> s) { return rate_above(s, 4.0); }, o_.bootstrap, seed++);
    out.push_back({{"mode", mode},
                   {"source", "human"},
                   {"attack", key.substr(0, bar)},
                   {"rate", static_cast<double>(o_.crop_window)},
                   {"prompt", false},
                   {"method", label},
                   {"n", v.size()},
                   {"tpr_z4", rate_above(v, 4.0)},
                   {"tpr_z4_ci", {ci.lo, ci.hi}},
                   {"z_mean", mean(v)}});
  }
  return out;
}

// GSG texts generated by each precision (stored, 8-bit, 4-bit loads) and detected by each; the
// router agreement (same top-1 expert at the watermark layer) explains the differences.
json Pipeline::cross_precision(const std::vector<Text>& all_texts) {
  const size_t count = o_.cross_texts < 0
                           ? all_texts.size()
                           : std::min(all_texts.size(), static_cast<size_t>(o_.cross_texts));
  const std::vector<Text> full_texts(all_texts.begin(),
                                     all_texts.begin() + static_cast<std::ptrdiff_t>(count));
  std::map<std::string, std::unique_ptr<Model>> owned;
  std::map<std::string, Model*> models{{"stored", model_.get()}};
  for (auto [name, mode] :
       {std::pair{"8bit", LoadMode::Bits8}, std::pair{"4bit", LoadMode::Bits4}}) {
    LoadOptions lo;
    lo.mode = mode;
    lo.use_cache = false;
    lo.warn = [this](const std::string& w) { say(w); };
    owned[name] = Model::load(o_.model_path, lo);
    models[name] = owned[name].get();
  }
  auto wp = processors(WatermarkMode::GSG, o_.delta);
  const KeyringDetector det = keyring_detector({});
  json rows = json::array();
  uint64_t seed = 500;
  for (const std::string g : {"4bit", "stored", "8bit"}) {
    std::vector<Text> texts;
    if (g == "stored") {
      texts = full_texts;
    } else if (g == "4bit") {
      for (const Text& f : full_texts) {
        Text t;
        t.prompt = f.prompt;
        t.key = f.key;
        t.text = generate_one(*models[g], t.prompt, wp[t.key].get(), o_.seed + texts.size());
        texts.push_back(std::move(t));
        if (texts.size() % 10 == 0)
          say("cross-precision: 4-bit generation " + std::to_string(texts.size()) + "/" +
              std::to_string(full_texts.size()));
      }
    } else {
      continue;  // 8-bit generation is not measured (4-bit is the harder case)
    }
    std::map<std::string, std::vector<RouterRecord>> own;  // generator's records per text, reused
    for (const std::string d : {"stored", "8bit", "4bit"}) {
      std::vector<double> z;
      int64_t agree = 0, total = 0;
      for (size_t i = 0; i < texts.size(); ++i) {
        if (texts[i].text.empty()) continue;
        const auto seq = concat(texts[i].prompt, texts[i].text);
        const int64_t P = static_cast<int64_t>(texts[i].prompt.size());
        const Analysis a = analyze(*models[d], seq, P, false);
        z.push_back(det.detect({seq, P, a.records, {}}).best.z - z_shift_);
        const std::string key = std::to_string(i);
        if (d == g) own[key] = a.records;
        if (d != g) {
          if (!own.count(key)) own[key] = analyze(*models[g], seq, P, false).records;
          for (size_t p = static_cast<size_t>(P) - 1; p + 1 < seq.size(); ++p)
            agree += own[key][p].expert == a.records[p].expert, ++total;
        }
      }
      const auto ci = bootstrap_ci(
          z, [](std::span<const double> v) { return rate_above(v, 4.0); }, o_.bootstrap, seed++);
      json row = {{"generated_with", g},
                  {"detected_with", d},
                  {"method", "full"},
                  {"prompt", true},
                  {"n", z.size()},
                  {"tpr_z4", rate_above(z, 4.0)},
                  {"tpr_z4_ci", {ci.lo, ci.hi}},
                  {"z_mean", mean(z)}};
      if (total > 0)
        row["router_agreement"] = static_cast<double>(agree) / static_cast<double>(total);
      rows.push_back(std::move(row));
      say("cross-precision: generated " + g + ", detected " + d + ": TPR@z4 " +
          std::to_string(rate_above(z, 4.0)));
    }
  }
  return rows;
}

json Pipeline::grid_point(const std::string& mode, double delta, const std::vector<Text>& texts,
                          size_t count) const {
  std::vector<double> ppl, z;
  for (size_t i = 0; i < std::min(count, texts.size()); ++i) {
    if (texts[i].text.empty()) continue;
    ppl.push_back(texts[i].ppl);
    z.push_back(texts[i].z_full);
  }
  json j = {{"mode", mode},
            {"delta", delta},
            {"n", ppl.size()},
            {"ppl_mean", mean(ppl)},
            {"ppl_median", median(ppl)},
            {"tpr_z4", rate_above(z, 4.0)},
            {"z_mean", mean(z)}};
  if (!ppl.empty()) {
    const auto c = bootstrap_ci(
        ppl, [](std::span<const double> v) { return mean(v); }, o_.bootstrap, 21);
    j["ppl_mean_ci"] = {c.lo, c.hi};
  }
  return j;
}

json Pipeline::spread_json() const {
  const Spread& sp = spread_;
  if (sp.green.empty()) return {{"skipped", "no unwatermarked text"}};
  const double T = std::max(1e-3, static_cast<double>(o_.temperature));
  std::vector<double> deltas = {0.5, 1.0, 1.5, 2.0, 3.0, o_.delta};
  deltas.insert(deltas.end(), o_.delta_grid.begin(), o_.delta_grid.end());
  std::sort(deltas.begin(), deltas.end());
  deltas.erase(std::unique(deltas.begin(), deltas.end()), deltas.end());
  json after = json::array();
  for (double d : deltas) {
    // The processor adds delta to the green logits before the temperature divides them, so the
    // green mass G becomes G e^(d/T) / (G e^(d/T) + 1 - G).
    const double f = std::exp(d / T);
    double m = 0;
    for (double g : sp.green) m += g * f / (g * f + 1.0 - g);
    after.push_back({{"delta", d}, {"green_mass", m / static_cast<double>(sp.green.size())}});
  }
  auto share_below = [](const std::vector<double>& v, double x) {
    return static_cast<double>(std::count_if(v.begin(), v.end(), [x](double e) { return e < x; })) /
           static_cast<double>(v.size());
  };
  return {{"texts", "unwatermarked"},
          {"positions", sp.green.size()},
          {"temperature", o_.temperature},
          {"entropy_nats_mean_t", mean(sp.entropy_t)},
          {"entropy_nats_median_t", median(sp.entropy_t)},
          {"entropy_nats_mean_t1", mean(sp.entropy_1)},
          {"share_entropy_t_below_0_5", share_below(sp.entropy_t, 0.5)},
          {"share_entropy_t_below_1", share_below(sp.entropy_t, 1.0)},
          {"green_mass_before", mean(sp.green)},
          {"green_mass_after", after}};
}

json Pipeline::pepi_json() const {
  if (!oracle_)
    return {{"skipped", "no oracle (--oracle FILE; default MODEL.oracle when present)"}};
  const OracleInfo& i = oracle_->info();
  return {{"oracle", path_to_utf8(o_.oracle)},
          {"features", pepi_features_name(i.features)},
          {"router_layer", i.router_layer},
          {"distributions", "local model (simulated API), top-k as trained"},
          {"metrics", to_json(oracle_->metrics())}};
}

json Pipeline::token_view(const Text& t) {
  DetectOptions opt;
  opt.tokens_detail = true;
  const Detector det(keyring_[t.key], opt);
  const auto seq = concat(t.prompt, t.text);
  const Analysis a = analyze(seq, static_cast<int64_t>(t.prompt.size()), false);
  const DetectionResult r = det.detect({seq, static_cast<int64_t>(t.prompt.size()), a.records, {}});
  auto piece = [this](int32_t id) {
    std::string s = tok_->token_to_piece(id);
    if (s.size() == 6 && s.rfind("<0x", 0) == 0 && s.back() == '>') {  // byte piece
      const int v = std::stoi(s.substr(3, 2), nullptr, 16);
      return v == 10              ? std::string("\n")
             : v < 128 && v >= 32 ? std::string(1, static_cast<char>(v))
                                  : s;
    }
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      if (s.compare(i, 3, "\xe2\x96\x81") == 0) {  // U+2581, SentencePiece's space
        out += ' ';
        i += 2;
      } else {
        out += s[i];
      }
    }
    return out;
  };
  json toks = json::array();
  for (const TokenDetail& d : r.tokens)
    toks.push_back(
        {{"text", piece(d.token)}, {"green", d.green}, {"scored", d.scored}, {"expert", d.expert}});
  return {{"prompt", tok_->decode(t.prompt, true)},
          {"z", r.z},
          {"g", r.g},
          {"n", r.n},
          {"tokens", toks}};
}

json Pipeline::run() {
  check(o_.n > 0, "eval: --n must be > 0");
  check(o_.tokens > 0, "eval: --tokens must be > 0");
  check(o_.bootstrap > 0, "eval: --bootstrap must be > 0");
  const auto t_start = Clock::now();
  model_ = Model::load(o_.model_path);
  tok_ = load_tokenizer(o_.model_path);
  const ModelConfig& c = model_->config();
  check(tok_->vocab_size() <= c.vocab_size,
        "eval: the tokenizer has more tokens than the model's vocabulary");
  for (int32_t id : non_text_token_ids(*tok_, c.vocab_size))
    if (id != c.eos_token_id) suppress_.push_back(id);
  layer_ = model_router_layer(*model_, -1);
  const std::string hash = router_hash(*model_);
  check(o_.keys >= 1, "eval: --keys must be >= 1");
  check(!o_.exp || o_.context_buckets == 0,
        "eval: --exp takes no --context-buckets (EXP-v1 is keyed by the previous token already)");
  const std::vector<std::string> secrets = derived_keys(o_.key, o_.keys);
  for (const std::string& secret : secrets)
    keyring_.push_back(std::make_shared<GreenLists>(secret, hash, c.vocab_size, o_.gamma,
                                                    c.num_experts, o_.context_buckets));
  rotation_ = keyring_rotation_secret(secrets);
  z_shift_ = keyring_threshold(4.0, o_.keys) - 4.0;
  for (int32_t id = 0; id < tok_->vocab_size(); ++id) {
    if (tok_->token_type(id) == TokenType::Normal) {
      first_normal_ = id;
      break;
    }
  }
  for (DetectMethod m : {DetectMethod::Full, DetectMethod::Cspv, DetectMethod::Weighted}) {
    for (bool rep : {false, true}) {
      DetectOptions opt;
      opt.method = m;
      opt.count_repeats = rep;
      opt.sample = o_.cspv_sample;
      detectors_.emplace_back(std::string(detect_method_name(m)) + (rep ? "+repeats" : ""),
                              keyring_detector(opt));
    }
  }
  if (o_.exp) {
    DetectOptions opt;
    opt.scheme = DetectScheme::Exp;
    detectors_.emplace_back("exp", keyring_detector(opt));
  }
  if (!o_.oracle.empty()) {
    auto oracle = std::make_shared<const Oracle>(Oracle::load(o_.oracle));
    oracle->check_router_hash(hash);
    check(oracle->info().router_layer == layer_,
          "eval: the oracle '" + path_to_utf8(o_.oracle) + "' predicts router layer " +
              std::to_string(oracle->info().router_layer) + ", the watermark layer is " +
              std::to_string(layer_));
    oracle_ = std::move(oracle);
    for (bool rep : {false, true}) {
      DetectOptions opt;
      opt.method = DetectMethod::Pepi;
      opt.count_repeats = rep;
      KeyringDetector d = keyring_detector(opt);
      d.set_expert_predictor(cached_);
      detectors_.emplace_back(std::string("pepi") + (rep ? "+repeats" : ""), std::move(d));
    }
    say("PEPI oracle " + path_to_utf8(o_.oracle) + " (" +
        pepi_features_name(oracle_->info().features) + ", held-out accuracy " +
        std::to_string(oracle_->metrics().accuracy) + ")");
  }
  say("model " + path_to_utf8(o_.model_path) + ", router hash " + hash + ", layer " +
      std::to_string(layer_));

  // Prompts and human passages. Human passages that begin with a prompt are skipped (prompts are
  // taken from the same held-out file).
  const auto prompt_lines = read_input_lines(o_.prompts, "eval: input");
  check(static_cast<int32_t>(prompt_lines.size()) >= o_.n,
        "eval: '" + path_to_utf8(o_.prompts) + "' has " + std::to_string(prompt_lines.size()) +
            " prompts, --n is " + std::to_string(o_.n));
  const int32_t n_human = o_.n_human < 0 ? o_.n : o_.n_human;
  std::vector<Text> human;
  const int32_t human_prompt = 8, human_min = 50;
  for (const std::string& line : read_input_lines(o_.human, "eval: input")) {
    if (static_cast<int32_t>(human.size()) >= n_human) break;
    bool used = false;
    for (int32_t i = 0; i < static_cast<int32_t>(prompt_lines.size()) && !used; ++i)
      used = line.rfind(prompt_lines[i], 0) == 0;
    if (used) continue;
    const auto ids = tok_->encode(line, true, false);
    if (static_cast<int32_t>(ids.size()) < 1 + human_prompt + human_min) continue;
    Text t;
    t.prompt.assign(ids.begin(), ids.begin() + 1 + human_prompt);
    const size_t end = std::min(ids.size(), t.prompt.size() + static_cast<size_t>(o_.tokens));
    t.text.assign(ids.begin() + static_cast<std::ptrdiff_t>(t.prompt.size()), ids.begin() + end);
    human.push_back(std::move(t));
  }
  for (const Text& t : human) human_texts_.push_back(t.text);
  say("human passages: " + std::to_string(human.size()));

  json out;
  out["tool"] = "epwa eval";
  out["commit"] = o_.commit;
  out["model"] = {{"path", path_to_utf8(o_.model_path)},
                  {"format", model_->format()},
                  {"router_hash", hash},
                  {"watermark_layer", layer_},
                  {"vocab_size", c.vocab_size},
                  {"experts", c.num_experts},
                  {"layers", c.num_layers}};
  out["params"] = {{"key_bytes", o_.key.size()},
                   {"keys", o_.keys},
                   {"context_buckets", o_.context_buckets},
                   {"z_correction", z_shift_},
                   {"prompts", path_to_utf8(o_.prompts)},
                   {"human", path_to_utf8(o_.human)},
                   {"n", o_.n},
                   {"n_human", n_human},
                   {"tokens", o_.tokens},
                   {"gamma", o_.gamma},
                   {"delta", o_.delta},
                   {"delta_grid", o_.delta_grid},
                   {"temperature", o_.temperature},
                   {"top_p", o_.top_p},
                   {"seed", o_.seed},
                   {"cspv_sample", o_.cspv_sample},
                   {"exp", o_.exp},
                   {"threshold", 4.0},
                   {"attack_rates", o_.attack_rates},
                   {"attack_top_k", o_.top_k_attack},
                   {"attack_texts", o_.attack_texts},
                   {"crop_window", o_.crop_window},
                   {"bootstrap", o_.bootstrap},
                   {"human_prompt_tokens", human_prompt},
                   {"human_min_tokens", human_min}};

  if (!o_.frontier.empty()) {
    check(o_.keys == 1 && o_.context_buckets == 0,
          "eval: --frontier measures GL-v1 with one key (no --keys, no --context-buckets)");
    FrontierInput fi;
    fi.model = model_.get();
    fi.lists = keyring_[0];
    fi.layer = layer_;
    fi.sampling = {o_.tokens, o_.temperature, o_.top_p, suppress_};
    for (int32_t i = 0; i < o_.n; ++i)
      fi.prompts.push_back(tok_->encode(prompt_lines[i], true, false));
    for (const Text& t : human) fi.human.emplace_back(t.prompt, t.text);
    fi.first_normal = first_normal_;
    out["params"]["frontier_entropy"] = o_.frontier_entropy;
    out["params"]["frontier_attacks"] = o_.frontier_attacks;
    out["frontier"] = run_frontier(o_, fi);
    out["seconds"] = seconds_since(t_start);
    say("frontier done in " + std::to_string(static_cast<int64_t>(seconds_since(t_start))) + " s");
    return out;
  }

  // Generation: the same prompt and sampling seed for the unwatermarked and both watermarked texts.
  // With a keyring, KR-v1 picks one key per prompt and seed: a text and its unwatermarked twin
  // share it.
  std::map<std::string, std::vector<std::unique_ptr<WatermarkProcessor>>> wps;
  wps["gsg"] = processors(WatermarkMode::GSG, o_.delta);
  wps["ewp"] = processors(WatermarkMode::EWP, o_.delta);
  if (o_.exp) wps["exp"] = processors(WatermarkMode::Exp, o_.delta);
  std::vector<std::string> modes = {"none", "gsg", "ewp"};
  if (o_.exp) modes.emplace_back("exp");
  std::map<std::string, std::vector<Text>> gen;
  double gen_seconds = 0;
  int64_t gen_tokens = 0;
  for (int32_t i = 0; i < o_.n; ++i) {
    const auto prompt = tok_->encode(prompt_lines[i], true, false);
    const uint64_t text_seed = o_.seed + static_cast<uint64_t>(i);
    const size_t key = keyring_pick(rotation_, text_seed, prompt, keyring_.size());
    for (const std::string& name : modes) {
      const auto t0 = Clock::now();
      Text t;
      t.prompt = prompt;
      t.key = key;
      t.text = generate_one(prompt, name == "none" ? nullptr : wps.at(name)[key].get(), text_seed);
      gen_seconds += seconds_since(t0);
      gen_tokens += static_cast<int64_t>(t.text.size());
      gen[name].push_back(std::move(t));
    }
    say("generate " + std::to_string(i + 1) + "/" + std::to_string(o_.n) + " (" +
        std::to_string(static_cast<int64_t>(gen_tokens / std::max(gen_seconds, 1e-9))) +
        " tokens/s)");
  }

  std::vector<int64_t> per_key(keyring_.size(), 0);
  for (const Text& t : gen["gsg"]) ++per_key[t.key];
  out["keyring"] = {{"keys", keyring_.size()},
                    {"rotation", "KR-v1"},
                    {"texts_per_key", per_key},
                    {"z_threshold", 4.0 + z_shift_}};
  for (const std::string& name : modes) score_texts(name, gen[name], true);
  score_texts("human", human, false);

  // Detection summaries: positives = one mode, negatives = human + unwatermarked.
  json detection = json::array();
  uint64_t seed = 1;
  std::vector<std::string> marked = {"gsg", "ewp"};
  if (o_.exp) marked.push_back("exp");
  for (const std::string& mode : marked) {
    for (const std::string cond : {"prompt", "noprompt"}) {
      for (const auto& [label, det] : detectors_) {
        if ((label == "exp") != (mode == "exp")) continue;  // each scheme on its own texts
        std::vector<double> neg = scores_["human"][cond][label];
        const auto& un = scores_["none"][cond][label];
        neg.insert(neg.end(), un.begin(), un.end());
        json s = summarize(scores_[mode][cond][label], neg, seed);
        seed += 10;
        s["mode"] = mode;
        s["method"] = label.substr(0, label.find('+'));
        s["repeats"] = label.find("+repeats") != std::string::npos;
        s["prompt"] = cond == "prompt";
        s["negatives"] = {{"human", scores_["human"][cond][label].size()},
                          {"unwatermarked", un.size()}};
        detection.push_back(std::move(s));
      }
    }
  }

  json speed;
  speed["generate_tokens_per_s"] = gen_tokens / std::max(gen_seconds, 1e-9);
  const double pass_rate = pass_tokens_ / std::max(pass_seconds_, 1e-9);
  speed["router_pass_tokens_per_s"] = pass_rate;
  for (const auto& [label, secs] : detect_seconds_) {
    const double det_rate = detect_tokens_ / std::max(secs, 1e-9);
    speed["detector_tokens_per_s"][label] = det_rate;
    speed["end_to_end_tokens_per_s"][label] = 1.0 / (1.0 / pass_rate + 1.0 / det_rate);
  }

  out["quality"] = quality_;
  out["detection"] = detection;
  out["speed"] = speed;
  out["spread"] = spread_json();
  out["pepi"] = pepi_json();
  out["sample"] = token_view(gen["gsg"].front());
  out["samples_text"] = {{"none", tok_->decode(gen["none"].front().text, true)},
                         {"gsg", tok_->decode(gen["gsg"].front().text, true)},
                         {"ewp", tok_->decode(gen["ewp"].front().text, true)}};
  if (o_.exp) out["samples_text"]["exp"] = tok_->decode(gen["exp"].front().text, true);
  const size_t n_grid =
      o_.delta_texts < 0 ? static_cast<size_t>(o_.n) : std::min<size_t>(o_.n, o_.delta_texts);
  json grid = json::array();
  grid.push_back(grid_point("none", 0.0, gen["none"], n_grid));
  for (const std::string mode : {"gsg", "ewp"})
    grid.push_back(grid_point(mode, o_.delta, gen[mode], n_grid));
  if (o_.exp) grid.push_back(grid_point("exp", 0.0, gen["exp"], n_grid));  // it biases nothing
  out["delta_grid"] = grid;
  checkpoint(out, "detection");

  json attack = json::array();
  for (const std::string mode : {"gsg", "ewp"}) {
    json a = attacks(mode, gen[mode]);
    attack.insert(attack.end(), a.begin(), a.end());
  }
  out["attacks"] = attack;
  checkpoint(out, "attacks");

  // Perplexity against delta: delta 0 is unwatermarked generation; extra GSG deltas on the first
  // n_grid prompts (the base points above use the same prompts and seeds).
  for (double d : o_.delta_grid) {
    if (d == o_.delta) continue;
    const auto wp = processors(WatermarkMode::GSG, d);
    std::vector<Text> texts;
    for (size_t i = 0; i < n_grid; ++i) {
      Text t;
      t.prompt = gen["none"][i].prompt;
      t.key = gen["none"][i].key;
      t.text = generate_one(t.prompt, wp[t.key].get(), o_.seed + static_cast<uint64_t>(i));
      texts.push_back(std::move(t));
    }
    const std::string name = "gsg-delta-" + std::to_string(d);
    score_texts(name, texts, true);
    grid.push_back(grid_point("gsg", d, texts, n_grid));
    say("delta grid " + std::to_string(d) + " done");
    out["delta_grid"] = grid;
    out["quality"] = quality_;
    checkpoint(out, "delta " + std::to_string(d));
  }

  if (o_.cross_precision && o_.cross_texts == 0)  // nothing to estimate a rate from
    cross_precision_ = {{"skipped", "no texts (--cross-texts 0)"}};
  else if (o_.cross_precision)
    cross_precision_ = cross_precision(gen["gsg"]);
  out["cross_precision"] = cross_precision_;
  out["seconds"] = seconds_since(t_start);
  say("done in " + std::to_string(static_cast<int64_t>(seconds_since(t_start))) + " s");
  return out;
}

}  // namespace

json run_eval(const EvalOptions& o) {
  return Pipeline(o).run();
}

json run_eval_to_dir(const EvalOptions& o, const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const auto partial = dir / "results.partial.json";
  EvalOptions opt = o;
  opt.checkpoint = [&o, partial](const json& j) {
    {
      std::ofstream f(partial);
      check(f.good(), "eval: cannot write '" + path_to_utf8(partial) + "'");
      f << j.dump(1) << "\n";
    }
    if (o.checkpoint) o.checkpoint(j);
  };
  json r = run_eval(opt);
  std::filesystem::remove(partial);
  {
    std::ofstream f(dir / "results.json");
    check(f.good(), "eval: cannot write '" + path_to_utf8(dir / "results.json") + "'");
    f << r.dump(1) << "\n";
  }
  std::ofstream f(dir / "report.html");
  check(f.good(), "eval: cannot write '" + path_to_utf8(dir / "report.html") + "'");
  f << render_report(r);
  return r;
}

}  // namespace epwa::eval
