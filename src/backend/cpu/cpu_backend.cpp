// The CPU backend: today's kernels (src/ops, src/quant) behind the backend seam. Its operations are
// exactly those of the former single-function forward pass, so outputs are bit-identical to it.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu_scratch.hpp"
#include "epwa/config.hpp"
#include "epwa/error.hpp"
#include "epwa/quant.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/thread_scratch.hpp"

namespace epwa::cpu {

void run_one_token(std::span<const TensorView* const> ws, std::span<float* const> ys,
                   const float* x, int64_t cols, Scratch& s) {
  s.tasks.clear();
  for (size_t i = 0; i < ws.size(); ++i)
    s.tasks.push_back({ws[i], &s.inputs.get(ws[i]->dtype, x, 1, cols), ys[i]});
  linear_tasks(s.tasks);
}

void expert_ffn(const ExpertMatrices& X, int64_t experts, int64_t width, const Routing& r,
                const float* x, int64_t n, int64_t d, float* out, Scratch& s);  // cpu_experts.cpp

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

class CpuBackend final : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }

  bool supports(BackendOp, DType) const override { return true; }

  std::unique_ptr<BackendScratch> make_scratch(const ModelConfig& c) const override {
    // MLA rotates only its rope part (latent_rope); its head_dim (nope + rope) may be odd.
    auto s =
        std::make_unique<Scratch>(c.mla() ? c.qk_rope_head_dim : c.head_dim, c.rope_theta, c.yarn);
    if (c.mla()) s->latent_rope.emplace(c.qk_rope_head_dim, c.rope_theta, c.yarn);
    return s;
  }

  void reserve(BackendScratch& s, int64_t positions) const override {
    cast(s).rope.ensure(positions);
    if (cast(s).latent_rope) cast(s).latent_rope->ensure(positions);
  }

  bool host_memory() const override { return true; }
  void* buffer(BackendScratch& s, int slot, size_t bytes) const override {
    auto& slots = cast(s).slots;
    if (slot < 0 || slot >= static_cast<int>(slots.size()))
      throw Error("backend: buffer slot " + std::to_string(slot) + " out of range");
    return slots[slot].resize(static_cast<int64_t>(bytes));
  }
  void upload(void* dst, const void* src, size_t bytes, BackendScratch&) const override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes, BackendScratch&) const override {
    if (bytes > 0) std::memcpy(dst, src, bytes);
  }

  void embed(const TensorView& table, std::span<const int32_t> tokens, float* x,
             BackendScratch&) const override {
    const int64_t d = table.cols(), row_bytes = dtype_bytes(table.dtype, d);
    for (size_t i = 0; i < tokens.size(); ++i)
      dequantize_row(table.dtype, table.data.data() + tokens[i] * row_bytes, x + i * d, d);
  }

  void add(float* x, const float* y, int64_t count, BackendScratch&) const override {
    for (int64_t i = 0; i < count; ++i) x[i] += y[i];
  }

  // The bias dequantized once, then added to each row.
  void add_bias(const TensorView& b, float* y, int64_t n, BackendScratch& bs) const override {
    const int64_t m = b.numel();
    float* row = cast(bs).bias.resize(m);
    dequantize_row(b.dtype, b.data.data(), row, m);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < m; ++j) y[i * m + j] += row[j];
  }

  void clamp(float* y, int64_t count, float limit, BackendScratch&) const override {
    for (int64_t i = 0; i < count; ++i) y[i] = std::clamp(y[i], -limit, limit);
  }

  void route(const float* logits, int64_t n, int64_t ne, int64_t k, bool renormalize, int32_t* topk,
             float* topw, BackendScratch& bs) const override {
    float* probs = cast(bs).probs.resize(ne);
    for (int64_t i = 0; i < n; ++i) {
      std::span<const float> row(logits + i * ne, ne);
      int32_t* top = topk + i * k;
      float* w = topw + i * k;
      select_topk(row, static_cast<int32_t>(k), top);
      const float mx = row[top[0]];
      float z = 0;
      for (int64_t e = 0; e < ne; ++e) z += (probs[e] = std::exp(row[e] - mx));
      float wsum = 0;
      for (int64_t j = 0; j < k; ++j) wsum += (w[j] = probs[top[j]] / z);
      if (renormalize)
        for (int64_t j = 0; j < k; ++j) w[j] /= wsum;
    }
  }

  void route_grouped(const float* logits, int64_t n, int64_t ne, const RouteRule& r, int32_t* topk,
                     float* topw, BackendScratch& s) const override {
    cpu::route_grouped(logits, n, ne, r, topk, topw, cast(s));
  }

  void latent_attention(const float* q, const float* kv, int64_t n, int64_t p0,
                        const LatentShape& shape, const TensorView& kv_b, const KvLayer& cache,
                        float* att, BackendScratch& s) const override {
    cpu::latent_attention(q, kv, n, p0, shape, kv_b, cache, att, cast(s));
  }

  void add_gated(const TensorView& gate, const float* x, const float* y, int64_t n, int64_t d,
                 float* o, BackendScratch&) const override {
    for (int64_t i = 0; i < n; ++i) {
      const float z = dot(gate.dtype, gate.data.data(), x + i * d, d);
      const float g = 1 / (1 + std::exp(-z));
      for (int64_t t = 0; t < d; ++t) o[i * d + t] += g * y[i * d + t];
    }
  }

  // A single token's matrices run as one job; a prompt's as one matrix product each.
  void linear(std::span<const TensorView* const> ws, const float* x, int64_t n, int64_t cols,
              std::span<float* const> ys, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    s.inputs.reset();
    if (n == 1) return run_one_token(ws, ys, x, cols, s);
    for (size_t i = 0; i < ws.size(); ++i)
      epwa::linear(*ws[i], s.inputs.get(ws[i]->dtype, x, n, cols), ys[i]);
  }

  void expert_ffn(const ExpertMatrices& X, int64_t width, const Routing& r, const float* x,
                  int64_t n, int64_t d, float* out, BackendScratch& s) const override {
    cpu::expert_ffn(X, static_cast<int64_t>(X.gate.size()), width, r, x, n, d, out, cast(s));
  }

  void ffn(const TensorView& gate_w, const TensorView& down_w, const TensorView& up_w,
           int64_t width, const float* x, int64_t n, int64_t d, float* out,
           BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    float* gate = s.gate.resize(n * width);
    float* up = s.up.resize(n * width);
    const TensorView* gu[] = {&gate_w, &up_w};
    float* ys[] = {gate, up};
    linear(gu, x, n, d, ys, s);
    swiglu({gate, static_cast<size_t>(n * width)}, {up, static_cast<size_t>(n * width)});
    const TensorView* down[] = {&down_w};
    float* o[] = {out};
    linear(down, gate, n, width, o, s);
  }

  void rmsnorm(const float* x, int64_t n, int64_t d, const TensorView& w, float eps, float* out,
               BackendScratch&) const override {
    for (int64_t i = 0; i < n; ++i)
      epwa::rmsnorm({x + i * d, static_cast<size_t>(d)}, w, eps,
                    {out + i * d, static_cast<size_t>(d)});
  }

  void rope(float* x, int64_t n, int64_t heads, int64_t stride, int64_t p0,
            BackendScratch& bs) const override {
    const Scratch& s = cast(bs);
    const int64_t hd = s.rope.head_dim();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < heads; ++h) s.rope.apply(x + i * stride + h * hd, p0 + i);
  }

  // Blocks of ~16 queries (consecutive tokens x the query heads of one KV head) share each K/V row
  // (attention_block); every output equals attention_head on its query alone, so prompt and decode
  // agree. Split across the pool once there is enough work.
  void attention(const float* q, const float* k, const float* v, int64_t n, int64_t p0, int64_t nh,
                 int64_t nkv, int64_t hd, const KvLayer& kv, float* att,
                 BackendScratch&) const override {
    const int64_t qdim = nh * hd, kvdim = nkv * hd;
    std::copy_n(k, n * kvdim, kv.k + p0 * kvdim);
    std::copy_n(v, n * kvdim, kv.v + p0 * kvdim);
    const int64_t group = nh / nkv;
    const int64_t bt = std::max<int64_t>(1, 16 / group);  // tokens per block
    const int64_t nblocks = (n + bt - 1) / bt;
    const int64_t grain =
        std::max<int64_t>(1, (int64_t{1} << 15) / ((p0 + 1) * hd * group * std::min(bt, n)));
    ThreadPool::global().parallel_for(
        nblocks * nkv,
        [&](int64_t b, int64_t e) {
          thread_local ThreadScratch<std::vector<float>> scores_tls;
          std::vector<float>& scores = *scores_tls;
          thread_local ThreadScratch<std::vector<AttentionQuery>> queries_tls;
          std::vector<AttentionQuery>& queries = *queries_tls;
          const size_t need = static_cast<size_t>(bt * group * (p0 + n));
          if (scores.size() < need)
            scores.resize(std::max(need, static_cast<size_t>(bt * group * kv.capacity)));
          for (int64_t it = b; it < e; ++it) {
            const int64_t blk = it / nkv, g = it % nkv;
            queries.clear();
            for (int64_t i = blk * bt; i < std::min(n, (blk + 1) * bt); ++i)
              for (int64_t h = g * group; h < (g + 1) * group; ++h)
                queries.push_back({q + i * qdim + h * hd, att + i * qdim + h * hd, p0 + i + 1});
            attention_block(queries, hd, kv.k + g * hd, kv.v + g * hd, kvdim, scores);
          }
        },
        grain);
  }

  // Per KV head, the keys a batch reads (a sliding layer: the cached rows still in the window,
  // then the batch's own) in position order in one buffer; each query head over its positions
  // with its sink. The batch's rows go to the cache after, so that a ring keeps what the batch
  // still reads until it has read it.
  void attention_sinks(const float* q, const float* k, const float* v, int64_t n, int64_t p0,
                       int64_t nh, int64_t nkv, int64_t hd, const KvLayer& kv,
                       const TensorView& sinks, float* att, BackendScratch& bs) const override {
    const int64_t qdim = nh * hd, kvdim = nkv * hd, group = nh / nkv, w = kv.window;
    check(sinks.numel() == nh, "attention: " + std::to_string(sinks.numel()) + " sink logits for " +
                                   std::to_string(nh) + " heads");
    float* sink = cast(bs).sinks.resize(nh);
    dequantize_row(sinks.dtype, sinks.data.data(), sink, nh);
    const int64_t lo = w > 0 ? std::max<int64_t>(0, p0 - w + 1) : 0;  // first position read
    const int64_t span = p0 + n - lo;
    const float *keys = kv.k, *values = kv.v;  // rows lo ... in position order
    thread_local ThreadScratch<std::vector<float>> kbuf_tls, vbuf_tls;
    std::vector<float>& kbuf = *kbuf_tls;
    std::vector<float>& vbuf = *vbuf_tls;
    if (w > 0) {
      kbuf.resize(static_cast<size_t>(span * kvdim));
      vbuf.resize(static_cast<size_t>(span * kvdim));
      for (int64_t p = lo; p < p0; ++p) {
        std::copy_n(kv.k + (p % w) * kvdim, kvdim, kbuf.data() + (p - lo) * kvdim);
        std::copy_n(kv.v + (p % w) * kvdim, kvdim, vbuf.data() + (p - lo) * kvdim);
      }
      std::copy_n(k, n * kvdim, kbuf.data() + (p0 - lo) * kvdim);
      std::copy_n(v, n * kvdim, vbuf.data() + (p0 - lo) * kvdim);
      keys = kbuf.data(), values = vbuf.data();
    } else {
      std::copy_n(k, n * kvdim, kv.k + p0 * kvdim);
      std::copy_n(v, n * kvdim, kv.v + p0 * kvdim);
    }
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 15) / ((span + 1) * hd));
    ThreadPool::global().parallel_for(
        n * nh,
        [&](int64_t b, int64_t e) {
          thread_local ThreadScratch<std::vector<float>> scores_tls;
          std::vector<float>& scores = *scores_tls;
          if (scores.size() < static_cast<size_t>(span)) scores.resize(static_cast<size_t>(span));
          for (int64_t it = b; it < e; ++it) {
            const int64_t i = it / nh, h = it % nh, g = h / group, p = p0 + i;
            const int64_t first = w > 0 ? std::max(lo, p - w + 1) : 0;
            attention_head_sink({q + i * qdim + h * hd, static_cast<size_t>(hd)},
                                keys + (first - lo) * kvdim + g * hd,
                                values + (first - lo) * kvdim + g * hd, p - first + 1, kvdim,
                                sink[h], scores,
                                {att + i * qdim + h * hd, static_cast<size_t>(hd)});
          }
        },
        grain);
    if (w > 0)
      for (int64_t p = std::max(p0, p0 + n - w); p < p0 + n; ++p) {
        std::copy_n(k + (p - p0) * kvdim, kvdim, kv.k + (p % w) * kvdim);
        std::copy_n(v + (p - p0) * kvdim, kvdim, kv.v + (p % w) * kvdim);
      }
  }

 private:
  static Scratch& cast(BackendScratch& s) { return static_cast<Scratch&>(s); }
  static const Scratch& cast(const BackendScratch& s) { return static_cast<const Scratch&>(s); }
};

}  // namespace
}  // namespace epwa::cpu

namespace epwa {
const Backend& cpu_backend() {
  static const cpu::CpuBackend backend;
  return backend;
}
}  // namespace epwa
