#include "weights_check.hpp"

#include "epwa/error.hpp"

namespace epwa {
namespace {
std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

void expect_shape(const TensorView& t, const std::vector<int64_t>& shape) {
  check(t.shape == shape, "tensor " + t.name + " has shape " + shape_str(t.shape) + ", expected " +
                              shape_str(shape));
}

void check_weights(const ModelConfig& c, const ModelWeights& w) {
  const int64_t d = c.hidden_size, hd = c.head_dim, v = c.vocab_size, i = c.intermediate_size;
  expect_shape(w.embed, {v, d});
  expect_shape(w.final_norm, {d});
  expect_shape(w.head, {v, d});
  check(static_cast<int32_t>(w.layers.size()) == c.num_layers, "model has " +
                                                                   std::to_string(w.layers.size()) +
                                                                   " layers, config says " +
                                                                   std::to_string(c.num_layers));
  for (const LayerWeights& L : w.layers) {
    expect_shape(L.attn_norm, {d});
    expect_shape(L.ffn_norm, {d});
    expect_shape(L.wq, {int64_t{c.num_heads} * hd, d});
    expect_shape(L.wk, {int64_t{c.num_kv_heads} * hd, d});
    expect_shape(L.wv, {int64_t{c.num_kv_heads} * hd, d});
    expect_shape(L.wo, {d, int64_t{c.num_heads} * hd});
    expect_shape(L.router, {c.num_experts, d});
    check(static_cast<int32_t>(L.w1.size()) == c.num_experts && L.w2.size() == L.w1.size() &&
              L.w3.size() == L.w1.size(),
          "layer " + L.router.name + ": expected " + std::to_string(c.num_experts) + " experts");
    for (size_t e = 0; e < L.w1.size(); ++e) {
      expect_shape(L.w1[e], {i, d});
      expect_shape(L.w3[e], {i, d});
      expect_shape(L.w2[e], {d, i});
    }
  }
}

}  // namespace epwa
