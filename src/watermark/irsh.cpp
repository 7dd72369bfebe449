// IRSH-v1 and IRSH-v2: the router hash that keys the green lists. Routers are hashed at bf16
// precision so that every load mode of one checkpoint (f32, bf16, f16, 8/4-bit, GGUF) gives the
// same hash.
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <string_view>
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

void put_bf16(std::vector<uint8_t>& out, std::span<const float> values) {
  for (float v : values) {
    const uint16_t b = f32_to_bf16(v);
    out.push_back(static_cast<uint8_t>(b & 0xffu));
    out.push_back(static_cast<uint8_t>(b >> 8));
  }
}

void check_router(const RouterMatrix& r, const char* version) {
  const std::string where = std::string(version) + ": router of layer " + std::to_string(r.layer);
  check(r.layer >= 0 && r.experts > 0 && r.hidden > 0, where + ": negative layer or empty shape");
  check(static_cast<int64_t>(r.weights.size()) == static_cast<int64_t>(r.experts) * r.hidden,
        where + ": has " + std::to_string(r.weights.size()) + " values, expected " +
            std::to_string(r.experts) + " x " + std::to_string(r.hidden));
  check(r.bias.empty() || static_cast<int32_t>(r.bias.size()) == r.experts,
        where + ": bias has " + std::to_string(r.bias.size()) + " values, expected " +
            std::to_string(r.experts));
}

}  // namespace

std::string irsh_v1(std::span<const RouterMatrix> routers) {
  check(!routers.empty(), "irsh_v1: no router matrices (the model has no MoE layer?)");
  detail::Sha256 h;
  static constexpr char kTag[] = "EPWA-IRSH-v1";
  h.update(kTag, sizeof(kTag) - 1);
  std::vector<uint8_t> buf;
  for (const RouterMatrix& r : routers) {
    check_router(r, "irsh_v1");
    buf.clear();
    put_u32(buf, static_cast<uint32_t>(r.layer));
    put_u32(buf, static_cast<uint32_t>(r.experts));
    put_u32(buf, static_cast<uint32_t>(r.hidden));
    put_bf16(buf, r.weights);
    h.update(buf);
  }
  return detail::to_hex(h.finish());
}

std::string irsh_v2(int32_t num_layers, std::string_view rule,
                    std::span<const RouterMatrix> routers) {
  check(!routers.empty(), "irsh_v2: no router matrices (the model has no MoE layer?)");
  check(num_layers > 0 && !rule.empty(), "irsh_v2: no layers or no routing rule");
  detail::Sha256 h;
  static constexpr char kTag[] = "EPWA-IRSH-v2";
  h.update(kTag, sizeof(kTag) - 1);
  std::vector<uint8_t> buf;
  put_u32(buf, static_cast<uint32_t>(num_layers));
  put_u32(buf, static_cast<uint32_t>(routers.size()));
  for (const RouterMatrix& r : routers) put_u32(buf, static_cast<uint32_t>(r.block));
  put_u32(buf, static_cast<uint32_t>(rule.size()));
  buf.insert(buf.end(), rule.begin(), rule.end());
  h.update(buf);
  for (size_t m = 0; m < routers.size(); ++m) {
    const RouterMatrix& r = routers[m];
    check_router(r, "irsh_v2");
    check(r.layer == static_cast<int32_t>(m) && r.block >= 0 && r.block < num_layers &&
              (m == 0 || r.block > routers[m - 1].block),
          "irsh_v2: MoE layer " + std::to_string(m) + " is out of order or outside the model");
    buf.clear();
    put_u32(buf, static_cast<uint32_t>(r.layer));
    put_u32(buf, static_cast<uint32_t>(r.experts));
    put_u32(buf, static_cast<uint32_t>(r.hidden));
    put_bf16(buf, r.weights);
    put_u32(buf, static_cast<uint32_t>(r.bias.size()));
    put_bf16(buf, r.bias);
    h.update(buf);
  }
  return detail::to_hex(h.finish());
}

int32_t resolve_router_layer(int32_t requested, int32_t num_moe_layers) {
  check(num_moe_layers > 0, "the model has no MoE layer to watermark");
  if (requested < 0) {
    check(requested >= -num_moe_layers,
          "router layer " + std::to_string(requested) + " is out of range: the model has " +
              std::to_string(num_moe_layers) + " MoE layers (-1 is the last)");
    return num_moe_layers + requested;
  }
  check(requested < num_moe_layers, "router layer " + std::to_string(requested) +
                                        " is out of range: the model has " +
                                        std::to_string(num_moe_layers) + " MoE layers");
  return requested;
}

}  // namespace epwa
