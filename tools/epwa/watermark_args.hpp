// Watermark options shared by `epwa generate` and `epwa detect`: key, gamma, delta, router layer.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <vector>

#include "epwa/model.hpp"
#include "epwa/watermark.hpp"

namespace epwa::cli {

struct WatermarkArgs {
  std::string key, key_file;
  std::string keyring;  // a keyring file (docs/SERVER.md's format): rotate / try every key
  double gamma = 0.5;
  double delta = 2.0;
  std::string expert_deltas;    // "d0,d1,..." (EWP)
  int32_t router_layer = -1;    // -1 = last MoE layer
  double min_entropy = 0.0;     // selective bias / entropy-aware detection (nats)
  int32_t context_buckets = 0;  // CTX-v1: H buckets of the previous token (0 = off)

  // --key, --key-file, --gamma, --router-layer, --min-entropy; with `generation` also --delta,
  // --expert-deltas.
  void add(CLI::App& app, bool generation);
  // Throws Error when a watermark option is given that `mode` ("none", "gsg", "ewp") would ignore:
  // any of them without a watermark, --expert-deltas with GSG.
  void check_used(const CLI::App& app, const std::string& mode) const;
  // --key-file bytes, else --key, else $EPW_KEY; throws Error when none is given (no default key).
  std::string resolve_key() const;
  // With --keyring: its ids and secrets in keyring order (the ids sorted), loaded and checked.
  struct Keys {
    std::vector<std::string> ids, secrets;
  };
  Keys resolve_keyring() const;
  // The configuration for `mode`, router layer resolved against `model`.
  WatermarkConfig config(WatermarkMode mode, const Model& model) const;
};

// {"mode", "gamma", "delta", "expert_deltas", "router_layer", "router_hash"} for JSON output.
nlohmann::json watermark_json(const WatermarkConfig& c, const std::string& router_hash);

}  // namespace epwa::cli
