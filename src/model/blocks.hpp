// The blocks the forward pass is built from, each over the n rows of a batch (the tokens of one or
// more sequences), running its operations on a backend (include/epwa/backend.hpp). Each is testable
// on its own.
#pragma once
#include <algorithm>
#include <cstdint>

#include "epwa/backend.hpp"
#include "epwa/model.hpp"
#include "scratch.hpp"

namespace epwa::block {

// x += Wo Attention(q, k, v) of RMSNorm(x) for the n rows of a batch: projections with optional
// biases, q/k norms (whole projection or per head), clip_qkv, rotate-half RoPE, and per sequence
// GQA over its cache (k, v appended at its positions).
void attention(const Backend& be, const ModelConfig& c, const LayerWeights& L,
               std::span<const SeqRows> seqs, int64_t n, float* x, Context::Scratch& s);

// The same for multi-head latent attention (ModelConfig::mla(): DeepSeek-V2/V3): the latent and
// rope part appended to the cache, attention in the latent space (Backend::latent_attention).
void latent_attention(const Backend& be, const ModelConfig& c, const LayerWeights& L,
                      std::span<const SeqRows> seqs, int64_t n, float* x, Context::Scratch& s);

// The router of an MoE layer over n normed rows `xn`: slot Router gets the logits, TopK the k
// experts of each row (best first, ties to the lower index), TopW their weights (softmax over all
// experts, renormalised over the k when norm_topk_prob).
void route(const Backend& be, const ModelConfig& c, const LayerWeights& L, const float* xn,
           int64_t n, Context::Scratch& s);

// The last route()'s logits, experts and weights into the host copies s.router, s.topk, s.topw,
// and `also` (if given) in the same wait.
void download_routing(const Backend& be, const ModelConfig& c, int64_t n, Context::Scratch& s,
                      const Download* also = nullptr);

// o = sum over each row's k experts of w * expert(xn), plus the shared expert when the layer has
// one (uses the routing in s).
void moe(const Backend& be, const ModelConfig& c, const LayerWeights& L, const float* xn, int64_t n,
         float* o, Context::Scratch& s);

}  // namespace epwa::block
