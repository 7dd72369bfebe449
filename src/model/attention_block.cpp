// The attention block. For Mixtral it runs exactly the operations (and kernel calls) of the
// original single-function forward pass, so its outputs are bit-identical to it.
#include "blocks.hpp"
#include "core/phase_stats.hpp"

namespace epwa::block {

void attention(const Backend& be, const ModelConfig& c, const LayerWeights& L,
               std::span<const SeqRows> seqs, int64_t n, float* x, Context::Scratch& s) {
  const int64_t d = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qdim = nh * hd, kvdim = nkv * hd;
  float* xn = s.buf(be, Slot::Xn, n * d);
  float* q = s.buf(be, Slot::Q, n * qdim);
  float* kk = s.buf(be, Slot::K, n * kvdim);
  float* vv = s.buf(be, Slot::V, n * kvdim);
  float* att = s.buf(be, Slot::Att, n * qdim);
  float* o = s.buf(be, Slot::O, n * d);
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
      be.add_bias(L.bq, q, n, bs);
      be.add_bias(L.bk, kk, n, bs);
      be.add_bias(L.bv, vv, n, bs);
    }
    if (c.qk_norm == QkNorm::Full) {  // over the whole projection, before the split into heads
      be.rmsnorm(q, n, qdim, L.q_norm, c.rms_norm_eps, q, bs);
      be.rmsnorm(kk, n, kvdim, L.k_norm, c.rms_norm_eps, kk, bs);
    }
    if (c.clip_qkv > 0) {
      be.clamp(q, n * qdim, c.clip_qkv, bs);
      be.clamp(kk, n * kvdim, c.clip_qkv, bs);
      be.clamp(vv, n * kvdim, c.clip_qkv, bs);
    }
    if (c.qk_norm == QkNorm::PerHead) {  // each head over head_dim
      be.rmsnorm(q, n * nh, hd, L.q_norm, c.rms_norm_eps, q, bs);
      be.rmsnorm(kk, n * nkv, hd, L.k_norm, c.rms_norm_eps, kk, bs);
    }
  }
  {
    EPWA_PHASE("rope");
    be.rope_batch(q, nh, qdim, seqs, bs);
    be.rope_batch(kk, nkv, kvdim, seqs, bs);
  }
  {
    EPWA_PHASE("attention");
    if (c.attention_sinks || (!seqs.empty() && seqs.front().kv.window > 0)) {
      for (const SeqRows& r : seqs)  // one layer: every sequence's cache has the layer's window
        be.attention_sinks(q + r.begin * qdim, kk + r.begin * kvdim, vv + r.begin * kvdim, r.n,
                           r.p0, nh, nkv, hd, r.kv, L.sinks, att + r.begin * qdim, bs);
    } else {
      be.attention_batch(q, kk, vv, nh, nkv, hd, seqs, att, bs);
    }
  }
  {
    EPWA_PHASE("wo");
    const TensorView* ws[] = {&L.wo};
    float* ys[] = {o};
    be.linear(ws, att, n, qdim, ys, bs);
    if (c.attention_out_bias) be.add_bias(L.bo, o, n, bs);
  }
  EPWA_PHASE("norm");
  be.add(x, o, n * d, bs);
}

}  // namespace epwa::block
