// The Mixtral forward pass, written to match transformers' MixtralForCausalLM operation for
// operation: RMSNorm in f32, rotate-half RoPE, grouped-query attention, and the sparse MoE block
// (softmax over all experts, top-k with ties to the lower index, renormalised weights, SwiGLU
// experts).
//
// Speed without changing a bit of the results (docs/PERF.md, "Engine"): buffers live in Scratch
// and are reused (no allocation per token), activations are packed once per weight type, and a
// decoded token runs a handful of parallel jobs per layer (Q, K and V together; every selected
// expert's gate and up with the SwiGLU; every selected expert's down) instead of one per matrix.
// Each output value is computed by the same kernel call on the same inputs as the one-matrix-at-a-
// time path, and sums keep their order (experts in index order).
#include "epwa/model.hpp"

#include <algorithm>
#include <cmath>
#include <deque>

#include "epwa/error.hpp"
#include "epwa/memory.hpp"
#include "epwa/ops.hpp"
#include "linear.hpp"

#ifdef EPWA_PHASE_STATS
#include <chrono>
#include <cstdio>
#include <map>
#endif

namespace epwa {

namespace {

#ifdef EPWA_PHASE_STATS
// Profiling build only (docs/PERF.md, "Profiles"): wall time of each phase of forward(), printed at
// exit. Calls from one thread (the caller of forward) only.
struct PhaseStats {
  std::map<std::string, std::pair<int64_t, int64_t>> t;  // name -> (ns, calls)
  ~PhaseStats() {
    int64_t all = 0;
    for (const auto& [k, v] : t) all += v.first;
    for (const auto& [k, v] : t)
      std::fprintf(stderr, "phase %-16s %9.1f ms %5.1f%% %8lld calls\n", k.c_str(), v.first / 1e6,
                   100.0 * v.first / std::max<int64_t>(all, 1), static_cast<long long>(v.second));
  }
};
PhaseStats g_phases;
struct PhaseTimer {
  std::pair<int64_t, int64_t>& slot;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  explicit PhaseTimer(const char* name) : slot(g_phases.t[name]) {}
  ~PhaseTimer() {
    slot.first +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    ++slot.second;
  }
};
#define EPWA_PHASE_CAT(a, b) a##b
#define EPWA_PHASE_VAR(line) EPWA_PHASE_CAT(epwa_phase_timer_, line)
#define EPWA_PHASE(name) PhaseTimer EPWA_PHASE_VAR(__LINE__)(name)
#else
#define EPWA_PHASE(name) (void)0
#endif

// A scratch array that only grows (its contents are lost when it does); large ones get huge pages.
template <class T>
class Buffer {
 public:
  T* data() const { return static_cast<T*>(mem_.data()); }
  std::span<T> span() const { return {data(), n_}; }
  size_t size() const { return n_; }
  T& operator[](size_t i) const { return data()[i]; }
  T* resize(int64_t n) {
    const auto need = static_cast<size_t>(n) * sizeof(T);
    if (need > mem_.size()) mem_ = LargeBuffer(std::max(need, mem_.size() + mem_.size() / 2));
    n_ = static_cast<size_t>(n);
    return data();
  }

 private:
  LargeBuffer mem_;
  size_t n_ = 0;
};

// Inputs prepared for the weight types that read the same activations; references stay valid
// until reset().
class InputSet {
 public:
  void reset() { used_ = 0; }
  const LinearInput& get(DType t, const float* x, int64_t n, int64_t cols) {
    for (size_t i = 0; i < used_; ++i) {
      const LinearInput& in = inputs_[i];
      if (in.wtype() == t && in.x() == x && in.rows() == n && in.cols() == cols) return in;
    }
    if (used_ == inputs_.size()) inputs_.emplace_back();
    inputs_[used_].prepare(t, x, n, cols);
    return inputs_[used_++];
  }

 private:
  std::deque<LinearInput> inputs_;  // a deque: growing keeps references
  size_t used_ = 0;
};

}  // namespace

struct Model::Scratch {
  RopeTable rope;
  Buffer<float> x, xn, q, k, v, att, o, router, probs, gathered, gate, up, down;
  Buffer<int32_t> topk, expert_begin, expert_fill, rows;
  Buffer<float> topw, rw;
  InputSet inputs;
  std::vector<RowTask> tasks;
  // Decode's selected experts: index, weight, prepared inputs of gate and up.
  std::vector<int32_t> sel;
  std::vector<float> sel_w;
  std::vector<const LinearInput*> in_gate, in_up;
  explicit Scratch(const ModelConfig& c) : rope(c.head_dim, c.rope_theta) {}
};

Model::Model(ModelConfig config, ModelWeights weights, std::shared_ptr<const void> keep_alive,
             std::filesystem::path source, std::string format)
    : config_(std::move(config)),
      weights_(std::move(weights)),
      keep_alive_(std::move(keep_alive)),
      source_(std::move(source)),
      format_(std::move(format)),
      scratch_(std::make_unique<Scratch>(config_)) {}

Model::~Model() = default;

std::vector<float> Model::router_f32(int32_t layer) const {
  check(layer >= 0 && layer < config_.num_layers,
        "router layer " + std::to_string(layer) + " out of range (model has " +
            std::to_string(config_.num_layers) + " layers)");
  const TensorView& r = weights_.layers[layer].router;
  std::vector<float> out(r.numel());
  for (int64_t e = 0; e < r.rows(); ++e) table_row(r, e, out.data() + e * r.cols());
  return out;
}

namespace {

void rmsnorm_rows(const float* x, int64_t n, int64_t d, const TensorView& w, float eps,
                  float* out) {
  for (int64_t i = 0; i < n; ++i)
    rmsnorm({x + i * d, static_cast<size_t>(d)}, w, eps, {out + i * d, static_cast<size_t>(d)});
}

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

// y = W x for each (W, y) of one token reading the same activations `x` (decode).
void run_one_token(std::span<const TensorView* const> ws, std::span<float* const> ys,
                   const float* x, int64_t cols, InputSet& inputs, std::vector<RowTask>& tasks) {
  tasks.clear();
  for (size_t i = 0; i < ws.size(); ++i)
    tasks.push_back({ws[i], &inputs.get(ws[i]->dtype, x, 1, cols), ys[i]});
  linear_tasks(tasks);
}

// The experts of one token (decode), in two parallel jobs: the gate and up rows of every selected
// expert with the SwiGLU of each finished range, then every selected expert's down rows. Outputs
// are summed in expert index order, as the batched path does.
// (A template so that it can take Model's private Scratch.)
template <class Scratch>
void moe_one_token(const ModelConfig& c, const LayerWeights& L, Scratch& s, const float* xn,
                   float* o) {
  const int64_t d = c.hidden_size, inter = c.intermediate_size, k = c.experts_per_token;
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

}  // namespace

std::vector<float> Model::forward(std::span<const int32_t> tokens, KvCache& cache,
                                  const ForwardOptions& opt) {
  const ModelConfig& c = config_;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n <= 0) throw Error("forward: no tokens");
  if (opt.stop_after_router >= c.num_layers)
    throw Error("router layer " + std::to_string(opt.stop_after_router) +
                " out of range (model has " + std::to_string(c.num_layers) + " layers)");
  for (int32_t t : tokens)
    if (t < 0 || t >= c.vocab_size)
      throw Error("token id " + std::to_string(t) + " out of range [0, " +
                  std::to_string(c.vocab_size) + ")");
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qdim = nh * hd, kvdim = nkv * hd, ne = c.num_experts, k = c.experts_per_token;
  const int64_t inter = c.intermediate_size;
  const int64_t p0 = cache.size();
  cache.reserve(p0 + n);
  ThreadPool& pool = ThreadPool::global();

  Scratch& s = *scratch_;
  float* x = s.x.resize(n * d);
  float* xn = s.xn.resize(n * d);
  float* q = s.q.resize(n * qdim);
  float* kk = s.k.resize(n * kvdim);
  float* vv = s.v.resize(n * kvdim);
  float* att = s.att.resize(n * qdim);
  float* o = s.o.resize(n * d);
  float* router = s.router.resize(n * ne);
  float* probs = s.probs.resize(ne);
  int32_t* topk = s.topk.resize(n * k);
  float* topw = s.topw.resize(n * k);
  // Expert outputs: one token's k experts side by side (decode), or one expert's tokens (prompt).
  const int64_t ex_rows = n == 1 ? k : n;
  float* gate = s.gate.resize(ex_rows * inter);
  float* up = s.up.resize(ex_rows * inter);
  float* down = s.down.resize(ex_rows * d);
  float* gathered = s.gathered.resize(n * d);
  int32_t* ebegin = s.expert_begin.resize(ne + 1);
  int32_t* efill = s.expert_fill.resize(ne);
  int32_t* erows = s.rows.resize(n * k);
  float* erw = s.rw.resize(n * k);
  // Sized for the whole cache: a generation fills it without growing anything.
  s.rope.ensure(std::max(p0 + n, cache.capacity_));

  for (int64_t i = 0; i < n; ++i) table_row(weights_.embed, tokens[i], x + i * d);

  for (int32_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& L = weights_.layers[l];
    // Attention block.
    {
      EPWA_PHASE("norm");
      rmsnorm_rows(x, n, d, L.attn_norm, c.rms_norm_eps, xn);
    }
    s.inputs.reset();
    {
      EPWA_PHASE("qkv");
      if (n == 1) {
        const TensorView* ws[] = {&L.wq, &L.wk, &L.wv};
        float* ys[] = {q, kk, vv};
        run_one_token(ws, ys, xn, d, s.inputs, s.tasks);
      } else {
        linear(L.wq, s.inputs.get(L.wq.dtype, xn, n, d), q);
        linear(L.wk, s.inputs.get(L.wk.dtype, xn, n, d), kk);
        linear(L.wv, s.inputs.get(L.wv.dtype, xn, n, d), vv);
      }
    }
    float* kc = cache.k_[l].data();
    float* vc = cache.v_[l].data();
    {
      EPWA_PHASE("rope+cache");
      for (int64_t i = 0; i < n; ++i) {
        const int64_t pos = p0 + i;
        for (int64_t h = 0; h < nh; ++h) s.rope.apply(q + i * qdim + h * hd, pos);
        for (int64_t h = 0; h < nkv; ++h) s.rope.apply(kk + i * kvdim + h * hd, pos);
        std::copy_n(kk + i * kvdim, kvdim, kc + pos * kvdim);
        std::copy_n(vv + i * kvdim, kvdim, vc + pos * kvdim);
      }
    }
    // Blocks of ~16 queries (consecutive tokens x the query heads of one KV head) share each K/V
    // row (attention_block); every output equals attention_head on its query alone, so prompt and
    // decode agree. Split across the pool once there is enough work.
    const int64_t group = nh / nkv;
    const int64_t bt = std::max<int64_t>(1, 16 / group);  // tokens per block
    const int64_t nblocks = (n + bt - 1) / bt;
    const int64_t att_grain =
        std::max<int64_t>(1, (int64_t{1} << 15) / ((p0 + 1) * hd * group * std::min(bt, n)));
    {
      EPWA_PHASE("attention");
      pool.parallel_for(
          nblocks * nkv,
          [&](int64_t b, int64_t e) {
            thread_local std::vector<float> scores;
            thread_local std::vector<AttentionQuery> queries;
            const size_t need = static_cast<size_t>(bt * group * (p0 + n));
            if (scores.size() < need)
              scores.resize(std::max(need, static_cast<size_t>(bt * group * cache.capacity_)));
            for (int64_t it = b; it < e; ++it) {
              const int64_t blk = it / nkv, g = it % nkv;
              queries.clear();
              for (int64_t i = blk * bt; i < std::min(n, (blk + 1) * bt); ++i)
                for (int64_t h = g * group; h < (g + 1) * group; ++h)
                  queries.push_back({q + i * qdim + h * hd, att + i * qdim + h * hd, p0 + i + 1});
              attention_block(queries, hd, kc + g * hd, vc + g * hd, kvdim, scores);
            }
          },
          att_grain);
    }
    s.inputs.reset();
    {
      EPWA_PHASE("wo");
      if (n == 1) {
        const TensorView* ws[] = {&L.wo};
        float* ys[] = {o};
        run_one_token(ws, ys, att, qdim, s.inputs, s.tasks);
      } else {
        linear(L.wo, s.inputs.get(L.wo.dtype, att, n, qdim), o);
      }
    }
    {
      EPWA_PHASE("norm");
      for (int64_t i = 0; i < n * d; ++i) x[i] += o[i];

      // Sparse MoE block.
      rmsnorm_rows(x, n, d, L.ffn_norm, c.rms_norm_eps, xn);
    }
    s.inputs.reset();
    {
      EPWA_PHASE("router");
      if (n == 1) {
        const TensorView* ws[] = {&L.router};
        float* ys[] = {router};
        run_one_token(ws, ys, xn, d, s.inputs, s.tasks);
      } else {
        linear(L.router, s.inputs.get(L.router.dtype, xn, n, d), router);
      }
    }
    {
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
        for (int64_t j = 0; j < k; ++j) w[j] /= wsum;
        if (opt.observer)
          opt.observer->observe(
              {l, p0 + i, logits, {top, static_cast<size_t>(k)}, {w, static_cast<size_t>(k)}});
      }
    }
    if (l == opt.stop_after_router) return {};

    // The tokens routed to each expert, in token order (a counting sort by expert).
    EPWA_PHASE("~moe total");
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
    if (n == 1) {
      moe_one_token(c, L, s, xn, o);
    } else {
      // One matrix product per expert over the tokens routed to it.
      for (int64_t e = 0; e < ne; ++e) {
        const int64_t m = ebegin[e + 1] - ebegin[e];
        if (m == 0) continue;
        const int32_t* rows = erows + ebegin[e];
        const float* rw = erw + ebegin[e];
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
    for (int64_t i = 0; i < n * d; ++i) x[i] += o[i];
  }
  cache.size_ = p0 + n;

  EPWA_PHASE("head");
  const int64_t first = opt.all_logits ? 0 : n - 1;
  const int64_t rows_out = n - first;
  rmsnorm_rows(x + first * d, rows_out, d, weights_.final_norm, c.rms_norm_eps, xn);
  std::vector<float> logits(rows_out * c.vocab_size);
  s.inputs.reset();
  if (rows_out == 1) {
    const TensorView* ws[] = {&weights_.head};
    float* ys[] = {logits.data()};
    run_one_token(ws, ys, xn, d, s.inputs, s.tasks);
  } else {
    linear(weights_.head, s.inputs.get(weights_.head.dtype, xn, rows_out, d), logits.data());
  }
  return logits;
}

}  // namespace epwa
