// epwa.WatermarkConfig as C++ holds it: the key's bytes (never shown to Python) and the EPW-A
// parameters, with the router layer as requested until a model resolves it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "bindings.hpp"
#include "epwa/watermark.hpp"

namespace epwa::python {

struct KeyedConfig {
  std::string key;         // raw key bytes
  std::string key_id;      // the keyring id it came from, else empty
  WatermarkConfig config;  // router_layer < 0 counts from the last MoE layer
  // rotate_keys (KR-v1, docs/SPEC.md 9): the whole keyring in keyring order, one key picked per
  // generation from its seed and prompt; detection tests every key. Empty otherwise.
  std::vector<std::string> ring_ids, ring_secrets;

  bool rotates() const { return !ring_secrets.empty(); }
  // The parameters for `lm`, router layer resolved (throws Error when out of range).
  WatermarkConfig resolved(const LoadedModel& lm) const;
  // The green lists of `lm` for `secret` (this config's key by default), gamma and context buckets
  // (make_green_lists with the hash computed once).
  std::shared_ptr<const GreenLists> lists(const LoadedModel& lm) const { return lists(lm, key); }
  std::shared_ptr<const GreenLists> lists(const LoadedModel& lm, const std::string& secret) const;
};

}  // namespace epwa::python
