// epwa.WatermarkConfig as C++ holds it: the key's bytes (never shown to Python) and the EPW-A
// parameters, with the router layer as requested until a model resolves it.
#pragma once
#include <memory>
#include <string>

#include "bindings.hpp"
#include "epwa/watermark.hpp"

namespace epwa::python {

struct KeyedConfig {
  std::string key;         // raw key bytes
  std::string key_id;      // the keyring id it came from, else empty
  WatermarkConfig config;  // router_layer < 0 counts from the last MoE layer

  // The parameters for `lm`, router layer resolved (throws Error when out of range).
  WatermarkConfig resolved(const LoadedModel& lm) const;
  // The green lists of `lm` for this key and gamma (make_green_lists with the hash computed once).
  std::shared_ptr<const GreenLists> lists(const LoadedModel& lm) const;
};

}  // namespace epwa::python
