// The GSG / EWP logits processor: bias the green list of the expert that routed position t-1.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "epwa/error.hpp"
#include "epwa/watermark.hpp"

namespace epwa {
namespace {

// logits[v] += bias for every set bit v, branch-free: each bitset byte selects a row of 8 all-ones
// or zero masks, ANDed with the bias bits (so +inf adds inf or exactly 0, never NaN). GCC/Clang
// vector types keep it portable while giving 4-wide adds even without -march flags.
using U32x4 = uint32_t __attribute__((vector_size(16)));
using F32x4 = float __attribute__((vector_size(16)));
using ByteMasks = std::array<std::array<uint32_t, 8>, 256>;

const ByteMasks& byte_masks() {
  static const ByteMasks table = [] {
    ByteMasks t{};
    for (int b = 0; b < 256; ++b)
      for (int k = 0; k < 8; ++k) t[b][k] = ((b >> k) & 1) ? 0xffffffffu : 0u;
    return t;
  }();
  return table;
}

void add_masked(std::span<float> logits, std::span<const uint64_t> bits, float bias) {
  const ByteMasks& table = byte_masks();
  const uint32_t bb = std::bit_cast<uint32_t>(bias);
  const U32x4 bv = {bb, bb, bb, bb};
  const size_t V = logits.size(), full = V / 8;
  float* out = logits.data();
  for (size_t b = 0; b < full; ++b) {
    const auto byte = static_cast<uint8_t>(bits[b / 8] >> (8 * (b % 8)));
    const uint32_t* m = table[byte].data();
    float* o = out + 8 * b;
    U32x4 m0, m1;
    F32x4 a, c;
    std::memcpy(&m0, m, 16);
    std::memcpy(&m1, m + 4, 16);
    std::memcpy(&a, o, 16);
    std::memcpy(&c, o + 4, 16);
    a += reinterpret_cast<F32x4>(m0 & bv);
    c += reinterpret_cast<F32x4>(m1 & bv);
    std::memcpy(o, &a, 16);
    std::memcpy(o + 4, &c, 16);
  }
  for (size_t v = full * 8; v < V; ++v)
    if ((bits[v >> 6] >> (v & 63)) & 1u) out[v] += bias;
}

}  // namespace

std::string_view watermark_mode_name(WatermarkMode m) {
  return m == WatermarkMode::GSG ? "gsg" : m == WatermarkMode::EWP ? "ewp" : "exp";
}

WatermarkMode watermark_mode_from_name(std::string_view name) {
  if (name == "gsg") return WatermarkMode::GSG;
  if (name == "ewp") return WatermarkMode::EWP;
  if (name == "exp") return WatermarkMode::Exp;
  throw Error("unknown watermark mode '" + std::string(name) + "' (expected gsg, ewp or exp)");
}

WatermarkProcessor::WatermarkProcessor(WatermarkConfig cfg, std::shared_ptr<const GreenLists> lists)
    : cfg_(std::move(cfg)), lists_(std::move(lists)) {
  check(lists_ != nullptr, "watermark processor: no green lists");
  check(cfg_.gamma == lists_->gamma(), "watermark processor: gamma " + std::to_string(cfg_.gamma) +
                                           " differs from the green lists' gamma " +
                                           std::to_string(lists_->gamma()));
  auto delta_ok = [](double d) { return d >= 0 && d <= kMaxDelta; };
  check(delta_ok(cfg_.delta), [&] {
    return "watermark delta " + std::to_string(cfg_.delta) + " is outside 0 to " +
           std::to_string(kMaxDelta);
  });
  check(cfg_.router_layer >= 0, "watermark router layer is negative (resolve it first)");
  check(cfg_.context_buckets == lists_->context_buckets(),
        "watermark processor: context buckets " + std::to_string(cfg_.context_buckets) +
            " differ from the green lists' " + std::to_string(lists_->context_buckets()));
  check(std::isfinite(cfg_.min_entropy) && cfg_.min_entropy >= 0,
        "watermark min_entropy must be a finite number of nats >= 0");
  if (cfg_.mode == WatermarkMode::Exp)
    check(cfg_.min_entropy == 0 && cfg_.context_buckets == 0,
          "the exp watermark takes neither min_entropy nor context buckets (it is keyed by the "
          "expert and the previous token already, and biases nothing)");
  if (cfg_.expert_deltas.empty()) {
    cfg_.expert_deltas.assign(static_cast<size_t>(lists_->num_experts()), cfg_.delta);
  } else {
    check(static_cast<int32_t>(cfg_.expert_deltas.size()) == lists_->num_experts(),
          "expert deltas: got " + std::to_string(cfg_.expert_deltas.size()) + " values for " +
              std::to_string(lists_->num_experts()) + " experts");
    for (double d : cfg_.expert_deltas)
      check(delta_ok(d), "expert deltas: a value is outside 0 to " + std::to_string(kMaxDelta));
  }
}

void WatermarkProcessor::observe(const RouterObservation& obs) {
  if (obs.layer != cfg_.router_layer) return;
  if (static_cast<int32_t>(obs.logits.size()) != lists_->num_experts())
    throw Error("router observation at layer " + std::to_string(obs.layer) + " has " +
                std::to_string(obs.logits.size()) + " logits, expected " +
                std::to_string(lists_->num_experts()) + " experts");
  // The spec's pathway from the logits under the layer's rule, not the engine's top-k: stored
  // logits (PEPI, detection) give the same expert.
  const ExpertChoice c = top1_expert(obs);
  expert_ = c.expert;
  confidence_ = c.confidence;
  position_ = obs.position;
  fresh_ = true;
}

void WatermarkProcessor::set_previous_token(int32_t token) {
  previous_ = token;
  previous_fresh_ = true;
}

const KeyedUniforms* WatermarkProcessor::uniforms() const {
  return exp_armed_ ? &exp_draw_ : nullptr;
}

double WatermarkProcessor::ExpDraw::uniform(int32_t token) const {
  return GreenLists::exp_uniform(seed, token);
}

void WatermarkProcessor::reset() {
  exp_armed_ = false;
  exp_seen_.clear();
  previous_ = -1;
  previous_fresh_ = false;
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
  // Plain ifs: the messages are only built on failure (this runs once per generated token).
  if (!fresh_)
    throw Error("watermark: no new router observation at layer " +
                std::to_string(cfg_.router_layer) + " before these logits");
  if (static_cast<int32_t>(logits.size()) != lists_->vocab_size())
    throw Error("watermark: got " + std::to_string(logits.size()) +
                " logits, the green lists have " + std::to_string(lists_->vocab_size()) +
                " tokens");
  fresh_ = false;
  if (cfg_.mode == WatermarkMode::Exp) {  // nothing to bias: the sampler races exp_draw_
    if (!previous_fresh_)
      throw Error("watermark: the exp mode needs the previous token (set_previous_token)");
    previous_fresh_ = false;
    // Context masking: a context met before in this text draws freely, or the text would repeat
    // the choice it made there (loops) and its tokens would not be new evidence anyway.
    const uint64_t context = static_cast<uint64_t>(expert_) * lists_->vocab_size() + previous_;
    exp_armed_ = exp_seen_.insert(context).second;
    if (exp_armed_) exp_draw_.seed = lists_->exp_seed(expert_, previous_);
    return;
  }
  int32_t context = expert_;
  if (lists_->context_buckets() > 0) {
    if (!previous_fresh_)
      throw Error("watermark: context buckets need the previous token (set_previous_token)");
    previous_fresh_ = false;
    context = lists_->context(expert_, previous_);
  }
  if (cfg_.min_entropy > 0 && next_token_entropy(logits) < cfg_.min_entropy) return;
  const float bias = static_cast<float>(current_bias());
  add_masked(logits, lists_->bits(context), bias);
}

double next_token_entropy(std::span<const float> logits) {
  float mx = -std::numeric_limits<float>::infinity();
  for (float x : logits) mx = std::max(mx, x);
  if (!std::isfinite(mx)) return 0.0;
  // H = log Z - sum p x, with Z and p taken relative to the maximum.
  double z = 0, px = 0;
  for (float x : logits) {
    if (x == -std::numeric_limits<float>::infinity()) continue;
    const double d = static_cast<double>(x) - mx;
    const double e = std::exp(d);
    z += e;
    px += e * d;
  }
  return std::log(z) - px / z;
}

}  // namespace epwa
