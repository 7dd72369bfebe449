// The two schemes under attack (EPW-A and the KGW-style baseline): their contexts, green lists,
// generation and detection.
#include <fmt/core.h>

#include <optional>
#include <string>

#include "epwa/attack.hpp"
#include "epwa/error.hpp"
#include "epwa/pepi.hpp"
#include "epwa/session.hpp"

namespace epwa::attack {

std::string_view scheme_name(Scheme s) {
  switch (s) {
    case Scheme::Epwa:
      return "epwa";
    case Scheme::Kgw:
      return "kgw";
    case Scheme::EpwaCtx:
      return "epwa-ctx";
  }
  return "?";
}

Scheme scheme_from_name(std::string_view name) {
  for (Scheme s : {Scheme::Epwa, Scheme::Kgw, Scheme::EpwaCtx})
    if (scheme_name(s) == name) return s;
  throw Error("unknown scheme '" + std::string(name) + "' (epwa, kgw or epwa-ctx)");
}

std::shared_ptr<const GreenLists> make_kgw_green_lists(const Model& model, std::string_view key,
                                                       double gamma) {
  check(!key.empty(), "watermark key is empty");
  // A prefixed key keeps the baseline's lists independent of EPW-A's under the same key (token h
  // and expert h would otherwise share a list).
  const std::string kgw_key = "KGW-BASELINE:" + std::string(key);
  const int32_t v = model.config().vocab_size;
  return std::make_shared<const GreenLists>(kgw_key, router_hash(model), v, gamma, v);
}

int32_t oracle_expert(const Oracle& oracle, std::span<const float> logits,
                      std::span<const int32_t> history) {
  const PepiFeatureSpec& f = oracle.info().features;
  return oracle.predict(top_logprobs(logits, f.full ? 0 : f.k), history).expert;
}

void check_oracle(const Oracle& oracle, const Model& model, int32_t layer) {
  oracle.check_router_hash(router_hash(model));
  check(oracle.info().router_layer == model_router_layer(model, layer),
        "attack: the oracle predicts the experts of layer " +
            std::to_string(oracle.info().router_layer) + ", the watermark reads layer " +
            std::to_string(model_router_layer(model, layer)));
}

int32_t context_id(Scheme scheme, int32_t expert, int32_t token, int32_t vocab) {
  switch (scheme) {
    case Scheme::Epwa:
      return expert;
    case Scheme::Kgw:
      return token;
    case Scheme::EpwaCtx:
      return expert * vocab + token;
  }
  return -1;
}

void ContextTracker::observe(const RouterObservation& obs) {
  if (scheme_ != Scheme::Kgw && !oracle_ && obs.layer == layer_) expert_ = top1_expert(obs).expert;
}

void ContextTracker::push(int32_t token) {
  token_ = token;
  // The oracle's context features read tokens p, p - 1 and p - 2 at most.
  if (history_.size() == 3) history_.erase(history_.begin());
  history_.push_back(token);
}

void ContextTracker::see(std::span<const float> logits) {
  if (scheme_ != Scheme::Kgw && oracle_) expert_ = oracle_expert(*oracle_, logits, history_);
}

int32_t ContextTracker::context() const {
  check((scheme_ == Scheme::Kgw || expert_ >= 0) && (scheme_ == Scheme::Epwa || token_ >= 0) &&
            (scheme_ != Scheme::EpwaCtx || vocab_ > 0),
        "attack: no context yet (no router observation or token, or no vocabulary size)");
  return context_id(scheme_, expert_, token_, vocab_);
}

std::vector<int32_t> contexts_of(Model& model, Scheme scheme, std::span<const int32_t> tokens,
                                 int32_t layer, const Oracle* oracle) {
  if (scheme == Scheme::Kgw) return {tokens.begin(), tokens.end()};
  std::vector<int32_t> experts;
  if (oracle) {
    ForwardOptions fo;
    fo.all_logits = true;
    Context cache = model.make_context(std::ssize(tokens));
    const std::vector<float> logits = model.forward(tokens, cache, fo);
    const auto V = static_cast<size_t>(model.config().vocab_size);
    for (size_t p = 0; p < tokens.size(); ++p)
      experts.push_back(
          oracle_expert(*oracle, std::span(logits).subspan(p * V, V), tokens.first(p + 1)));
  } else {
    for (const RouterRecord& r : router_records(model, tokens, layer)) experts.push_back(r.expert);
  }
  std::vector<int32_t> out;
  out.reserve(tokens.size());
  for (size_t p = 0; p < experts.size(); ++p)
    out.push_back(context_id(scheme, experts[p], tokens[p], model.config().vocab_size));
  return out;
}

std::vector<int32_t> ContextBias::generate(Model& model, std::span<const int32_t> prompt,
                                           GenerateOptions o, const Model* router) {
  check(!prompt.empty(), "attack: the prompt is empty");
  check(o.processor == nullptr, "attack: another logits processor is already set");
  check(!router || router->config().vocab_size == model.config().vocab_size, [&] {
    return fmt::format("attack: the writing model has {} tokens, the public model {}",
                       model.config().vocab_size, router->config().vocab_size);
  });
  if (tracker_.scheme() == Scheme::Kgw) router = nullptr;  // the token is the whole context
  tracker_.reset();
  for (size_t i = prompt.size() > 3 ? prompt.size() - 3 : 0; i < prompt.size(); ++i)
    tracker_.push(prompt[i]);
  // The router model's pass over the same tokens, one forward per token.
  std::optional<Context> cache;
  ForwardOptions fo;
  fo.observer = &tracker_;
  fo.watch = {tracker_.layer()};
  const auto follow = [&](std::span<const int32_t> tokens) {
    tracker_.see(router->forward(tokens, *cache, fo));
  };
  if (router) {
    cache.emplace(router->make_context(std::ssize(prompt) + o.max_new_tokens + 1));
    follow(prompt);
  }
  ObserverFan fan{router ? nullptr : &tracker_, o.observer};
  o.observer = &fan;
  o.processor = this;
  o.on_token = [&, next = std::move(o.on_token)](int32_t t) {
    tracker_.push(t);
    if (router) follow({&t, 1});
    if (next) next(t);
  };
  following_ = router != nullptr;
  struct Reset {
    bool& flag;
    ~Reset() { flag = false; }
  } reset{following_};
  return epwa::generate(model, prompt, o);
}

namespace {

std::vector<std::shared_ptr<const GreenLists>> victim_lists(const Model& model, Scheme scheme,
                                                            std::span<const std::string> keys,
                                                            double gamma, int32_t buckets) {
  check(scheme != Scheme::EpwaCtx || buckets >= 2,
        "attack: the epwa-ctx scheme needs context buckets H >= 2");
  std::vector<std::shared_ptr<const GreenLists>> out;
  for (const std::string& k : keys)
    out.push_back(scheme == Scheme::Kgw
                      ? make_kgw_green_lists(model, k, gamma)
                      : make_green_lists(model, k, gamma, scheme == Scheme::EpwaCtx ? buckets : 0));
  return out;
}

}  // namespace

Victim::Victim(const Model& model, Scheme scheme, std::string_view key, double gamma, double delta,
               int32_t layer, int32_t keys, int32_t context_buckets)
    : Victim(model, scheme, derived_keys(key, keys), gamma, delta, layer, context_buckets) {}

Victim::Victim(const Model& model, Scheme scheme, std::vector<std::string> keys, double gamma,
               double delta, int32_t layer, int32_t context_buckets)
    : scheme_(scheme),
      layer_(model_router_layer(model, layer)),
      delta_(delta),
      lists_(victim_lists(model, scheme, keys, gamma, context_buckets)),
      rotation_(keyring_rotation_secret(keys)),
      detector_(keys, lists_) {
  check(delta >= 0 && delta <= kMaxDelta, "attack: delta must be in [0, 1e4]");
}

size_t Victim::key_for(uint64_t seed, std::span<const int32_t> prompt) const {
  return keyring_pick(rotation_, seed, prompt, lists_.size());
}

std::vector<int32_t> Victim::generate(Model& model, std::span<const int32_t> prompt,
                                      const GenerateOptions& o) {
  const std::shared_ptr<const GreenLists>& chosen = lists_[key_for(o.sampling.seed, prompt)];
  if (scheme_ != Scheme::Kgw) {
    WatermarkConfig cfg;
    cfg.gamma = chosen->gamma();
    cfg.delta = delta_;
    cfg.router_layer = layer_;
    cfg.context_buckets = chosen->context_buckets();
    return Watermarker(model, chosen, cfg).generate(model, prompt, o);
  }
  const GreenLists& lists = *chosen;
  const auto delta = static_cast<float>(delta_);
  ContextBias kgw(scheme_, layer_, [&lists, delta](int32_t prev, std::span<float> logits) {
    const std::span<const uint64_t> bits = lists.bits(prev);
    for (size_t v = 0; v < logits.size(); ++v)
      if ((bits[v / 64] >> (v % 64)) & 1) logits[v] += delta;
  });
  return kgw.generate(model, prompt, o);
}

DetectionResult Victim::detect(Model& model, std::span<const int32_t> tokens,
                               int64_t prompt_tokens) const {
  if (scheme_ != Scheme::Kgw)
    return detect_tokens(model, detector_, tokens, prompt_tokens, layer_).best;
  // KGW: the "expert" governing token t is token t - 1 (so repeats are (previous, token) pairs).
  std::vector<RouterRecord> records;
  records.reserve(tokens.size());
  for (int32_t t : tokens) records.push_back({t, 1.0f});
  DetectionInput in;
  in.tokens = tokens;
  in.prompt_tokens = prompt_tokens;
  in.records = records;
  return detector_.detect(in).best;
}

}  // namespace epwa::attack
