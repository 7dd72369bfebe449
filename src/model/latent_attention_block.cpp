// Multi-head latent attention (DeepSeek-V2/V3, transformers' DeepseekV2Attention /
// DeepseekV3Attention): q from one projection or through the q_lora_rank bottleneck and its norm;
// one kv_a projection gives the latent (normed by kv_a_layernorm) and the rope part of the key,
// shared by all heads. The cache keeps those kv_lora_rank + qk_rope_head_dim values per token;
// the backend's latent_attention expands nothing (docs/ARCHITECTURE.md).
#include "blocks.hpp"
#include "core/phase_stats.hpp"

namespace epwa::block {

// transformers builds q_a_layernorm and kv_a_layernorm without the config's rms_norm_eps: the
// RMSNorm default, 1e-6 (the released models' rms_norm_eps too).
constexpr float kLatentNormEps = 1e-6f;

void latent_attention(const Backend& be, const ModelConfig& c, const LayerWeights& L,
                      std::span<const SeqRows> seqs, int64_t n, float* x, Context::Scratch& s) {
  const int64_t d = c.hidden_size, nh = c.num_heads, qd = c.head_dim, qa = c.q_lora_rank;
  const int64_t row = c.kv_cache_k_dim(), vdim = nh * c.v_head_dim;
  const LatentShape shape{nh,           c.qk_nope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank,
                          c.v_head_dim, c.attention_scale()};
  float* xn = s.buf(be, Slot::Xn, n * d);
  float* q = s.buf(be, Slot::Q, n * nh * qd);
  float* kv = s.buf(be, Slot::K, n * row);
  float* qlow = s.buf(be, Slot::V, n * std::max<int64_t>(qa, 1));
  float* att = s.buf(be, Slot::Att, n * vdim);
  float* o = s.buf(be, Slot::O, n * d);
  BackendScratch& bs = *s.backend;
  {
    EPWA_PHASE("norm");
    be.rmsnorm(x, n, d, L.attn_norm, c.rms_norm_eps, xn, bs);
  }
  {
    EPWA_PHASE("qkv");
    if (qa > 0) {
      const TensorView* ws[] = {&L.wq_a, &L.wkv_a};
      float* ys[] = {qlow, kv};
      be.linear(ws, xn, n, d, ys, bs);
      be.rmsnorm(qlow, n, qa, L.q_a_norm, kLatentNormEps, qlow, bs);
      const TensorView* wb[] = {&L.wq_b};
      float* yb[] = {q};
      be.linear(wb, qlow, n, qa, yb, bs);
    } else {
      const TensorView* ws[] = {&L.wq, &L.wkv_a};
      float* ys[] = {q, kv};
      be.linear(ws, xn, n, d, ys, bs);
    }
    // The latent part of each row, in place (its rope part follows it in the row).
    be.rmsnorm_strided(kv, n, c.kv_lora_rank, row, L.kv_a_norm, kLatentNormEps, bs);
  }
  {
    EPWA_PHASE("attention");
    be.latent_attention_batch(q, kv, shape, L.wkv_b, seqs, att, bs);
  }
  {
    EPWA_PHASE("wo");
    const TensorView* ws[] = {&L.wo};
    float* ys[] = {o};
    be.linear(ws, att, n, vdim, ys, bs);
  }
  EPWA_PHASE("norm");
  be.add(x, o, n * d, bs);
}

}  // namespace epwa::block
