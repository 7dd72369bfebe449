// The attention block. For Mixtral it runs exactly the operations (and kernel calls) of the
// original single-function forward pass, so its outputs are bit-identical to it.
#include <algorithm>
#include <cmath>

#include "blocks.hpp"
#include "epwa/thread_pool.hpp"
#include "phase_stats.hpp"

namespace epwa::block {

namespace {

// y[i] += b for each of n rows of `b.numel()` values (the bias dequantized once into `tmp`).
void add_bias(const TensorView& b, float* y, int64_t n, Buffer<float>& tmp) {
  const int64_t m = b.numel();
  float* row = tmp.resize(m);
  table_row(b, 0, row);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) y[i * m + j] += row[j];
}

void clamp_rows(float* y, int64_t count, float limit) {
  for (int64_t i = 0; i < count; ++i) y[i] = std::clamp(y[i], -limit, limit);
}

// RMSNorm over consecutive groups of `width` values in place (a whole projection or one head).
void norm_groups(float* y, int64_t groups, int64_t width, const TensorView& w, float eps) {
  for (int64_t g = 0; g < groups; ++g) {
    std::span<float> v(y + g * width, static_cast<size_t>(width));
    rmsnorm(v, w, eps, v);
  }
}

}  // namespace

void attention(const ModelConfig& c, const LayerWeights& L, KvLayer kv, int64_t p0, int64_t n,
               float* x, Context::Scratch& s) {
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qdim = nh * hd, kvdim = nkv * hd;
  float* xn = s.xn.data();
  float* q = s.q.data();
  float* kk = s.k.data();
  float* vv = s.v.data();
  float* att = s.att.data();
  float* o = s.o.data();
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
    if (c.attention_bias) {
      add_bias(L.bq, q, n, s.bias);
      add_bias(L.bk, kk, n, s.bias);
      add_bias(L.bv, vv, n, s.bias);
    }
    if (c.qk_norm == QkNorm::Full) {
      norm_groups(q, n, qdim, L.q_norm, c.rms_norm_eps);
      norm_groups(kk, n, kvdim, L.k_norm, c.rms_norm_eps);
    }
    if (c.clip_qkv > 0) {
      clamp_rows(q, n * qdim, c.clip_qkv);
      clamp_rows(kk, n * kvdim, c.clip_qkv);
      clamp_rows(vv, n * kvdim, c.clip_qkv);
    }
    if (c.qk_norm == QkNorm::PerHead) {
      norm_groups(q, n * nh, hd, L.q_norm, c.rms_norm_eps);
      norm_groups(kk, n * nkv, hd, L.k_norm, c.rms_norm_eps);
    }
  }
  {
    EPWA_PHASE("rope+cache");
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = p0 + i;
      for (int64_t h = 0; h < nh; ++h) s.rope.apply(q + i * qdim + h * hd, pos);
      for (int64_t h = 0; h < nkv; ++h) s.rope.apply(kk + i * kvdim + h * hd, pos);
      std::copy_n(kk + i * kvdim, kvdim, kv.k + pos * kvdim);
      std::copy_n(vv + i * kvdim, kvdim, kv.v + pos * kvdim);
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
    ThreadPool::global().parallel_for(
        nblocks * nkv,
        [&](int64_t b, int64_t e) {
          thread_local std::vector<float> scores;
          thread_local std::vector<AttentionQuery> queries;
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
        att_grain);
  }
  s.inputs.reset();
  {
    EPWA_PHASE("wo");
    linear_rows_of(L.wo, att, n, qdim, o, s);
  }
  EPWA_PHASE("norm");
  for (int64_t i = 0; i < n * d; ++i) x[i] += o[i];
}

}  // namespace epwa::block
