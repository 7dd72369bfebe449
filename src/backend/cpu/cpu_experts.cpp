// The routed experts of an MoE layer on the CPU (Backend::expert_ffn).
//
// Speed without changing a bit of the results (docs/history/PERF-issue9.md, "Engine"): activations
// are packed once per weight type, and a decoded token runs two parallel jobs for its experts
// (every selected expert's gate and up with the SwiGLU; every selected expert's down) instead of
// one per matrix. Each output value is computed by the same kernel call on the same inputs as the
// one-matrix-at-a- time path, and sums keep their order (experts in index order).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>
#include <vector>

#include "core/phase_stats.hpp"
#include "cpu_scratch.hpp"
#include "epwa/error.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/thread_scratch.hpp"

namespace epwa::cpu {

namespace {

// An expert's bias as f32 (nullptr without biases).
const float* bias_of(std::span<const TensorView> b, int64_t e) {
  if (b.empty()) return nullptr;
  const TensorView& t = b[e];
  check(t.dtype == DType::F32, [&] { return "expert bias '" + t.name + "' is not f32"; });
  return reinterpret_cast<const float*>(t.data.data());
}

// gate = act(gate, up) over `count` values of one row, columns c0 ...: silu(gate) * up, or with
// biases and swiglu_limit GPT-OSS's (clamp(up + bu, +-limit) + 1) * g * sigmoid(1.702 g),
// g = min(gate + bg, limit).
void activate(const ExpertMatrices& X, int64_t e, int64_t c0, float* gate, float* up,
              int64_t count) {
  const float* bg = bias_of(X.gate_bias, e);
  const float* bu = bias_of(X.up_bias, e);
  if (!bg && X.swiglu_limit == 0)
    return swiglu({gate, static_cast<size_t>(count)}, {up, static_cast<size_t>(count)});
  for (int64_t i = 0; i < count; ++i) {
    float g = gate[i] + (bg ? bg[c0 + i] : 0.0f), u = up[i] + (bu ? bu[c0 + i] : 0.0f);
    if (X.swiglu_limit > 0) {
      constexpr float kAlpha = 1.702f;
      const float limit = X.swiglu_limit;
      g = std::min(g, limit);
      u = std::clamp(u, -limit, limit);
      gate[i] = (u + 1.0f) * (g * (1.0f / (1.0f + std::exp(-(g * kAlpha)))));
    } else {
      gate[i] = g / (1.0f + std::exp(-g)) * u;
    }
  }
}

// Whether every expert matrix has a block type (packed activations; the float types' prompt
// products read f32 rows).
bool quantized_experts(const ExpertMatrices& X, int64_t ne) {
  const auto block = [](const TensorView& w) {
    return w.dtype != DType::F32 && w.dtype != DType::F16 && w.dtype != DType::BF16;
  };
  for (int64_t e = 0; e < ne; ++e)
    if (!block(X.gate[e]) || !block(X.up[e]) || !block(X.down[e])) return false;
  return true;
}

// Adds expert e's down bias to the d values of one output row.
void add_down_bias(const ExpertMatrices& X, int64_t e, float* row, int64_t d) {
  if (const float* bd = bias_of(X.down_bias, e))
    for (int64_t t = 0; t < d; ++t) row[t] += bd[t];
}

// The experts of one token (decode), in two parallel jobs: the gate and up rows of every selected
// expert with the SwiGLU of each finished range, then every selected expert's down rows. Outputs
// are summed in expert index order, as the batched path does.
void moe_one_token(const ExpertMatrices& X, int64_t ne, int64_t inter, int64_t k, int64_t d,
                   Scratch& s, const float* xn, float* o) {
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
  for (int64_t e = 0; e < ne && m < k; ++e)
    if (s.expert_begin[e + 1] > s.expert_begin[e]) {
      experts[m] = static_cast<int32_t>(e);
      weights[m++] = s.rw[s.expert_begin[e]];
    }
  float* gate = s.gate.data();
  float* up = s.up.data();
  float* down = s.down.data();
  s.inputs.reset();
  for (int64_t j = 0; j < m; ++j) {
    const TensorView& w1 = X.gate[experts[j]];
    const TensorView& w3 = X.up[experts[j]];
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
            linear_rows(X.gate[experts[j]], *in_gate[j], r0, r1, g);
            linear_rows(X.up[experts[j]], *in_up[j], r0, r1, u);
            activate(X, experts[j], r0, g + r0, u + r0, r1 - r0);
          }
        },
        16);
  }
  s.tasks.clear();
  {
    EPWA_PHASE("moe down");
    for (int64_t j = 0; j < m; ++j) {
      const TensorView& w2 = X.down[experts[j]];
      s.tasks.push_back({&w2, &s.inputs.get(w2.dtype, gate + j * inter, 1, inter), down + j * d});
    }
    linear_tasks(s.tasks);
  }
  EPWA_PHASE("moe sum");
  for (int64_t j = 0; j < m; ++j) {
    add_down_bias(X, experts[j], down + j * d, d);
    for (int64_t t = 0; t < d; ++t) o[t] += weights[j] * down[j * d + t];
  }
}

// One matrix product per expert over the tokens routed to it, one expert after the other (prompt,
// float weights: their products read gathered f32 rows).
void moe_tokens_float(const ExpertMatrices& X, int64_t ne, int64_t inter, int64_t d, Scratch& s,
                      const float* xn, int64_t n, float* o) {
  ThreadPool& pool = ThreadPool::global();
  const int32_t* ebegin = s.expert_begin.data();
  float* gathered = s.gathered.resize(n * d);
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
      s.inputs.get(X.gate[e].dtype, gathered, m, d);
    }
    {
      EPWA_PHASE("moe gate+up");
      linear(X.gate[e], s.inputs.get(X.gate[e].dtype, gathered, m, d), gate);
      linear(X.up[e], s.inputs.get(X.up[e].dtype, gathered, m, d), up);
    }
    {
      EPWA_PHASE("moe swiglu");
      // Elementwise, and each token's row on its own: split across the pool, same values.
      pool.parallel_for(
          m * inter,
          [&](int64_t b, int64_t end) {
            if (X.gate_bias.empty() && X.swiglu_limit == 0)
              return swiglu({gate + b, static_cast<size_t>(end - b)},
                            {up + b, static_cast<size_t>(end - b)});
            // Split at row ends: a row's columns index the expert's biases.
            for (int64_t i = b; i < end;) {
              const int64_t stop = std::min(end, (i / inter + 1) * inter);
              activate(X, e, i % inter, gate + i, up + i, stop - i);
              i = stop;
            }
          },
          4096);
    }
    {
      EPWA_PHASE("moe pack");
      s.inputs.get(X.down[e].dtype, gate, m, inter);
    }
    {
      EPWA_PHASE("moe down");
      linear(X.down[e], s.inputs.get(X.down[e].dtype, gate, m, inter), down);
    }
    EPWA_PHASE("moe scatter");
    pool.parallel_for(
        m,
        [&](int64_t b, int64_t end) {
          for (int64_t r = b; r < end; ++r) {
            add_down_bias(X, e, down + r * d, d);
            for (int64_t t = 0; t < d; ++t) o[rows[r] * d + t] += rw[r] * down[r * d + t];
          }
        },
        std::max<int64_t>(1, 8192 / d));
  }
}

// Runs f(t) for every t in [0, count) on the pool as one job: each thread claims one task at a
// time, so a job's tail is at most one task however many there are.
template <class F>
void run_tasks(ThreadPool& pool, int64_t count, F&& f) {
  std::atomic<int64_t> next{0};
  pool.parallel_for(std::min<int64_t>(pool.size(), count), [&](int64_t, int64_t) {
    for (int64_t t = next.fetch_add(1, std::memory_order_relaxed); t < count;
         t = next.fetch_add(1, std::memory_order_relaxed))
      f(t);
  });
}

// out[v * stride + r] = dot(row r, vector v) for the first `rows` rows at w: the prompt tiles, or
// for one vector the decode kernel, as linear() does for one row (the same values; a tile for one
// vector unpacks every row for that one product).
const PackedVector& first(std::span<const PackedVector> xs) {
  return xs[0];
}
const PackedVector& first(std::span<const PackedVector* const> xs) {
  return *xs[0];
}
template <class Vectors>
void rows_product(const std::byte* w, int64_t row_bytes, Vectors xs, int64_t rows, float* out,
                  int64_t stride) {
  if (xs.size() == 1) return vec_dot_rows(w, row_bytes, first(xs), 0, rows, out);
  vec_dot_rows_multi(w, row_bytes, xs, 0, rows, out, stride);
}

// out = rows x vectors as rows_product, from vectors repacked once where the type has tiles.
template <class Vectors>
void tiled_product(const std::byte* w, int64_t row_bytes, const TiledVectors& tv, Vectors xs,
                   int64_t rows, float* out, int64_t stride) {
  if (tv.tiled()) return vec_dot_rows_multi(w, row_bytes, tv, 0, rows, out, stride);
  rows_product(w, row_bytes, xs, rows, out, stride);
}

// Repacks an expert's vectors (xs(i) for i < m) for the tiles; none for one vector, which takes
// the decode kernel (rows_product).
template <class F>
void repack_expert(TiledVectors& tv, int64_t m, F&& xs) {
  thread_local ThreadScratch<std::vector<const PackedVector*>> ptrs_tls;
  std::vector<const PackedVector*>& ptrs = *ptrs_tls;
  ptrs.resize(m < 2 ? 0 : m);
  for (size_t i = 0; i < ptrs.size(); ++i) ptrs[i] = &xs(static_cast<int64_t>(i));
  tv.repack(ptrs);
}

// Rows per task of an expert's matrix: at least 256, else a 32nd of the matrix, as the one-matrix
// path's chunks; a multiple of 16 (whole row tiles).
int64_t rows_per_task(int64_t rows) {
  return std::min(rows, (std::max<int64_t>(256, rows / 32) + 15) / 16 * 16);
}

// The prompt's experts with quantized weights, a wave of experts at a time (their slots' gate and
// down outputs within Scratch::moe_wave_bytes): four jobs per wave instead of seven per expert.
// Every token row is packed once per layer (not once per expert it is routed to). Gate and up, then
// down: tasks of (expert, row range), largest experts first, the gate tasks applying the
// activation to their own range; then the weighted sum, split by columns, adds each output
// value's experts in index order as the one-expert-at-a-time path does. Each product comes from
// the same kernel on the same packed vector, so the results are bit-identical to that path.
void moe_tokens_quantized(const ExpertMatrices& X, int64_t ne, int64_t inter, int64_t d, Scratch& s,
                          const float* xn, int64_t n, float* o) {
  ThreadPool& pool = ThreadPool::global();
  const int32_t* ebegin = s.expert_begin.data();
  const int32_t* erows = s.rows.data();
  const float* erw = s.rw.data();
  const auto routed = [ebegin](int64_t e) { return ebegin[e + 1] - ebegin[e]; };
  s.inputs.reset();
  s.in_gate.assign(ne, nullptr);
  s.in_up.assign(ne, nullptr);
  s.in_down.assign(ne, nullptr);
  {
    EPWA_PHASE("moe pack");
    for (int64_t e = 0; e < ne; ++e) {
      if (routed(e) == 0) continue;
      s.in_gate[e] = &s.inputs.get(X.gate[e].dtype, xn, n, d);
      s.in_up[e] = &s.inputs.get(X.up[e].dtype, xn, n, d);
      check_linear(X.gate[e], *s.in_gate[e]);
      check_linear(X.up[e], *s.in_up[e]);
      if (X.gate[e].rows() != inter || X.up[e].rows() != inter || X.down[e].rows() != d)
        throw Error("expert " + std::to_string(e) + ": '" + X.gate[e].name + "', '" + X.up[e].name +
                    "' or '" + X.down[e].name + "' does not have " + std::to_string(inter) + ", " +
                    std::to_string(inter) + " and " + std::to_string(d) + " rows");
    }
  }
  int32_t* slot_expert = s.slot_expert.resize(ebegin[ne]);
  for (int64_t e = 0; e < ne; ++e)
    std::fill(slot_expert + ebegin[e], slot_expert + ebegin[e + 1], static_cast<int32_t>(e));
  const int64_t budget = std::max<int64_t>(1, s.moe_wave_bytes / (4 * (inter + d)));
  const int64_t rb_in = rows_per_task(inter), rb_out = rows_per_task(d);
  for (int64_t w0 = 0, w1 = 0; w0 < ne; w0 = w1) {
    // The wave: experts [w0, w1) (at least one), their slots [p0, p1).
    w1 = w0 + 1;
    while (w1 < ne && ebegin[w1 + 1] - ebegin[w0] <= budget) ++w1;
    const int64_t p0 = ebegin[w0], p1 = ebegin[w1];
    if (p1 == p0) continue;
    float* gate = s.gate.resize((p1 - p0) * inter);
    s.wave_experts.clear();
    for (int64_t e = w0; e < w1; ++e)
      if (routed(e) > 0) s.wave_experts.push_back(static_cast<int32_t>(e));
    // Largest first: the job's last tasks are its shortest.
    std::stable_sort(s.wave_experts.begin(), s.wave_experts.end(),
                     [&](int32_t a, int32_t b) { return routed(a) > routed(b); });
    const auto nw = static_cast<int64_t>(s.wave_experts.size());
    s.expert_tasks.clear();
    for (int32_t i = 0; i < nw; ++i)
      for (int64_t r = 0; r < inter; r += rb_in)
        s.expert_tasks.push_back({s.wave_experts[i], i, r, std::min(inter, r + rb_in)});
    // Each expert's vectors are repacked once for all its gate and up tasks (a task used to
    // repack them for each of its two products: 7 % of a Mixtral prompt's compute).
    s.tiled_gate.resize(std::max<size_t>(s.tiled_gate.size(), s.wave_experts.size()));
    s.tiled_up.resize(s.tiled_gate.size());
    s.tiled_down.resize(s.tiled_gate.size());
    const auto shared_up = [&](int64_t e) { return s.in_up[e] == s.in_gate[e]; };
    {
      EPWA_PHASE("moe repack");
      run_tasks(pool, nw, [&](int64_t i) {
        const int32_t e = s.wave_experts[i];
        const int64_t b = ebegin[e];
        const std::span<const PackedVector> pg = s.in_gate[e]->packed(), pu = s.in_up[e]->packed();
        repack_expert(
            s.tiled_gate[i], routed(e), [&](int64_t r) -> auto& { return pg[erows[b + r]]; });
        repack_expert(
            s.tiled_up[i],
            shared_up(e) ? 0 : routed(e), [&](int64_t r) -> auto& { return pu[erows[b + r]]; });
      });
    }
    {
      EPWA_PHASE("moe gate+up");
      run_tasks(pool, static_cast<int64_t>(s.expert_tasks.size()), [&](int64_t t) {
        const ExpertTask task = s.expert_tasks[t];
        const int64_t e = task.expert, r0 = task.r0, nr = task.r1 - task.r0;
        const int64_t b = ebegin[e], m = routed(e);
        const TiledVectors& tg = s.tiled_gate[task.in_wave];
        const TiledVectors& tu = shared_up(e) ? tg : s.tiled_up[task.in_wave];
        thread_local ThreadScratch<std::vector<const PackedVector*>> xg_tls, xu_tls;
        std::vector<const PackedVector*>& xg = *xg_tls;
        std::vector<const PackedVector*>& xu = *xu_tls;
        thread_local ThreadScratch<std::vector<float>> up_tls;
        std::vector<float>& up = *up_tls;
        xg.resize(tg.tiled() ? 0 : m);
        xu.resize(tu.tiled() ? 0 : m);
        up.resize(m * nr);
        const std::span<const PackedVector> pg = s.in_gate[e]->packed(), pu = s.in_up[e]->packed();
        for (size_t r = 0; r < xg.size(); ++r) xg[r] = &pg[erows[b + static_cast<int64_t>(r)]];
        for (size_t r = 0; r < xu.size(); ++r) xu[r] = &pu[erows[b + static_cast<int64_t>(r)]];
        const TensorView& w1g = X.gate[e];
        const TensorView& w3 = X.up[e];
        const int64_t rbg = dtype_bytes(w1g.dtype, d), rbu = dtype_bytes(w3.dtype, d);
        float* g = gate + (b - p0) * inter + r0;
        tiled_product(w1g.data.data() + r0 * rbg, rbg, tg, std::span<const PackedVector* const>(xg),
                      nr, g, inter);
        tiled_product(w3.data.data() + r0 * rbu, rbu, tu, std::span<const PackedVector* const>(xu),
                      nr, up.data(), nr);
        for (int64_t r = 0; r < m; ++r) activate(X, e, r0, g + r * inter, up.data() + r * nr, nr);
      });
    }
    s.wave_inputs.reset();
    {
      EPWA_PHASE("moe pack");
      for (int64_t e = w0; e < w1; ++e) {
        if (routed(e) == 0) continue;
        s.in_down[e] = &s.wave_inputs.get(X.down[e].dtype, gate, p1 - p0, inter);
        check_linear(X.down[e], *s.in_down[e]);
      }
    }
    float* down = s.down.resize((p1 - p0) * d);
    s.expert_tasks.clear();
    for (int32_t i = 0; i < nw; ++i)
      for (int64_t r = 0; r < d; r += rb_out)
        s.expert_tasks.push_back({s.wave_experts[i], i, r, std::min(d, r + rb_out)});
    const auto down_in = [&](int64_t e) {
      return s.in_down[e]->packed().subspan(static_cast<size_t>(ebegin[e] - p0),
                                            static_cast<size_t>(routed(e)));
    };
    {
      EPWA_PHASE("moe repack");
      run_tasks(pool, nw, [&](int64_t i) {
        const int32_t e = s.wave_experts[i];
        const std::span<const PackedVector> xs = down_in(e);
        repack_expert(
            s.tiled_down[i], routed(e), [&](int64_t r) -> auto& { return xs[r]; });
      });
    }
    {
      EPWA_PHASE("moe down");
      run_tasks(pool, static_cast<int64_t>(s.expert_tasks.size()), [&](int64_t t) {
        const ExpertTask task = s.expert_tasks[t];
        const int64_t e = task.expert, r0 = task.r0, nr = task.r1 - task.r0;
        const TensorView& w2 = X.down[e];
        const int64_t rbd = dtype_bytes(w2.dtype, inter);
        tiled_product(w2.data.data() + r0 * rbd, rbd, s.tiled_down[task.in_wave], down_in(e), nr,
                      down + (ebegin[e] - p0) * d + r0, d);
      });
    }
    EPWA_PHASE("moe sum");
    // By columns: each output value adds the wave's slots in order (its token's experts in index
    // order).
    pool.parallel_for(
        d,
        [&](int64_t c0, int64_t c1) {
          for (int64_t p = p0; p < p1; ++p) {
            float* row = down + (p - p0) * d;
            if (const float* bd = bias_of(X.down_bias, s.slot_expert[p]))
              for (int64_t c = c0; c < c1; ++c) row[c] += bd[c];
            float* out = o + erows[p] * d;
            for (int64_t c = c0; c < c1; ++c) out[c] += erw[p] * row[c];
          }
        },
        256);
  }
}

}  // namespace

void expert_ffn(const ExpertMatrices& X, int64_t ne, int64_t inter, const Routing& r,
                const float* xn, int64_t n, int64_t d, float* o, Scratch& s) {
  EPWA_PHASE("~moe total");
  const int64_t k = r.k;
  const int64_t ex_rows = n == 1 ? k : n;
  s.gate.resize(ex_rows * inter);
  s.up.resize(ex_rows * inter);
  s.down.resize(ex_rows * d);
  // The tokens routed to each expert, in token order (a counting sort by expert).
  int32_t* ebegin = s.expert_begin.resize(ne + 1);
  int32_t* efill = s.expert_fill.resize(ne);
  int32_t* erows = s.rows.resize(n * k);
  float* erw = s.rw.resize(n * k);
  std::fill_n(ebegin, ne + 1, 0);
  for (int64_t i = 0; i < n * k; ++i) ++ebegin[r.topk[i] + 1];
  for (int64_t e = 0; e < ne; ++e) ebegin[e + 1] += ebegin[e];
  std::copy_n(ebegin, ne, efill);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const int32_t slot = efill[r.topk[i * k + j]]++;
      erows[slot] = static_cast<int32_t>(i);
      erw[slot] = r.weights[i * k + j];
    }
  std::fill_n(o, n * d, 0.0f);
  if (n == 1)
    moe_one_token(X, ne, inter, k, d, s, xn, o);
  else if (quantized_experts(X, ne))
    moe_tokens_quantized(X, ne, inter, d, s, xn, n, o);
  else
    moe_tokens_float(X, ne, inter, d, s, xn, n, o);
}

}  // namespace epwa::cpu
