#include "watermark_args.hpp"

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/session.hpp"

namespace epwa::cli {

void WatermarkArgs::add(CLI::App& app, bool generation) {
  auto* k = app.add_option("--key", key, "watermark key (UTF-8; default $EPW_KEY)");
  app.add_option("--key-file", key_file, "file whose raw bytes are the watermark key")->excludes(k);
  app.add_option("--gamma", gamma, "green-list fraction, in (0, 1)")->check(CLI::Range(0.0, 1.0));
  app.add_option("--router-layer", router_layer, "watermark layer among the MoE layers (negative: from the last; default -1, the last)");
  if (generation) {
    app.add_option("--delta", delta, "green-token logit bias (GSG) or EWP base bias");
    app.add_option("--expert-deltas", expert_deltas,
                   "EWP per-expert base biases d0,d1,... (default: --delta)");
  }
}

std::string WatermarkArgs::resolve_key() const {
  if (!key_file.empty()) return read_key_file(key_file);
  if (!key.empty()) return key;
  if (const char* env = std::getenv("EPW_KEY"); env && *env) return env;
  throw Error("no watermark key: give --key, --key-file or set EPW_KEY (there is no default key)");
}

WatermarkConfig WatermarkArgs::config(WatermarkMode mode, const Model& model) const {
  WatermarkConfig c;
  c.mode = mode;
  check(gamma > 0.0 && gamma < 1.0, "--gamma must be in (0, 1)");
  check(std::isfinite(delta), "--delta must be a finite number");
  c.gamma = gamma;
  c.delta = delta;
  if (!expert_deltas.empty()) {
    for (float d : parse_float_list(expert_deltas)) c.expert_deltas.push_back(d);
    check(static_cast<int32_t>(c.expert_deltas.size()) == model.config().num_experts,
          "--expert-deltas has " + std::to_string(c.expert_deltas.size()) +
              " values, the model has " + std::to_string(model.config().num_experts) + " experts");
  }
  c.router_layer = model_router_layer(model, router_layer);
  return c;
}

nlohmann::json watermark_json(const WatermarkConfig& c, const std::string& router_hash) {
  nlohmann::json j{{"mode", watermark_mode_name(c.mode)},
                   {"gamma", c.gamma},
                   {"delta", c.delta},
                   {"router_layer", c.router_layer},
                   {"router_hash", router_hash}};
  if (!c.expert_deltas.empty()) j["expert_deltas"] = c.expert_deltas;
  return j;
}

}  // namespace epwa::cli
