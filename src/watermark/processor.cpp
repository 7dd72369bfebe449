// The GSG / EWP logits processor: bias the green list of the expert that routed position t-1.
#include <bit>
#include <cmath>

#include "epwa/error.hpp"
#include "epwa/watermark.hpp"

namespace epwa {

std::string_view watermark_mode_name(WatermarkMode m) {
  return m == WatermarkMode::GSG ? "gsg" : "ewp";
}

WatermarkMode watermark_mode_from_name(std::string_view name) {
  if (name == "gsg") return WatermarkMode::GSG;
  if (name == "ewp") return WatermarkMode::EWP;
  throw Error("unknown watermark mode '" + std::string(name) + "' (expected gsg or ewp)");
}

WatermarkProcessor::WatermarkProcessor(WatermarkConfig cfg, std::shared_ptr<const GreenLists> lists)
    : cfg_(std::move(cfg)), lists_(std::move(lists)) {
  check(lists_ != nullptr, "watermark processor: no green lists");
  check(cfg_.gamma == lists_->gamma(), "watermark processor: gamma " + std::to_string(cfg_.gamma) +
                                           " differs from the green lists' gamma " +
                                           std::to_string(lists_->gamma()));
  check(!std::isnan(cfg_.delta), "watermark delta is NaN");
  check(cfg_.router_layer >= 0, "watermark router layer is negative (resolve it first)");
  if (cfg_.expert_deltas.empty()) {
    cfg_.expert_deltas.assign(static_cast<size_t>(lists_->num_experts()), cfg_.delta);
  } else {
    check(static_cast<int32_t>(cfg_.expert_deltas.size()) == lists_->num_experts(),
          "expert deltas: got " + std::to_string(cfg_.expert_deltas.size()) + " values for " +
              std::to_string(lists_->num_experts()) + " experts");
    for (double d : cfg_.expert_deltas) check(!std::isnan(d), "expert deltas: a value is NaN");
  }
}

void WatermarkProcessor::observe(const RouterObservation& obs) {
  if (obs.layer != cfg_.router_layer) return;
  check(static_cast<int32_t>(obs.logits.size()) == lists_->num_experts(),
        "router observation at layer " + std::to_string(obs.layer) + " has " +
            std::to_string(obs.logits.size()) + " logits, expected " +
            std::to_string(lists_->num_experts()) + " experts");
  // The spec's expert is the argmax of the logits, not the engine's top-k (which may break ties
  // differently or be computed after a bias).
  const ExpertChoice c = top1_expert(obs.logits);
  expert_ = c.expert;
  confidence_ = c.confidence;
  position_ = obs.position;
  fresh_ = true;
}

void WatermarkProcessor::reset() {
  expert_ = -1;
  confidence_ = 0.0f;
  position_ = -1;
  fresh_ = false;
}

double WatermarkProcessor::current_bias() const {
  check(expert_ >= 0,
        "watermark: no router observation at layer " + std::to_string(cfg_.router_layer));
  if (cfg_.mode == WatermarkMode::GSG) return cfg_.delta;
  return cfg_.expert_deltas[static_cast<size_t>(expert_)] * static_cast<double>(confidence_);
}

void WatermarkProcessor::process(std::span<float> logits) {
  check(fresh_, "watermark: no new router observation at layer " +
                    std::to_string(cfg_.router_layer) + " before these logits");
  check(static_cast<int32_t>(logits.size()) == lists_->vocab_size(),
        "watermark: got " + std::to_string(logits.size()) + " logits, the green lists have " +
            std::to_string(lists_->vocab_size()) + " tokens");
  const float bias = static_cast<float>(current_bias());
  const std::span<const uint64_t> bits = lists_->bits(expert_);
  // Walk the set bits only: about gamma * V additions, no branch per token.
  for (size_t w = 0; w < bits.size(); ++w) {
    uint64_t word = bits[w];
    float* base = logits.data() + w * 64;
    while (word != 0) {
      base[std::countr_zero(word)] += bias;
      word &= word - 1;
    }
  }
  fresh_ = false;
}

}  // namespace epwa
