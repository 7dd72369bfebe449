// IRSH-v1: the router hash that keys the green lists. Routers are hashed at bf16 precision so that
// every load mode of one checkpoint (f32, bf16, f16, 8/4-bit, GGUF) gives the same hash.
#include <cmath>
#include <string>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/half.hpp"
#include "epwa/watermark.hpp"
#include "watermark/sha256.hpp"

namespace epwa {
namespace {

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

}  // namespace

std::string irsh_v1(std::span<const RouterMatrix> routers) {
  check(!routers.empty(), "irsh_v1: no router matrices (the model has no MoE layer?)");
  detail::Sha256 h;
  static constexpr char kTag[] = "EPWA-IRSH-v1";
  h.update(kTag, sizeof(kTag) - 1);
  std::vector<uint8_t> buf;
  for (const RouterMatrix& r : routers) {
    const std::string where = "irsh_v1: router of layer " + std::to_string(r.layer);
    check(r.layer >= 0 && r.experts > 0 && r.hidden > 0, where + ": negative layer or empty shape");
    check(static_cast<int64_t>(r.weights.size()) == static_cast<int64_t>(r.experts) * r.hidden,
          where + ": has " + std::to_string(r.weights.size()) + " values, expected " +
              std::to_string(r.experts) + " x " + std::to_string(r.hidden));
    buf.clear();
    put_u32(buf, static_cast<uint32_t>(r.layer));
    put_u32(buf, static_cast<uint32_t>(r.experts));
    put_u32(buf, static_cast<uint32_t>(r.hidden));
    h.update(buf);
    buf.resize(r.weights.size() * 2);
    for (size_t i = 0; i < r.weights.size(); ++i) {
      const uint16_t b = f32_to_bf16(r.weights[i]);
      buf[2 * i] = static_cast<uint8_t>(b & 0xffu);
      buf[2 * i + 1] = static_cast<uint8_t>(b >> 8);
    }
    h.update(buf);
  }
  const detail::Digest d = h.finish();
  return detail::to_hex(d);
}

ExpertChoice top1_expert(std::span<const float> router_logits) {
  check(!router_logits.empty(), "router logits are empty");
  int32_t best = 0;
  for (size_t e = 0; e < router_logits.size(); ++e) {
    check(std::isfinite(router_logits[e]),
          "router logit of expert " + std::to_string(e) + " is not finite");
    if (router_logits[e] > router_logits[static_cast<size_t>(best)]) best = static_cast<int32_t>(e);
  }
  const double top = router_logits[static_cast<size_t>(best)];
  double sum = 0.0;
  for (float l : router_logits) sum += std::exp(static_cast<double>(l) - top);
  return {best, static_cast<float>(1.0 / sum)};
}

int32_t resolve_router_layer(int32_t requested, int32_t num_moe_layers) {
  check(num_moe_layers > 0, "the model has no MoE layer to watermark");
  if (requested < 0) return num_moe_layers - 1;
  check(requested < num_moe_layers, "router layer " + std::to_string(requested) +
                                        " is out of range: the model has " +
                                        std::to_string(num_moe_layers) + " MoE layers");
  return requested;
}

}  // namespace epwa
