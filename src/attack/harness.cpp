// `epwa attack steal`: observe N watermarked tokens, steal, spoof and scrub, for each scheme and N.
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>
#include <optional>

#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/eval.hpp"
#include "epwa/pepi.hpp"
#include "epwa/session.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::attack {

using nlohmann::json;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One text after an attack (or none), as the real key sees it.
struct Scored {
  double z = 0;
  bool detected = false;
  int64_t scored = 0;  // tokens the detector scored (repeats of a (context, token) pair once)
  double ppl = NAN;    // NaN for an empty text
  double edit_rate = 0;
};

// Success is detection for a spoof, its absence for a scrub.
json summary(const std::vector<Scored>& v, bool success_is_detected) {
  std::vector<double> z, ppl, edits, scored;
  int64_t detected = 0;
  for (const Scored& s : v) {
    z.push_back(s.z);
    if (!std::isnan(s.ppl)) ppl.push_back(s.ppl);
    edits.push_back(s.edit_rate);
    scored.push_back(static_cast<double>(s.scored));
    detected += s.detected;
  }
  const double rate =
      v.empty() ? 0.0 : static_cast<double>(detected) / static_cast<double>(v.size());
  return {{"texts", v.size()},
          {"detected", rate},
          {"success", success_is_detected ? rate : 1 - rate},
          {"z_median", eval::median(z)},
          {"z_mean", eval::mean(z)},
          {"ppl_median", eval::median(ppl)},
          {"ppl_mean", eval::mean(ppl)},
          {"edit_rate", eval::mean(edits)},
          {"scored_median", eval::median(scored)}};
}

// The observed tokens behind checkpoint c: the pooled estimate's, or the keys' together.
int64_t observed_by(const std::vector<std::vector<StolenLists>>& stolen, size_t c) {
  int64_t n = 0;
  for (const auto& v : stolen) n += v[c].observed_tokens;
  return n;
}

// The fraction of the tokens behind checkpoint c that the attacker keyed by the router's own
// expert (1 but for the black-box attacker).
double expert_accuracy(const std::vector<std::vector<StolenLists>>& stolen, size_t c) {
  int64_t hits = 0;
  for (const auto& v : stolen) hits += v[c].expert_hits;
  const int64_t n = observed_by(stolen, c);
  return n > 0 ? static_cast<double>(hits) / static_cast<double>(n) : 0.0;
}

// The most frequent true key among the texts of group g.
size_t majority(std::span<const size_t> group, std::span<const size_t> key, size_t g) {
  std::map<size_t, size_t> n;
  for (size_t t = 0; t < group.size(); ++t)
    if (group[t] == g) ++n[key[t]];
  size_t best = 0, most = 0;
  for (const auto& [k, c] : n)
    if (c > most) best = k, most = c;
  return best;
}

// The fraction of texts whose group's most frequent key is their own (1: the keys recovered; 1/m
// or so: no better than chance).
double purity(std::span<const size_t> group, std::span<const size_t> key, int32_t groups) {
  size_t right = 0;
  for (int32_t g = 0; g < groups; ++g) {
    const size_t m = majority(group, key, static_cast<size_t>(g));
    for (size_t t = 0; t < group.size(); ++t)
      right += group[t] == static_cast<size_t>(g) && key[t] == m;
  }
  return group.empty() ? 0.0 : static_cast<double>(right) / static_cast<double>(group.size());
}

// tokens[key][c]: how many of the first checkpoints[c] observed tokens came from each key's texts.
std::vector<std::vector<int64_t>> tokens_by_key(std::span<const ObservedText> seen,
                                                std::span<const size_t> key_of, size_t keys,
                                                std::span<const int64_t> checkpoints) {
  std::vector<std::vector<int64_t>> out(keys, std::vector<int64_t>(checkpoints.size(), 0));
  int64_t before = 0;  // observed tokens ahead of this text
  for (size_t t = 0; t < seen.size(); ++t) {
    const auto len = static_cast<int64_t>(seen[t].text.size());
    for (size_t c = 0; c < checkpoints.size(); ++c)
      out[key_of[t]][c] += std::clamp<int64_t>(checkpoints[c] - before, 0, len);
    before += len;
  }
  return out;
}

class Harness {
 public:
  Harness(Model& model, const Tokenizer& tok, const StealOptions& o)
      : model_(model), o_(o), layer_(model_router_layer(model, -1)) {
    if (o.oracle) check_oracle(*o.oracle, model, layer_);
    if (text_only()) {
      check(!o.oracle && !o.attacker_clusters_keys,
            "attack: the text-only attacker has no oracle and does not cluster keys");
      check(std::ssize(o.text_only_base) == model.config().vocab_size,
            "attack: the text-only base has the wrong number of tokens");
    }
    check(!o.writer || o.writer->config().vocab_size == model.config().vocab_size, [&] {
      return fmt::format("attack: the spoof writer has {} tokens, the public model {}",
                         o.writer->config().vocab_size, model.config().vocab_size);
    });
    const ModelConfig& c = model.config();
    for (int32_t id : non_text_token_ids(tok, c.vocab_size))
      if (id != c.eos_token_id) suppress_.push_back(id);
    for (const std::string& p : o.prompts) {
      check(!p.empty(), "attack: a prompt is empty");
      prompts_.push_back(tok.encode(p, true, false));
    }
    const size_t half = prompts_.size() / 2;
    check(half >= 1, "attack: needs at least 2 prompts (half observed, half attacked)");
    check(static_cast<size_t>(o.texts) <= prompts_.size() - half,
          fmt::format("attack: --texts {} needs {} prompts (half of them are only observed); "
                      "the prompts file has {}",
                      o.texts, 2 * o.texts, prompts_.size()));
    observe_.assign(prompts_.begin(), prompts_.begin() + static_cast<std::ptrdiff_t>(half));
    attack_.assign(prompts_.begin() + static_cast<std::ptrdiff_t>(half),
                   prompts_.begin() + static_cast<std::ptrdiff_t>(half + o.texts));
  }

  json run() {
    checkpoints_ = o_.observed;
    std::sort(checkpoints_.begin(), checkpoints_.end());
    checkpoints_.erase(std::unique(checkpoints_.begin(), checkpoints_.end()), checkpoints_.end());
    // Unwatermarked texts of the attacked prompts by the spoofs' writer: the spoofer's control
    // (same prompts, seeds).
    say("generating " + std::to_string(attack_.size()) + " unwatermarked texts (spoof control)");
    unbiased_.resize(attack_.size());
    each(attack_.size(), [&](size_t i) {
      unbiased_[i] = strip_eos(epwa::generate(writer(), attack_[i], options(attack_seed(i))));
    });
    json schemes = json::array();
    for (Scheme s : o_.schemes) schemes.push_back(run_scheme(s));
    return {{"params", params()}, {"router_hash", router_hash(model_)}, {"schemes", schemes}};
  }

 private:
  uint64_t attack_seed(size_t i) const { return o_.seed + 1000000 + i; }
  const Oracle* oracle() const { return o_.oracle.get(); }
  Model& writer() const { return o_.writer ? *o_.writer : model_; }
  bool text_only() const { return !o_.text_only_base.empty(); }
  // The attacker's estimate from `texts` at each checkpoint.
  std::vector<StolenLists> learn(Scheme scheme, std::span<const ObservedText> texts,
                                 std::span<const int64_t> checkpoints,
                                 const std::function<void(int64_t)>& progress) {
    if (text_only()) return steal_text_only(texts, checkpoints, o_.text_only_base);
    return steal(model_, scheme, layer_, texts, checkpoints, o_.temperature, progress, oracle(),
                 o_.api_top_k);
  }

  void say(const std::string& s) const {
    if (o_.progress) o_.progress(s);
  }

  // fn(i) for every i < n, texts in parallel, one per thread of the kernels' pool (the forward
  // passes nested in its loop run serially). Each text has its own seed and slot, so the results
  // do not depend on the thread count.
  template <typename F>
  static void each(size_t n, F&& fn) {
    ThreadPool::global().parallel_for(static_cast<int64_t>(n), [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) fn(static_cast<size_t>(i));
    });
  }

  GenerateOptions options(uint64_t seed) const {
    GenerateOptions go;
    go.max_new_tokens = o_.tokens;
    go.sampling.temperature = o_.temperature;
    go.sampling.top_p = o_.top_p;
    go.sampling.seed = seed;
    go.stop_tokens = {model_.config().eos_token_id};
    go.suppress_tokens = suppress_;
    return go;
  }

  std::vector<int32_t> strip_eos(std::vector<int32_t> t) const {
    if (!t.empty() && t.back() == model_.config().eos_token_id) t.pop_back();
    return t;
  }

  // victim null: no watermark.
  std::vector<int32_t> generate(Victim* victim, std::span<const int32_t> prompt, uint64_t seed) {
    const GenerateOptions go = options(seed);
    return strip_eos(victim ? victim->generate(model_, prompt, go)
                            : epwa::generate(model_, prompt, go));
  }

  Scored score(const Victim& v, std::span<const int32_t> prompt, std::span<const int32_t> text) {
    Scored s;
    if (text.empty()) return s;
    std::vector<int32_t> seq(prompt.begin(), prompt.end());
    seq.insert(seq.end(), text.begin(), text.end());
    const DetectionResult r = v.detect(model_, seq, static_cast<int64_t>(prompt.size()));
    s.z = r.z;
    s.detected = r.detected;
    s.scored = r.n;
    s.ppl = eval::perplexity_from_nll(
        eval::token_nll(model_, seq, static_cast<int64_t>(prompt.size())));
    return s;
  }

  Scored scrubbed(const Victim& v, const StolenLists* stolen, size_t i) {
    ScrubOptions so;
    so.budget = o_.scrub_budget;
    so.top_k = o_.top_k;
    so.seed = attack_seed(i);
    so.suppress_tokens = suppress_;
    const auto& text = marked_[i];
    const Scheme scheme = stolen ? stolen->scheme() : v.scheme();  // text-only: token contexts
    const auto out = scrub(model_, scheme, layer_, stolen, attack_[i], text, so, oracle());
    Scored s = score(v, attack_[i], out);
    size_t changed = 0;
    for (size_t k = 0; k < out.size(); ++k) changed += out[k] != text[k];
    s.edit_rate = out.empty() ? 0 : static_cast<double>(changed) / static_cast<double>(out.size());
    return s;
  }

  json run_scheme(Scheme scheme) {
    const std::string name(scheme_name(scheme));
    const auto t0 = Clock::now();
    Victim victim(model_, scheme, o_.key, o_.gamma, o_.delta, layer_, o_.keys, o_.context_buckets);
    // The watermarked texts the attacker sees: observation prompts in turn, a new seed each.
    std::vector<ObservedText> seen;
    std::vector<size_t> seen_key;  // the key that made each (told only to a knows-keys attacker)
    // A batch of texts at a time; those made past the last checkpoint's tokens are dropped.
    const size_t batch = 4 * static_cast<size_t>(ThreadPool::global().size());
    int64_t total = 0;
    while (total < checkpoints_.back()) {
      const size_t k0 = seen.size();
      std::vector<ObservedText> made(batch);
      each(batch, [&](size_t i) {
        made[i].prompt = observe_[(k0 + i) % observe_.size()];
        made[i].text = generate(&victim, made[i].prompt, o_.seed + k0 + i);
      });
      for (size_t i = 0; i < batch && total < checkpoints_.back(); ++i) {
        seen_key.push_back(victim.key_for(o_.seed + k0 + i, made[i].prompt));
        total += static_cast<int64_t>(made[i].text.size());
        seen.push_back(std::move(made[i]));
      }
      if (seen.size() / 25 != k0 / 25 || total >= checkpoints_.back())
        say(fmt::format("{}: observed {} of {} tokens ({} texts)", name,
                        std::min(total, checkpoints_.back()), checkpoints_.back(), seen.size()));
    }
    const double observe_s = seconds_since(t0);
    // The victim's texts from the attacked prompts: what the scrubber rewrites.
    marked_.assign(attack_.size(), {});
    each(attack_.size(),
         [&](size_t i) { marked_[i] = generate(&victim, attack_[i], attack_seed(i)); });

    const auto t1 = Clock::now();
    say(name + ": stealing (teacher-forced passes over the observed texts)");
    int64_t next_report = checkpoints_.back() / 10;  // a line every tenth of the tokens
    const auto report = [&](int64_t done) {
      if (done < next_report) return;
      say(fmt::format("{}: stole from {} of {} tokens", name, done, checkpoints_.back()));
      next_report += checkpoints_.back() / 10;
    };
    // stolen[key][checkpoint]: one pooled estimate (key 0), or one per key for an attacker who
    // knows the keys, each key's checkpoint its share of the first N observed tokens.
    std::vector<std::vector<StolenLists>> stolen;
    std::vector<std::vector<int64_t>> key_tokens;
    // The attacker's groups of texts: the true keys (knows-keys) or its own clusters.
    std::vector<size_t> group = seen_key;
    json clustering;
    if (o_.attacker_clusters_keys) {
      const StolenLists pooled = learn(scheme, seen, checkpoints_, report)[0];
      std::vector<ObservedText> counted;  // the texts as far as the pooled estimate read them
      std::vector<std::vector<int32_t>> contexts;
      int64_t left = checkpoints_.back();
      for (const ObservedText& x : seen) {
        const auto m = std::min<int64_t>(left, static_cast<int64_t>(x.text.size()));
        left -= m;
        counted.push_back({x.prompt, {x.text.begin(), x.text.begin() + m}});
      }
      contexts.resize(counted.size());
      each(counted.size(), [&](size_t t) {
        contexts[t] =
            attacker_contexts(model_, scheme, layer_, counted[t].prompt, counted[t].text, oracle());
      });
      say(name + ": clustering " + std::to_string(seen.size()) + " texts by key");
      const Clustering cl =
          cluster_by_key(pooled, counted, contexts, static_cast<size_t>(victim.keys()), o_.seed);
      group = cl.labels;
      clustering = {{"rounds", cl.rounds}, {"purity", purity(cl.labels, seen_key, victim.keys())}};
    }
    if (o_.attacker_knows_keys || o_.attacker_clusters_keys) {
      key_tokens = tokens_by_key(seen, group, static_cast<size_t>(victim.keys()), checkpoints_);
      int64_t done = 0;
      for (size_t key = 0; key < key_tokens.size(); ++key) {
        std::vector<ObservedText> own;
        for (size_t t = 0; t < seen.size(); ++t)
          if (group[t] == key) own.push_back(seen[t]);
        std::vector<int64_t> ck;  // the checkpoints where this key has been seen at all
        for (int64_t n : key_tokens[key])
          if (n > 0) ck.push_back(n);
        stolen.emplace_back();
        if (!ck.empty()) stolen.back() = learn(scheme, own, ck, {});
        done += key_tokens[key].back();
        report(done);
      }
      // A key not yet seen by checkpoint c: lists with nothing learned, placed first.
      const StolenLists* any = nullptr;
      for (const auto& v : stolen)
        if (!v.empty()) any = &v.front();
      for (auto& v : stolen)
        while (v.size() < checkpoints_.size())
          v.insert(v.begin(), StolenLists(any->scheme(), any->contexts(), any->vocab()));
    } else {
      stolen.push_back(learn(scheme, seen, checkpoints_, report));
    }
    const double steal_s = seconds_since(t1);

    const size_t n = attack_.size();
    std::vector<Scored> base(n), marked(n), blind(n);
    each(n, [&](size_t i) {
      base[i] = score(victim, attack_[i], unbiased_[i]);
      marked[i] = score(victim, attack_[i], marked_[i]);
      blind[i] = scrubbed(victim, nullptr, i);
    });
    const auto t2 = Clock::now();
    json rows = json::array();
    for (size_t c = 0; c < stolen[0].size(); ++c) {
      say(fmt::format("{}: spoofing and scrubbing with N = {}", name, checkpoints_[c]));
      // The spoofer's key: the one seen most by N (key 0 for a pooled estimate).
      size_t target = 0;
      for (size_t key = 1; key < key_tokens.size(); ++key)
        if (key_tokens[key][c] > key_tokens[target][c]) target = key;
      const StolenLists& lists = stolen[target][c];
      std::vector<Scored> spoofed(n), scrubs(n);
      each(n, [&](size_t i) {
        const auto text =
            strip_eos(spoof(model_, lists, layer_, o_.attack_delta, attack_[i],
                            options(attack_seed(i)), oracle(), o_.writer.get(), o_.api_top_k));
        spoofed[i] = score(victim, attack_[i], text);
        const size_t own =
            o_.attacker_knows_keys ? victim.key_for(attack_seed(i), attack_[i]) : target;
        scrubs[i] = scrubbed(victim, &stolen[own][c], i);
      });
      // Scored against the key the attacker's lists stand for: a cluster's most frequent one.
      // (Not comparable where the attacker's contexts are not the scheme's: the text-only
      // attacker's tokens against EPW-A's experts.)
      std::optional<ScoreQuality> q;
      if (lists.scheme() == scheme)
        q = score_quality(
            lists,
            victim.lists(o_.attacker_clusters_keys ? majority(group, seen_key, target) : target));
      const auto quality = [&](auto ScoreQuality::*field) {
        return q ? json((*q).*field) : json(nullptr);
      };
      rows.push_back({{"n", checkpoints_[c]},
                      {"observed_tokens", observed_by(stolen, c)},
                      {"target_key_tokens", lists.observed_tokens},
                      {"expert_accuracy", expert_accuracy(stolen, c)},
                      {"pairs", lists.pair_count()},
                      {"estimated_green", quality(&ScoreQuality::estimated_green)},
                      {"precision", quality(&ScoreQuality::precision)},
                      {"auc_seen", quality(&ScoreQuality::auc_seen)},
                      {"auc_context", quality(&ScoreQuality::auc_context)},
                      {"coverage", quality(&ScoreQuality::coverage)},
                      {"spoof", summary(spoofed, true)},
                      {"scrub", summary(scrubs, false)}});
    }
    return {
        {"scheme", name},
        {"contexts", victim.lists().num_contexts()},
        {"observed_texts", seen.size()},
        {"unbiased", summary(base, true)},
        {"watermarked", summary(marked, false)},  // success: not detected unattacked
        {"blind_scrub", summary(blind, false)},
        {"rows", rows},
        {"clustering", clustering},
        {"seconds", {{"observe", observe_s}, {"steal", steal_s}, {"attacks", seconds_since(t2)}}}};
  }

  json params() const {
    std::vector<std::string> schemes;
    for (Scheme s : o_.schemes) schemes.emplace_back(scheme_name(s));
    return {{"observed", checkpoints_},
            {"schemes", schemes},
            {"tokens", o_.tokens},
            {"texts", o_.texts},
            {"keys", o_.keys},
            {"attacker_knows_keys", o_.attacker_knows_keys},
            {"attacker_clusters_keys", o_.attacker_clusters_keys},
            {"attacker", text_only() ? "text-only (previous-token contexts, unigram base)"
                         : oracle()  ? "black-box (PEPI oracle)"
                                     : "gray-box (router)"},
            {"spoof_writer",
             o_.writer ? "second model, router hash " + router_hash(*o_.writer) : "public model"},
            {"api_top_k", o_.api_top_k},
            {"context_buckets", o_.context_buckets},
            {"gamma", o_.gamma},
            {"delta", o_.delta},
            {"attack_delta", o_.attack_delta},
            {"scrub_budget", o_.scrub_budget},
            {"top_k", o_.top_k},
            {"temperature", o_.temperature},
            {"top_p", o_.top_p},
            {"seed", o_.seed},
            {"router_layer", layer_},
            {"prompts", o_.prompts.size()}};
  }

  Model& model_;
  const StealOptions& o_;
  int32_t layer_;
  std::vector<int32_t> suppress_;
  std::vector<std::vector<int32_t>> prompts_, observe_, attack_;
  std::vector<int64_t> checkpoints_;
  std::vector<std::vector<int32_t>> unbiased_, marked_;
};

}  // namespace

json run_steal(Model& model, const Tokenizer& tok, const StealOptions& o) {
  check(!o.observed.empty(), "attack: give at least one number of observed tokens");
  for (int64_t n : o.observed) check(n > 0, "attack: observed token counts must be > 0");
  check(!o.schemes.empty(), "attack: no scheme to attack");
  check(o.tokens > 0, "attack: --tokens must be > 0");
  check(o.texts > 0, "attack: --texts must be > 0");
  check(o.keys >= 1, "attack: --keys must be >= 1");
  check(!(o.attacker_knows_keys && o.attacker_clusters_keys),
        "attack: the attacker either knows the keys or clusters the texts, not both");
  check(!o.attacker_clusters_keys || o.observed.size() == 1,
        "attack: --attacker-clusters-keys takes one number of observed tokens (--observed N)");
  check(o.temperature > 0, "attack: --temperature must be > 0 (the base distribution)");
  return Harness(model, tok, o).run();
}

namespace {
// N, and for an attacker who separates the keys the tokens of the key (or cluster) it spoofs with.
std::string observed_cell(const json& row) {
  const auto n = row["observed_tokens"].get<int64_t>(),
             own = row["target_key_tokens"].get<int64_t>();
  return own == n ? std::to_string(n) : fmt::format("{} ({} behind its lists)", n, own);
}
}  // namespace

std::string steal_table(const json& r) {
  std::string s =
      "| scheme | N observed | pairs | AUC seen / per context | precision | coverage | spoof "
      "success "
      "| spoof z | spoof ppl | scrub success | scrub z | scrub ppl | edits |\n"
      "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
  auto pct = [](const json& x) { return fmt::format("{:.0f}%", 100 * x["success"].get<double>()); };
  auto num = [](const json& x, const char* k) { return fmt::format("{:.2f}", x[k].get<double>()); };
  // A row's estimator figure, "-" where it is not comparable (null).
  auto fig = [](const json& row, const char* k, int digits) {
    return row[k].is_null() ? std::string("-")
                            : fmt::format("{:.{}f}", row[k].get<double>(), digits);
  };
  for (const json& sc : r["schemes"]) {
    std::string name = sc["scheme"];
    if (sc.contains("clustering") && sc["clustering"].is_object())
      name += fmt::format(" (clusters of purity {:.2f})", sc["clustering"]["purity"].get<double>());
    const json& u = sc["unbiased"];
    const json& m = sc["watermarked"];
    const json& b = sc["blind_scrub"];
    s += fmt::format("| {} | 0 (no attack) | - | - | - | - | {} | {} | {} | {} | {} | {} | 0% |\n",
                     name, pct(u), num(u, "z_median"), num(u, "ppl_median"), pct(m),
                     num(m, "z_median"), num(m, "ppl_median"));
    s += fmt::format(
        "| {} | 0 (blind scrub) | - | - | - | - | - | - | - | {} | {} | {} | {:.0f}% |\n", name,
        pct(b), num(b, "z_median"), num(b, "ppl_median"), 100 * b["edit_rate"].get<double>());
    const bool guessed =
        r["params"].value("attacker", "").starts_with("black") && sc["scheme"] != "kgw";
    for (const json& row : sc["rows"]) {
      const json& sp = row["spoof"];
      const json& sr = row["scrub"];
      const std::string who = guessed ? fmt::format("{} (oracle: {:.0f}% of experts right)", name,
                                                    100 * row["expert_accuracy"].get<double>())
                                      : name;
      s += fmt::format(
          "| {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0f}% |\n", who,
          observed_cell(row), row["pairs"].get<int64_t>(), fig(row, "auc_seen", 3),
          fig(row, "auc_context", 3), fig(row, "precision", 2), fig(row, "coverage", 3), pct(sp),
          num(sp, "z_median"), num(sp, "ppl_median"), pct(sr), num(sr, "z_median"),
          num(sr, "ppl_median"), 100 * sr["edit_rate"].get<double>());
    }
  }
  return s;
}

}  // namespace epwa::attack
