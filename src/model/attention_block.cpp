// The attention block. For Mixtral it runs exactly the operations (and kernel calls) of the
// original single-function forward pass, so its outputs are bit-identical to it.
#include <algorithm>
#include <cmath>

#include "blocks.hpp"
#include "core/phase_stats.hpp"
#include "table_row.hpp"

namespace epwa::block {

namespace {

// y[i] += b for each of n rows of `b.numel()` values (the bias dequantized once into `tmp`).
void add_bias(const TensorView& b, float* y, int64_t n, ScratchArray<float>& tmp) {
  const int64_t m = b.numel();
  float* row = tmp.resize(m);
  table_row(b, 0, row);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j) y[i * m + j] += row[j];
}

void clamp_all(float* y, int64_t count, float limit) {
  for (int64_t i = 0; i < count; ++i) y[i] = std::clamp(y[i], -limit, limit);
}

}  // namespace

void attention(const Backend& be, const ModelConfig& c, const LayerWeights& L,
               std::span<const SeqRows> seqs, int64_t n, float* x, Context::Scratch& s) {
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qdim = nh * hd, kvdim = nkv * hd;
  float* xn = s.xn.data();
  float* q = s.q.data();
  float* kk = s.k.data();
  float* vv = s.v.data();
  float* att = s.att.data();
  float* o = s.o.data();
  BackendScratch& bs = *s.backend;
  {
    EPWA_PHASE("norm");
    be.rmsnorm(x, n, d, L.attn_norm, c.rms_norm_eps, xn, bs);
  }
  {
    EPWA_PHASE("qkv");
    const TensorView* ws[] = {&L.wq, &L.wk, &L.wv};
    float* ys[] = {q, kk, vv};
    be.linear(ws, xn, n, d, ys, bs);
    if (c.attention_bias) {
      add_bias(L.bq, q, n, s.bias);
      add_bias(L.bk, kk, n, s.bias);
      add_bias(L.bv, vv, n, s.bias);
    }
    if (c.qk_norm == QkNorm::Full) {  // over the whole projection, before the split into heads
      be.rmsnorm(q, n, qdim, L.q_norm, c.rms_norm_eps, q, bs);
      be.rmsnorm(kk, n, kvdim, L.k_norm, c.rms_norm_eps, kk, bs);
    }
    if (c.clip_qkv > 0) {
      clamp_all(q, n * qdim, c.clip_qkv);
      clamp_all(kk, n * kvdim, c.clip_qkv);
      clamp_all(vv, n * kvdim, c.clip_qkv);
    }
    if (c.qk_norm == QkNorm::PerHead) {  // each head over head_dim
      be.rmsnorm(q, n * nh, hd, L.q_norm, c.rms_norm_eps, q, bs);
      be.rmsnorm(kk, n * nkv, hd, L.k_norm, c.rms_norm_eps, kk, bs);
    }
  }
  {
    EPWA_PHASE("rope");
    for (const SeqRows& r : seqs) {
      be.rope(q + r.begin * qdim, r.n, nh, qdim, r.p0, bs);
      be.rope(kk + r.begin * kvdim, r.n, nkv, kvdim, r.p0, bs);
    }
  }
  {
    EPWA_PHASE("attention");
    for (const SeqRows& r : seqs)
      be.attention(q + r.begin * qdim, kk + r.begin * kvdim, vv + r.begin * kvdim, r.n, r.p0, nh,
                   nkv, hd, r.kv, att + r.begin * qdim, bs);
  }
  {
    EPWA_PHASE("wo");
    const TensorView* ws[] = {&L.wo};
    float* ys[] = {o};
    be.linear(ws, att, n, qdim, ys, bs);
  }
  EPWA_PHASE("norm");
  for (int64_t i = 0; i < n * d; ++i) x[i] += o[i];
}

}  // namespace epwa::block
