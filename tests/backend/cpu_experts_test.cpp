// The CPU backend's prompt path for experts with quantized weights
// (src/backend/cpu/cpu_experts.cpp: every token packed once per layer, jobs of (expert, row range)
// tasks, waves of experts) against the one-expert-at-a-time composition it replaced, built here
// from the same public pieces (linear() over each expert's gathered rows, the SwiGLU, the weighted
// sum in expert index order): the outputs must be equal to the bit, for several weight types, with
// GPT-OSS's biases and clamp, with one wave and with many small waves.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/cpu/cpu_scratch.hpp"
#include "backend/cpu/linear.hpp"
#include "epwa/backend.hpp"
#include "epwa/model.hpp"
#include "epwa/ops.hpp"
#include "epwa/quant.hpp"

namespace {

using epwa::DType;
using epwa::TensorView;

struct Quantized {
  std::vector<std::byte> bytes;
  TensorView t;
  Quantized(DType type, int64_t rows, int64_t cols, std::mt19937& rng) {
    std::normal_distribution<float> nd(0, 0.5f);
    std::vector<float> v(rows * cols);
    for (float& x : v) x = nd(rng);
    const int64_t rb = epwa::dtype_bytes(type, cols);
    bytes.resize(static_cast<size_t>(rb * rows));
    for (int64_t r = 0; r < rows; ++r)
      epwa::quantize_row(type, v.data() + r * cols, bytes.data() + r * rb, cols);
    t.name = "expert";
    t.dtype = type;
    t.shape = {rows, cols};
    t.data = bytes;
  }
};

TensorView f32_view(const std::vector<float>& v) {
  TensorView t;
  t.name = "bias";
  t.shape = {static_cast<int64_t>(v.size())};
  t.data = std::as_bytes(std::span<const float>(v));
  return t;
}

// The composition the prompt path replaced: per expert in index order, its tokens' rows gathered,
// gate and up products, the activation, the down product, and o += weight * (down + bias).
std::vector<float> one_expert_at_a_time(const epwa::ExpertMatrices& X, int64_t ne, int64_t inter,
                                        const std::vector<int32_t>& topk,
                                        const std::vector<float>& weights, int64_t k,
                                        const std::vector<float>& x, int64_t n, int64_t d) {
  std::vector<float> o(n * d, 0.0f);
  for (int64_t e = 0; e < ne; ++e) {
    std::vector<int64_t> tok;
    std::vector<float> rw;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < k; ++j)
        if (topk[i * k + j] == e) tok.push_back(i), rw.push_back(weights[i * k + j]);
    const auto m = static_cast<int64_t>(tok.size());
    if (m == 0) continue;
    std::vector<float> g(m * d), gate(m * inter), up(m * inter), down(m * d);
    for (int64_t r = 0; r < m; ++r) std::copy_n(x.data() + tok[r] * d, d, g.data() + r * d);
    epwa::linear(X.gate[e], g.data(), m, gate.data());
    epwa::linear(X.up[e], g.data(), m, up.data());
    const auto bias = [e](std::span<const TensorView> b) {
      return b.empty() ? nullptr : reinterpret_cast<const float*>(b[e].data.data());
    };
    const float *bg = bias(X.gate_bias), *bu = bias(X.up_bias);
    if (!bg && X.swiglu_limit == 0) {
      epwa::swiglu(gate, up);
    } else {
      for (int64_t i = 0; i < m * inter; ++i) {
        const int64_t c = i % inter;
        float gv = gate[i] + (bg ? bg[c] : 0.0f), u = up[i] + (bu ? bu[c] : 0.0f);
        if (X.swiglu_limit > 0) {
          const float limit = X.swiglu_limit;
          gv = std::min(gv, limit);
          u = std::clamp(u, -limit, limit);
          gate[i] = (u + 1.0f) * (gv * (1.0f / (1.0f + std::exp(-(gv * 1.702f)))));
        } else {
          gate[i] = gv / (1.0f + std::exp(-gv)) * u;
        }
      }
    }
    epwa::linear(X.down[e], gate.data(), m, down.data());
    const float* bd = bias(X.down_bias);
    for (int64_t r = 0; r < m; ++r) {
      if (bd)
        for (int64_t t = 0; t < d; ++t) down[r * d + t] += bd[t];
      for (int64_t t = 0; t < d; ++t) o[tok[r] * d + t] += rw[r] * down[r * d + t];
    }
  }
  return o;
}

struct Case {
  DType type;
  bool biases;
  int64_t wave_bytes;  // 0: the default
  int64_t n = 45;      // tokens (5: experts with one token, which take the decode kernel)
  DType up = DType::F32, down = DType::F32;  // F32: `type` (mixes: gate and up apart, Q4_K_M's)
};

TEST(CpuExperts, PromptPathEqualsOneExpertAtATimeToTheBit) {
  const epwa::Backend& be = epwa::cpu_backend();
  epwa::ModelConfig c;
  c.head_dim = 8;
  c.rope_theta = 10000.0f;
  const int64_t d = 256, inter = 768, ne = 7, k = 3;
  for (const Case& cs :
       {Case{DType::Q8_0, false, 0}, Case{DType::Q4_0, false, 0}, Case{DType::Q4_K, false, 0},
        Case{DType::Q8_0, false, 1}, Case{DType::Q8_0, false, 200 << 10},
        Case{DType::Q4_0, true, 150 << 10}, Case{DType::Q8_0, false, 0, 5},
        Case{DType::Q4_K, true, 1, 5}, Case{DType::Q4_0, false, 150 << 10, 45, DType::Q8_0},
        Case{DType::Q4_K, false, 0, 45, DType::Q4_K, DType::Q6_K}}) {
    const int64_t n = cs.n;
    SCOPED_TRACE(std::string(epwa::dtype_name(cs.type)) + (cs.biases ? " with biases" : "") +
                 " up " + std::string(epwa::dtype_name(cs.up)) + " down " +
                 std::string(epwa::dtype_name(cs.down)) + " wave bytes " +
                 std::to_string(cs.wave_bytes) + ", " + std::to_string(cs.n) + " tokens");
    std::mt19937 rng(11);
    std::vector<Quantized> mats;
    mats.reserve(3 * ne);
    std::vector<TensorView> G, D, U, BG, BD, BU;
    std::vector<std::vector<float>> biases;
    biases.reserve(3 * ne);
    std::normal_distribution<float> nd(0, 0.3f);
    for (int64_t e = 0; e < ne; ++e) {
      const auto or_type = [&cs](DType t) { return t == DType::F32 ? cs.type : t; };
      G.push_back(mats.emplace_back(cs.type, inter, d, rng).t);
      D.push_back(mats.emplace_back(or_type(cs.down), d, inter, rng).t);
      U.push_back(mats.emplace_back(or_type(cs.up), inter, d, rng).t);
      if (cs.biases)
        for (auto* views : {&BG, &BD, &BU}) {
          auto& b = biases.emplace_back(views == &BD ? d : inter);
          for (float& v : b) v = nd(rng);
          views->push_back(f32_view(b));
        }
    }
    epwa::ExpertMatrices X{G, D, U};
    if (cs.biases) X = {G, D, U, BG, BD, BU, 1.5f};
    std::vector<float> x(n * d);
    for (float& v : x) v = 2 * nd(rng);
    // Distinct experts per token, not in index order; expert 5 gets no token.
    std::vector<int32_t> topk;
    std::vector<float> weights;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<int32_t> pick{0, 1, 2, 3, 4, 6};
      std::shuffle(pick.begin(), pick.end(), rng);
      for (int64_t j = 0; j < k; ++j)
        topk.push_back(pick[j]), weights.push_back(0.2f + nd(rng) * nd(rng));
    }
    auto s = be.make_scratch(c);
    if (cs.wave_bytes) static_cast<epwa::cpu::Scratch&>(*s).moe_wave_bytes = cs.wave_bytes;
    std::vector<float> out(n * d, -1.0f);
    be.expert_ffn(X, inter, {topk.data(), weights.data(), k}, x.data(), n, d, out.data(), *s);
    const auto want = one_expert_at_a_time(X, ne, inter, topk, weights, k, x, n, d);
    for (int64_t i = 0; i < n * d; ++i) ASSERT_EQ(out[i], want[i]) << i;
  }
}

}  // namespace
