// DeepSeek-V2/V3 on the CPU: multi-head latent attention over the latent cache (the query absorbed
// into the latent space, so the cache is never expanded to per-head keys and values), and the
// grouped softmax / sigmoid router (grouped_route.hpp, shared with the CUDA kernel).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backend/grouped_route.hpp"
#include "cpu_scratch.hpp"
#include "epwa/quant.hpp"
#include "epwa/thread_pool.hpp"
#include "epwa/thread_scratch.hpp"
#include "ops/kernels.hpp"

namespace epwa::cpu {

namespace {

const std::byte* row_of(const TensorView& w, int64_t r) {
  return w.data.data() + r * dtype_bytes(w.dtype, w.cols());
}

}  // namespace

void latent_attention(const float* q, const float* kv, int64_t n, int64_t p0, const LatentShape& sh,
                      const TensorView& kv_b, const KvLayer& cache, float* att, Scratch& s) {
  check(s.latent_rope.has_value(), "latent attention: the scratch has no latent RoPE table");
  const RopeTable& rope = *s.latent_rope;
  const int64_t row = sh.latent + sh.rope, qd = sh.nope + sh.rope, kvb_head = sh.nope + sh.v;
  for (int64_t i = 0; i < n; ++i) {
    float* dst = cache.k + (p0 + i) * row;
    std::copy_n(kv + i * row, row, dst);
    rope.apply_pairs(dst + sh.latent, p0 + i);
  }
  // attention_head divides by sqrt(its head size): the query carries the rest of the scale.
  const float qscale = sh.scale * std::sqrt(static_cast<float>(row));
  const ops::Kernels& kern = ops::kernels();
  // By head: its nope rows of kv_b (any stored type) converted to f32 once per call, so that a
  // prompt's rows share them (they were converted row by row, for every token: nearly all of a
  // 512-token prompt's latent attention), its value rows multiplied as stored (a quantized dot,
  // no conversion); each row takes the same operations, whatever the batch (prompt and decode
  // logits agree to the bit).
  ThreadPool::global().parallel_for(
      sh.heads,
      [&](int64_t b, int64_t e) {
        thread_local ThreadScratch<std::vector<float>> wk_tls, qlat_tls, olat_tls, scores_tls;
        std::vector<float>& wk = *wk_tls;
        std::vector<float>& qlat = *qlat_tls;
        std::vector<float>& olat = *olat_tls;
        std::vector<float>& scores = *scores_tls;
        wk.resize(sh.nope * sh.latent);
        qlat.resize(row);
        olat.resize(row);
        if (scores.size() < static_cast<size_t>(p0 + n)) scores.resize(p0 + n);
        for (int64_t h = b; h < e; ++h) {
          dequantize_row(kv_b.dtype, row_of(kv_b, h * kvb_head), wk.data(), sh.nope * sh.latent);
          for (int64_t i = 0; i < n; ++i) {
            const float* qh = q + (i * sh.heads + h) * qd;
            // q_lat = W_uk^T q_nope: the head's nope rows of kv_b weighted by q_nope.
            kern.attn_wsum(qh, wk.data(), sh.latent, sh.nope, sh.latent, qlat.data(), false);
            std::copy_n(qh + sh.nope, sh.rope, qlat.data() + sh.latent);
            rope.apply_pairs(qlat.data() + sh.latent, p0 + i);
            for (float& x : qlat) x *= qscale;
            // Keys and values are the cache rows themselves (the value's rope tail is ignored).
            attention_head(qlat, cache.k, cache.k, p0 + i + 1, row, scores, olat);
            // o = W_uv o_lat: the head's value rows of kv_b with the latent (its first `latent`
            // values: the rope tail is not part of the value).
            matvec(kv_b.dtype, row_of(kv_b, h * kvb_head + sh.nope), sh.v, sh.latent, olat.data(),
                   att + (i * sh.heads + h) * sh.v);
          }
        }
      },
      1);
}

void route_grouped(const float* logits, int64_t n, int64_t ne, const RouteRule& r, int32_t* topk,
                   float* topw, Scratch& s) {
  float* score = s.probs.resize(2 * ne);
  std::vector<float> bias;
  if (r.bias) {
    bias.resize(ne);
    dequantize_row(r.bias->dtype, r.bias->data.data(), bias.data(), ne);
  }
  std::vector<float> gscore(r.groups);
  std::vector<int32_t> gbest(r.topk_groups);
  for (int64_t i = 0; i < n; ++i)
    route::grouped_row(logits + i * ne, ne, r, r.bias ? bias.data() : nullptr, score, score + ne,
                       gscore.data(), gbest.data(), topk + i * r.k, topw + i * r.k);
}

}  // namespace epwa::cpu
