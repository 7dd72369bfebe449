#include "eval/frontier.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <optional>
#include <string>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
#include "epwa/load_options.hpp"
#include "epwa/thread_pool.hpp"

namespace epwa::eval {
namespace {

using json = nlohmann::json;

// The watermark layer's pathway at every position of one pass.
struct Recorder : RouterObserver {
  int32_t layer = 0;
  std::vector<RouterRecord> records;
  void observe(const RouterObservation& o) override {
    if (o.layer == layer) records.push_back(top1_expert(o));
  }
  std::vector<int32_t> layers() const override { return {layer}; }
};

// One text and what a single teacher-forced pass gives: records, next-token entropy at every
// position (what entropy-aware detection reads) and the NLL of the tokens after the prompt.
struct Scored {
  std::vector<int32_t> seq;
  int64_t prompt = 0;
  std::vector<RouterRecord> records;
  std::vector<float> entropy;
  double ppl = NAN;  // NaN for a text without tokens
};

// The model's top-k next tokens (from first_normal on: no control tokens) at each position of the
// text after the prompt: the fluent substitution attack's candidates (as the eval's attacks).
struct TopK {
  int32_t k = 0, first_normal = 0;
  std::vector<std::vector<int32_t>>* out = nullptr;
};

Scored analyze(Model& m, int32_t layer, std::vector<int32_t> seq, int64_t prompt,
               const TopK& topk = {}) {
  Scored s;
  s.prompt = prompt;
  Recorder rec;
  rec.layer = layer;
  Context ctx = m.make_context(static_cast<int64_t>(seq.size()));
  ForwardOptions fo;
  fo.observer = &rec;
  fo.all_logits = true;
  const std::vector<float> lg = m.forward(seq, ctx, fo);
  const auto V = static_cast<size_t>(m.config().vocab_size);
  std::vector<double> nll;
  std::vector<int32_t> order;
  for (size_t p = 0; p + 1 < seq.size(); ++p) {
    const std::span<const float> row(lg.data() + p * V, V);
    s.entropy.push_back(static_cast<float>(next_token_entropy(row)));
    if (static_cast<int64_t>(p) + 1 < prompt) continue;
    if (topk.out) {
      order.resize(V);
      std::iota(order.begin(), order.end(), 0);
      const auto k = std::min<std::ptrdiff_t>(topk.k, static_cast<std::ptrdiff_t>(V));
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&row](int32_t x, int32_t y) { return row[x] > row[y]; });
      std::vector<int32_t> top;
      for (std::ptrdiff_t i = 0; i < k; ++i)
        if (order[i] >= topk.first_normal) top.push_back(order[i]);
      topk.out->push_back(std::move(top));
    }
    const double mx = *std::max_element(row.begin(), row.end());
    double z = 0;
    for (float x : row) z += std::exp(static_cast<double>(x) - mx);
    nll.push_back(mx + std::log(z) - row[static_cast<size_t>(seq[p + 1])]);
  }
  if (!nll.empty()) s.ppl = perplexity_from_nll(nll);
  s.records = std::move(rec.records);
  s.seq = std::move(seq);
  return s;
}

// z of the text's first `length` tokens after its prompt.
double z_at(const Detector& d, const Scored& t, int32_t length) {
  const size_t end = std::min(t.seq.size(), static_cast<size_t>(t.prompt + length));
  return d.detect({std::span(t.seq).first(end), t.prompt, t.records, t.entropy}).z;
}

std::string shortest(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", v);
  return b;
}

std::string setting_name(const std::string& mode, double delta, double selective) {
  if (mode == "exp") return "exp";
  std::string n = mode + " delta " + shortest(delta);
  return selective > 0 ? n + ", selective >= " + shortest(selective) : n;
}

}  // namespace

std::vector<FrontierSetting> parse_frontier(const std::string& spec) {
  std::vector<FrontierSetting> out;
  size_t at = 0;
  while (at <= spec.size()) {
    const size_t end = std::min(spec.find(',', at), spec.size());
    const std::string item = spec.substr(at, end - at);
    at = end + 1;
    FrontierSetting s;
    const size_t colon = item.find(':');
    s.mode = item.substr(0, colon);
    check(s.mode == "gsg" || s.mode == "ewp" || s.mode == "exp",
          "eval: frontier setting '" + item + "': expected gsg:DELTA, ewp:DELTA or exp");
    check((s.mode == "exp") == (colon == std::string::npos),
          "eval: frontier setting '" + item + "': gsg and ewp take a delta (gsg:2), exp none");
    if (colon != std::string::npos) {
      const std::string d = item.substr(colon + 1);
      size_t used = 0;
      try {
        s.delta = std::stod(d, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      check(used == d.size() && used > 0 && s.delta > 0 && s.delta <= kMaxDelta,
            "eval: frontier setting '" + item + "': the delta must be a number in (0, " +
                shortest(kMaxDelta) + "]");
    }
    out.push_back(s);
  }
  return out;
}

json run_frontier(const EvalOptions& o, const FrontierInput& in) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  check(!o.frontier_lengths.empty(), "eval: the frontier needs at least one length");
  for (int32_t L : o.frontier_lengths)
    check(L > 0 && L <= o.tokens, "eval: frontier length " + std::to_string(L) + " is outside 1.." +
                                      std::to_string(o.tokens) + " (--tokens)");
  check(o.frontier_entropy >= 0, "eval: the frontier's entropy threshold must be >= 0");
  Model& m = *in.model;
  const double H = o.frontier_entropy;
  auto say = [&](const std::string& s) {
    if (o.progress) o.progress(s);
  };
  DetectOptions plain_opt, entropy_opt, exp_opt;
  entropy_opt.min_entropy = H;
  exp_opt.scheme = DetectScheme::Exp;
  const Detector plain(in.lists, plain_opt), exp(in.lists, exp_opt);
  const Detector entropy(in.lists, H > 0 ? entropy_opt : plain_opt);

  // Texts run in parallel, one per thread of the pool (their forward passes nested, so serial):
  // a small model gains more from whole texts at once than from splitting each product, and every
  // text is seeded alone, so the results do not depend on the thread count.
  std::mutex say_mutex;
  auto each = [&](size_t n, const std::string& what, const std::function<void(size_t)>& fn) {
    std::atomic<size_t> done{0};
    ThreadPool::global().parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) {
        fn(static_cast<size_t>(i));
        const size_t d = ++done;
        if (d % 20 == 0 || d == n) {
          std::lock_guard lock(say_mutex);
          say("frontier: " + what + " " + std::to_string(d) + "/" + std::to_string(n));
        }
      }
    });
  };
  // Generation sets by name, each text from prompt i with seed o.seed + i.
  std::map<std::string, std::vector<Scored>> sets;
  std::map<std::string, WatermarkConfig> configs;
  std::unique_ptr<Model> bits4;  // loaded for the first 4-bit generation
  auto generate_set = [&](const std::string& name, const WatermarkConfig* wc) {
    auto& texts = sets[name];
    if (!texts.empty()) return;
    if (wc) configs[name] = *wc;
    texts.resize(in.prompts.size());
    each(in.prompts.size(), name, [&](size_t i) {
      const auto& p = in.prompts[i];
      std::optional<WatermarkProcessor> wp;
      if (wc) wp.emplace(*wc, in.lists);
      std::vector<int32_t> seq = p;
      const auto out = generate_text(m, p, wp ? &*wp : nullptr, o.seed + i, in.sampling);
      seq.insert(seq.end(), out.begin(), out.end());
      texts[i] = analyze(m, in.layer, std::move(seq), static_cast<int64_t>(p.size()));
    });
  };
  auto mean_ppl = [](const std::vector<Scored>& texts) {
    std::vector<double> v;
    for (const Scored& t : texts)
      if (std::isfinite(t.ppl)) v.push_back(t.ppl);
    return v;
  };

  generate_set("unwatermarked", nullptr);
  std::vector<Scored> negatives = sets["unwatermarked"];
  negatives.resize(negatives.size() + in.human.size());
  each(in.human.size(), "human", [&](size_t i) {
    const auto& [context, text] = in.human[i];
    std::vector<int32_t> seq = context;
    seq.insert(seq.end(), text.begin(), text.end());
    negatives[in.prompts.size() + i] =
        analyze(m, in.layer, std::move(seq), static_cast<int64_t>(context.size()));
  });
  say("frontier: " + std::to_string(negatives.size()) + " negatives scored");
  const std::vector<double> base_ppl = mean_ppl(sets["unwatermarked"]);
  const double base = mean(base_ppl);

  // Robustness (--frontier-attacks N): each set's first N texts cut to `attack_len` tokens, edited
  // by the eval's attacks (substitution from the vocabulary and from the model's top-k, deletion)
  // at every attack rate, and regenerated with a 4-bit load; every row detects them with its own
  // detector. Computed once per set.
  const int32_t attack_len = std::min<int32_t>(200, o.tokens);
  struct Attacked {
    std::string attack;
    double rate = 0;
    std::vector<Scored> texts;
  };
  std::map<std::string, std::vector<Attacked>> attacked;
  auto attack_set = [&](const std::string& name) -> const std::vector<Attacked>& {
    auto& out = attacked[name];
    if (!out.empty()) return out;
    const auto& texts = sets[name];
    const size_t n = std::min(texts.size(), static_cast<size_t>(o.frontier_attacks));
    struct Kind {
      const char* name;
      AttackKind kind;
      bool topk;
    };
    const Kind kinds[] = {{"substitute (vocabulary)", AttackKind::Substitute, false},
                          {"substitute (top-k)", AttackKind::Substitute, true},
                          {"delete", AttackKind::Delete, false}};
    out.push_back({"none", 0, std::vector<Scored>(n)});
    for (const Kind& k : kinds)
      for (double rate : o.attack_rates) out.push_back({k.name, rate, std::vector<Scored>(n)});
    each(n, "attacks on " + name, [&](size_t i) {
      const Scored& t = texts[i];
      const size_t end = std::min(t.seq.size(), static_cast<size_t>(t.prompt + attack_len));
      std::vector<int32_t> cut(t.seq.begin(), t.seq.begin() + static_cast<std::ptrdiff_t>(end));
      const std::vector<int32_t> prompt(cut.begin(), cut.begin() + t.prompt);
      const std::vector<int32_t> body(cut.begin() + t.prompt, cut.end());
      TokenSource vocab{in.first_normal, m.config().vocab_size, {}}, fluent = vocab;
      out[0].texts[i] = analyze(m, in.layer, cut, t.prompt,
                                {o.top_k_attack, in.first_normal, &fluent.candidates});
      size_t at = 1;
      for (const Kind& k : kinds)
        for (double rate : o.attack_rates) {
          std::vector<int32_t> seq = prompt;
          if (!body.empty()) {
            const uint64_t seed = o.seed * 1000003ULL + i * 7919ULL +
                                  static_cast<uint64_t>(std::llround(rate * 1000));
            const auto edited = attack(body, k.kind, rate, k.topk ? fluent : vocab, seed);
            seq.insert(seq.end(), edited.begin(), edited.end());
          }
          out[at++].texts[i] = analyze(m, in.layer, std::move(seq), t.prompt);
        }
    });
    if (o.cross_precision) {  // the same prompts and seeds, generated by a 4-bit load
      if (!bits4) {
        LoadOptions lo;
        lo.mode = LoadMode::Bits4;
        lo.use_cache = false;
        lo.warn = say;
        bits4 = Model::load(o.model_path, lo);
      }
      Attacked x{"4-bit generation", 0, std::vector<Scored>(n)};
      // Serial: the 4-bit model's passes use the whole pool.
      for (size_t i = 0; i < n; ++i) {
        const auto& p = in.prompts[i];
        std::optional<WatermarkProcessor> wp;
        if (configs.count(name)) wp.emplace(configs[name], in.lists);
        TextSampling ts = in.sampling;
        ts.tokens = attack_len;
        std::vector<int32_t> seq = p;
        const auto gen = generate_text(*bits4, p, wp ? &*wp : nullptr, o.seed + i, ts);
        seq.insert(seq.end(), gen.begin(), gen.end());
        x.texts[i] = analyze(m, in.layer, std::move(seq), static_cast<int64_t>(p.size()));
      }
      say("frontier: 4-bit generation of " + name + " " + std::to_string(n));
      out.push_back(std::move(x));
    }
    return out;
  };

  json rows = json::array();
  uint64_t boot_seed = 101;
  auto add_row = [&](const std::string& set, const std::string& mode, double delta,
                     double selective, const Detector& det, double det_entropy) {
    const auto& texts = sets[set];
    const std::vector<double> ppl = mean_ppl(texts);
    json r{{"mode", mode},
           {"setting", setting_name(mode, delta, selective)},
           {"selective_bias", selective},
           {"entropy_detection", det_entropy},
           {"texts", texts.size()},
           {"ppl_mean", mean(ppl)},
           {"ppl_cost", mean(ppl) / base - 1}};
    if (mode != "exp") r["delta"] = delta;
    const auto ci = bootstrap_ci(
        ppl, [](std::span<const double> v) { return mean(v); }, o.bootstrap, boot_seed++);
    r["ppl_mean_ci"] = {ci.lo, ci.hi};
    for (int32_t L : o.frontier_lengths) {
      std::vector<double> pos, neg;
      for (const Scored& t : texts) pos.push_back(z_at(det, t, L));
      for (const Scored& t : negatives) neg.push_back(z_at(det, t, L));
      const auto tpr = [](std::span<const double> v) { return rate_above(v, 4.0); };
      const auto tci = bootstrap_ci(pos, tpr, o.bootstrap, boot_seed++);
      int64_t fp = 0;
      for (double z : neg) fp += z > 4.0;
      r["lengths"].push_back({{"tokens", L},
                              {"tpr_z4", rate_above(pos, 4.0)},
                              {"tpr_z4_ci", {tci.lo, tci.hi}},
                              {"fp_z4", fp},
                              {"n_neg", neg.size()},
                              {"tpr_fpr01", tpr_at_fpr(pos, neg, 0.001)},
                              {"z_pos_mean", mean(pos)},
                              {"z_neg_mean", mean(neg)}});
    }
    if (o.frontier_attacks > 0) {
      r["attack_tokens"] = attack_len;
      for (const Attacked& a : attack_set(set)) {
        std::vector<double> z;
        for (const Scored& t : a.texts) z.push_back(z_at(det, t, attack_len));
        const auto tci = bootstrap_ci(
            z, [](std::span<const double> v) { return rate_above(v, 4.0); }, o.bootstrap,
            boot_seed++);
        r["attacks"].push_back({{"attack", a.attack},
                                {"rate", a.rate},
                                {"n", z.size()},
                                {"tpr_z4", rate_above(z, 4.0)},
                                {"tpr_z4_ci", {tci.lo, tci.hi}},
                                {"z_mean", mean(z)}});
      }
    }
    rows.push_back(std::move(r));
  };

  for (const FrontierSetting& s : o.frontier) {
    if (s.mode == "exp") {
      const WatermarkConfig wc{WatermarkMode::Exp, o.gamma, s.delta, {}, in.layer};
      generate_set("exp", &wc);
      add_row("exp", "exp", s.delta, 0, exp, 0);
      continue;
    }
    const WatermarkMode mode = s.mode == "gsg" ? WatermarkMode::GSG : WatermarkMode::EWP;
    const WatermarkConfig wc{mode, o.gamma, s.delta, {}, in.layer};
    const std::string name = setting_name(s.mode, s.delta, 0);
    generate_set(name, &wc);
    add_row(name, s.mode, s.delta, 0, plain, 0);
    if (H <= 0) continue;
    add_row(name, s.mode, s.delta, 0, entropy, H);
    WatermarkConfig sel = wc;
    sel.min_entropy = H;
    const std::string sname = setting_name(s.mode, s.delta, H);
    generate_set(sname, &sel);
    add_row(sname, s.mode, s.delta, H, entropy, H);
  }
  const auto ci = bootstrap_ci(
      base_ppl, [](std::span<const double> v) { return mean(v); }, o.bootstrap, 100);
  return {
      {"lengths", o.frontier_lengths},
      {"entropy_threshold", H},
      {"negatives", {{"unwatermarked", sets["unwatermarked"].size()}, {"human", in.human.size()}}},
      {"unwatermarked_ppl_mean", base},
      {"unwatermarked_ppl_mean_ci", {ci.lo, ci.hi}},
      {"rows", rows},
      {"seconds", std::chrono::duration<double>(Clock::now() - t0).count()}};
}

}  // namespace epwa::eval
