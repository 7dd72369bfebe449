// The router and the sparse MoE block (routed experts plus an optional shared expert), and the
// dense FFN. For Mixtral these are exactly the operations of the original single-function forward
// pass (bit-identical outputs).
//
// Speed without changing a bit of the results (docs/PERF.md, "Engine"): activations are packed
// once per weight type, and a decoded token runs two parallel jobs for its experts (every selected
// expert's gate and up with the SwiGLU; every selected expert's down) instead of one per matrix.
// Each output value is computed by the same kernel call on the same inputs as the one-matrix-at-a-
// time path, and sums keep their order (experts in index order).
#include <algorithm>
#include <cmath>

#include "blocks.hpp"
#include "epwa/error.hpp"
#include "epwa/thread_pool.hpp"
#include "phase_stats.hpp"

namespace epwa::block {

namespace {

// Top-k of `logits` by value, ties to the lower index, best first: insertion into the k kept so
// far, scanning in index order (a later index never passes an equal value).
void select_topk(std::span<const float> logits, int32_t k, int32_t* out) {
  int32_t kept = 0;
  for (int32_t e = 0; e < static_cast<int32_t>(logits.size()); ++e) {
    const float v = logits[e];
    if (kept == k && !(v > logits[out[k - 1]])) continue;
    int32_t p = kept < k ? kept++ : k - 1;
    for (; p > 0 && v > logits[out[p - 1]]; --p) out[p] = out[p - 1];
    out[p] = e;
  }
}

// The experts of one token (decode), in two parallel jobs: the gate and up rows of every selected
// expert with the SwiGLU of each finished range, then every selected expert's down rows. Outputs
// are summed in expert index order, as the batched path does.
void moe_one_token(const ModelConfig& c, const LayerWeights& L, Context::Scratch& s,
                   const float* xn, float* o) {
  const int64_t d = c.hidden_size, inter = c.expert_intermediate_size, k = c.experts_per_token;
  // The selected experts in index order (the counting sort left them so in expert_begin).
  s.sel.resize(k);
  s.sel_w.resize(k);
  s.in_gate.resize(k);
  s.in_up.resize(k);
  int32_t* experts = s.sel.data();
  float* weights = s.sel_w.data();
  const LinearInput** in_gate = s.in_gate.data();
  const LinearInput** in_up = s.in_up.data();
  int64_t m = 0;
  for (int64_t e = 0; e < c.num_experts && m < k; ++e)
    if (s.expert_begin[e + 1] > s.expert_begin[e]) {
      experts[m] = static_cast<int32_t>(e);
      weights[m++] = s.rw[s.expert_begin[e]];
    }
  float* gate = s.gate.data();
  float* up = s.up.data();
  float* down = s.down.data();
  s.inputs.reset();
  for (int64_t j = 0; j < m; ++j) {
    const TensorView& w1 = L.w1[experts[j]];
    const TensorView& w3 = L.w3[experts[j]];
    in_gate[j] = &s.inputs.get(w1.dtype, xn, 1, d);
    in_up[j] = &s.inputs.get(w3.dtype, xn, 1, d);
    check_linear(w1, *in_gate[j]);
    check_linear(w3, *in_up[j]);
    if (w1.rows() != inter || w3.rows() != inter)
      throw Error("tensor '" + w1.name + "' or '" + w3.name + "' does not have " +
                  std::to_string(inter) + " rows");
  }
  {
    EPWA_PHASE("moe gate+up");
    ThreadPool::global().parallel_for(
        m * inter,
        [&](int64_t b, int64_t e) {
          for (int64_t j = b / inter; j < m && j * inter < e; ++j) {
            const int64_t r0 = std::max(b, j * inter) - j * inter;
            const int64_t r1 = std::min(e, (j + 1) * inter) - j * inter;
            float* g = gate + j * inter;
            float* u = up + j * inter;
            linear_rows(L.w1[experts[j]], *in_gate[j], r0, r1, g);
            linear_rows(L.w3[experts[j]], *in_up[j], r0, r1, u);
            swiglu({g + r0, static_cast<size_t>(r1 - r0)}, {u + r0, static_cast<size_t>(r1 - r0)});
          }
        },
        16);
  }
  s.tasks.clear();
  {
    EPWA_PHASE("moe down");
    for (int64_t j = 0; j < m; ++j) {
      const TensorView& w2 = L.w2[experts[j]];
      s.tasks.push_back({&w2, &s.inputs.get(w2.dtype, gate + j * inter, 1, inter), down + j * d});
    }
    linear_tasks(s.tasks);
  }
  EPWA_PHASE("moe sum");
  for (int64_t j = 0; j < m; ++j)
    for (int64_t t = 0; t < d; ++t) o[t] += weights[j] * down[j * d + t];
}

// One matrix product per expert over the tokens routed to it (prompt).
void moe_tokens(const ModelConfig& c, const LayerWeights& L, Context::Scratch& s, const float* xn,
                int64_t n, float* o) {
  const int64_t d = c.hidden_size, inter = c.expert_intermediate_size, ne = c.num_experts;
  ThreadPool& pool = ThreadPool::global();
  const int32_t* ebegin = s.expert_begin.data();
  float* gathered = s.gathered.data();
  float* gate = s.gate.data();
  float* up = s.up.data();
  float* down = s.down.data();
  for (int64_t e = 0; e < ne; ++e) {
    const int64_t m = ebegin[e + 1] - ebegin[e];
    if (m == 0) continue;
    const int32_t* rows = s.rows.data() + ebegin[e];
    const float* rw = s.rw.data() + ebegin[e];
    {
      EPWA_PHASE("moe gather");
      for (int64_t r = 0; r < m; ++r) std::copy_n(xn + rows[r] * d, d, gathered + r * d);
    }
    s.inputs.reset();
    {
      EPWA_PHASE("moe pack");
      s.inputs.get(L.w1[e].dtype, gathered, m, d);
    }
    {
      EPWA_PHASE("moe gate+up");
      linear(L.w1[e], s.inputs.get(L.w1[e].dtype, gathered, m, d), gate);
      linear(L.w3[e], s.inputs.get(L.w3[e].dtype, gathered, m, d), up);
    }
    {
      EPWA_PHASE("moe swiglu");
      // Elementwise, and each token's row on its own: split across the pool, same values.
      pool.parallel_for(
          m * inter,
          [&](int64_t b, int64_t end) {
            swiglu({gate + b, static_cast<size_t>(end - b)},
                   {up + b, static_cast<size_t>(end - b)});
          },
          4096);
    }
    {
      EPWA_PHASE("moe pack");
      s.inputs.get(L.w2[e].dtype, gate, m, inter);
    }
    {
      EPWA_PHASE("moe down");
      linear(L.w2[e], s.inputs.get(L.w2[e].dtype, gate, m, inter), down);
    }
    EPWA_PHASE("moe scatter");
    pool.parallel_for(
        m,
        [&](int64_t b, int64_t end) {
          for (int64_t r = b; r < end; ++r)
            for (int64_t t = 0; t < d; ++t) o[rows[r] * d + t] += rw[r] * down[r * d + t];
        },
        std::max<int64_t>(1, 8192 / d));
  }
}

// o += sigmoid(w . xn) * shared_expert(xn) (or without the gate), row by row.
void add_shared_expert(const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t n,
                       float* o, Context::Scratch& s) {
  const int64_t d = c.hidden_size;
  float* shared = s.shared.resize(n * d);
  ffn(L.shared, c.shared_expert_intermediate_size, d, xn, n, shared, s);
  for (int64_t i = 0; i < n; ++i) {
    float g = 1;
    if (c.shared_expert_gate) {
      const float z = dot(L.shared_gate_inp.dtype, L.shared_gate_inp.data.data(), xn + i * d, d);
      g = 1 / (1 + std::exp(-z));
    }
    for (int64_t t = 0; t < d; ++t) o[i * d + t] += g * shared[i * d + t];
  }
}

}  // namespace

void route(const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t n,
           Context::Scratch& s) {
  const int64_t ne = c.num_experts, k = c.experts_per_token, d = c.hidden_size;
  float* router = s.router.resize(n * ne);
  float* probs = s.probs.resize(ne);
  int32_t* topk = s.topk.resize(n * k);
  float* topw = s.topw.resize(n * k);
  s.inputs.reset();
  {
    EPWA_PHASE("router");
    linear_rows_of(L.router, xn, n, d, router, s);
  }
  EPWA_PHASE("top-k");
  for (int64_t i = 0; i < n; ++i) {
    std::span<const float> logits(router + i * ne, ne);
    int32_t* top = topk + i * k;
    float* w = topw + i * k;
    select_topk(logits, static_cast<int32_t>(k), top);
    const float mx = logits[top[0]];
    float z = 0;
    for (int64_t e = 0; e < ne; ++e) z += (probs[e] = std::exp(logits[e] - mx));
    float wsum = 0;
    for (int64_t j = 0; j < k; ++j) wsum += (w[j] = probs[top[j]] / z);
    if (c.norm_topk_prob)
      for (int64_t j = 0; j < k; ++j) w[j] /= wsum;
  }
}

void moe(const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t n, float* o,
         Context::Scratch& s) {
  EPWA_PHASE("~moe total");
  const int64_t ne = c.num_experts, k = c.experts_per_token, d = c.hidden_size;
  const int64_t inter = c.expert_intermediate_size;
  // Expert outputs: one token's k experts side by side (decode), or one expert's tokens (prompt).
  const int64_t ex_rows = n == 1 ? k : n;
  s.gate.resize(ex_rows * inter);
  s.up.resize(ex_rows * inter);
  s.down.resize(ex_rows * d);
  s.gathered.resize(n * d);
  // The tokens routed to each expert, in token order (a counting sort by expert).
  int32_t* ebegin = s.expert_begin.resize(ne + 1);
  int32_t* efill = s.expert_fill.resize(ne);
  int32_t* erows = s.rows.resize(n * k);
  float* erw = s.rw.resize(n * k);
  const int32_t* topk = s.topk.data();
  const float* topw = s.topw.data();
  std::fill_n(ebegin, ne + 1, 0);
  for (int64_t i = 0; i < n * k; ++i) ++ebegin[topk[i] + 1];
  for (int64_t e = 0; e < ne; ++e) ebegin[e + 1] += ebegin[e];
  std::copy_n(ebegin, ne, efill);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t slot = efill[topk[i * k + j]]++;
      erows[slot] = static_cast<int32_t>(i);
      erw[slot] = topw[i * k + j];
    }
  std::fill_n(o, n * d, 0.0f);
  if (n == 1)
    moe_one_token(c, L, s, xn, o);
  else
    moe_tokens(c, L, s, xn, n, o);
  if (c.shared_expert_intermediate_size > 0) add_shared_expert(c, L, xn, n, o, s);
}

void ffn(const FfnWeights& f, int64_t width, int64_t d, const float* xn, int64_t n, float* o,
         Context::Scratch& s) {
  EPWA_PHASE("ffn");
  float* gate = s.gate.resize(n * width);
  float* up = s.up.resize(n * width);
  s.inputs.reset();
  if (n == 1) {
    const TensorView* ws[] = {&f.gate, &f.up};
    float* ys[] = {gate, up};
    run_one_token(ws, ys, xn, d, s.inputs, s.tasks);
  } else {
    linear(f.gate, s.inputs.get(f.gate.dtype, xn, n, d), gate);
    linear(f.up, s.inputs.get(f.up.dtype, xn, n, d), up);
  }
  swiglu({gate, static_cast<size_t>(n * width)}, {up, static_cast<size_t>(n * width)});
  s.inputs.reset();
  linear_rows_of(f.down, gate, n, width, o, s);
}

}  // namespace epwa::block
