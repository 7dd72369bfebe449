#include "watermark_args.hpp"

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/server.hpp"
#include "epwa/session.hpp"

namespace epwa::cli {

void WatermarkArgs::add(CLI::App& app, bool generation) {
  auto* k = app.add_option("--key", key, "watermark key (UTF-8; default $EPW_KEY)");
  auto* kf = app.add_option("--key-file", key_file, "file whose raw bytes are the watermark key")
                 ->excludes(k);
  app.add_option("--keyring", keyring,
                 generation
                     ? "keyring file {\"default\": id, \"keys\": {id: secret}} (mode 0600, "
                       "as epwa serve's): each response is watermarked with one of its keys, "
                       "picked from --seed and the prompt with a secret (docs/SPEC.md 9)"
                     : "keyring file (as epwa serve's): every key is tried and the decision "
                       "is Bonferroni-corrected for their number (docs/SPEC.md 9)")
      ->excludes(k)
      ->excludes(kf);
  app.add_option("--gamma", gamma, "green-list fraction, in (0, 1)")
      ->check(real_number({.lo = 0, .hi = 1, .lo_open = true, .hi_open = true}));
  app.add_option(
      "--router-layer", router_layer,
      "watermark layer among the MoE layers (negative: from the last; default -1, the last)");
  app.add_option("--min-entropy", min_entropy,
                 generation ? "bias only steps whose next-token entropy is at least this (nats; "
                              "default 0: every step); detect with the same value"
                            : "score only tokens whose next-token entropy was at least this (nats; "
                              "default 0: every token); as the text was generated with")
      ->check(real_number({.lo = 0, .hi = 20}));
  app.add_option("--context-buckets", context_buckets,
                 "CTX-v1: key the green lists by the expert and one of H keyed buckets of the "
                 "previous token (E x H lists; 0 = off, the default; docs/SPEC.md 10); "
                 "generation and detection must agree")
      ->check(whole_number(0, 65536));
  if (generation) {
    app.add_option("--delta", delta,
                   "green-token logit bias (GSG) or EWP base bias; at most 10000, which already "
                   "forces green tokens")
        ->check(real_number({.lo = 0, .hi = kMaxDelta}));
    app.add_option("--expert-deltas", expert_deltas,
                   "EWP per-expert base biases d0,d1,... (default: --delta)");
  }
}

void WatermarkArgs::check_used(const CLI::App& app, const std::string& mode) const {
  if (mode == "none") {
    for (const char* flag :
         {"--key", "--key-file", "--keyring", "--gamma", "--delta", "--expert-deltas",
          "--router-layer", "--min-entropy", "--context-buckets"})
      check(app.count(flag) == 0, std::string(flag) +
                                      " is a watermark option, but --watermark is none: add "
                                      "--watermark gsg or ewp, or leave it out");
  }
  if (mode == "exp")
    for (const char* flag : {"--delta", "--expert-deltas", "--min-entropy", "--context-buckets"})
      check(app.count(flag) == 0, std::string(flag) +
                                      " is not an option of --watermark exp (it biases nothing "
                                      "and is keyed by the expert and the previous token)");
  check(mode != "gsg" || app.count("--expert-deltas") == 0,
        "--expert-deltas is for --watermark ewp (gsg uses the one --delta)");
}

std::string WatermarkArgs::resolve_key() const {
  if (!key_file.empty()) return read_key_file(path_from_utf8(key_file));
  if (!key.empty()) return key;
  if (const char* env = std::getenv("EPW_KEY"); env && *env) return env;
  throw Error("no watermark key: give --key, --key-file or set EPW_KEY (there is no default key)");
}

WatermarkArgs::Keys WatermarkArgs::resolve_keyring() const {
  const Keyring ring = Keyring::load(path_from_utf8(keyring));
  Keys k;
  for (const auto& [id, secret] : ring.keys) {
    k.ids.push_back(id);
    k.secrets.push_back(secret);
  }
  return k;
}

WatermarkConfig WatermarkArgs::config(WatermarkMode mode, const Model& model) const {
  WatermarkConfig c;
  c.mode = mode;
  check(gamma > 0.0 && gamma < 1.0, "--gamma must be in (0, 1)");
  c.gamma = gamma;
  c.delta = delta;
  if (!expert_deltas.empty()) {
    for (float d : parse_float_list(expert_deltas)) {
      check(
          d >= 0 && d <= kMaxDelta,
          "--expert-deltas: each value must be a number from 0 to 10000, got " + std::to_string(d));
      c.expert_deltas.push_back(d);
    }
    check(static_cast<int32_t>(c.expert_deltas.size()) == model.config().num_experts,
          "--expert-deltas has " + std::to_string(c.expert_deltas.size()) +
              " values, the model has " + std::to_string(model.config().num_experts) + " experts");
  }
  c.router_layer = model_router_layer(model, router_layer);
  c.min_entropy = min_entropy;
  c.context_buckets = context_buckets;
  return c;
}

nlohmann::json watermark_json(const WatermarkConfig& c, const std::string& router_hash) {
  nlohmann::json j{{"mode", watermark_mode_name(c.mode)},
                   {"gamma", c.gamma},
                   {"delta", c.delta},
                   {"router_layer", c.router_layer},
                   {"router_hash", router_hash}};
  if (!c.expert_deltas.empty()) j["expert_deltas"] = c.expert_deltas;
  if (c.min_entropy > 0) j["min_entropy"] = c.min_entropy;
  if (c.context_buckets > 0) j["context_buckets"] = c.context_buckets;
  return j;
}

}  // namespace epwa::cli
