#include "eval/frontier.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "epwa/detect.hpp"
#include "epwa/error.hpp"
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

Scored analyze(Model& m, int32_t layer, std::vector<int32_t> seq, int64_t prompt) {
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
  for (size_t p = 0; p + 1 < seq.size(); ++p) {
    const std::span<const float> row(lg.data() + p * V, V);
    s.entropy.push_back(static_cast<float>(next_token_entropy(row)));
    if (static_cast<int64_t>(p) + 1 < prompt) continue;
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
  auto generate_set = [&](const std::string& name, const WatermarkConfig* wc) {
    auto& texts = sets[name];
    if (!texts.empty()) return;
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
