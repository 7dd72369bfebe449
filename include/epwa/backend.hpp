// The backend seam: the operations the model's blocks (src/model/*_block.cpp) ask of a device.
// The CPU kernels are the first backend (src/backend/cpu/); another device is a new folder that
// implements this interface, tested op by op against the CPU backend.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "epwa/error.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

struct ModelConfig;

enum class BackendOp : uint8_t {
  Linear,     // y = x W^T over rows of activations
  ExpertFfn,  // the routed experts of an MoE layer, grouped by expert
  Ffn,        // one SwiGLU FFN (a dense layer, a shared expert)
  RmsNorm,
  Rope,       // rotate-half RoPE
  Attention,  // causal GQA attention over a layer's KV cache
  // GPT-OSS's parts: attention with sink logits and sliding windows (attention_sinks), YaRN
  // RoPE, routed experts with biases and the clamped SwiGLU.
  SinkAttention,
  YarnRope,
  BiasedExperts,
  LatentAttention,  // multi-head latent attention over a latent cache (DeepSeek-V2/V3)
  GroupedRoute,     // DeepSeek's routers: groups, sigmoid scores, correction bias, scale
};

// A backend's per-context state (packed activations, job lists, RoPE tables, buffers): one per
// Context, so that contexts never share mutable state.
class BackendScratch {
 public:
  virtual ~BackendScratch() = default;
};

// The K/V rows of one layer's cache: row p of k and v holds position p (kv_heads x head_dim).
// A backend that keeps the caches itself (keeps_kv_cache()) gets null k and v and finds its copy
// by `sequence` and `layer`.
struct KvLayer {
  float* k;
  float* v;
  int64_t capacity;  // positions
  int32_t sequence = 0, layer = 0;
  // > 0: a sliding-window layer; its cache is a ring of `window` rows (position p in row
  // p % window) and a query at position p sees positions p - window + 1 ... p.
  int64_t window = 0;
};

// One sequence's rows of a batch: rows [begin, begin + n) of the batch's activations, at positions
// p0... of that sequence's cache of the layer.
struct SeqRows {
  int64_t begin, n, p0;
  KvLayer kv;
};

// The routing of n rows: k experts per row, best first, and the weights the model applies (both
// in activation memory, as route() writes them).
struct Routing {
  const int32_t* topk;
  const float* weights;
  int64_t k;
};

// Multi-head latent attention's sizes: `heads` query heads of nope + rope values, a latent of
// `latent` values, value heads of `v`; scores scaled by `scale`.
struct LatentShape {
  int64_t heads, nope, rope, latent, v;
  float scale;
};

// A DeepSeek router's rule (ModelConfig's router fields): scores softmax(l) or sigmoid(l); the
// choice ranks scores + bias (bias may be null) among the experts of the topk_groups best of
// `groups` equal groups (a group's score: its best choice value, or the sum of its best two);
// weights are the scores of the chosen, renormalised over the k (sum + 1e-20) when `renormalize`,
// times `scale`.
struct RouteRule {
  int64_t k;
  bool renormalize, sigmoid;
  int64_t groups, topk_groups;
  bool group_top2;
  float scale;
  const TensorView* bias;  // E values, f32; nullptr: none
};

// The routed experts of a layer: expert e is down[e](silu(gate[e] x) * up[e] x), or with biases
// (f32, when given) and swiglu_limit > 0 GPT-OSS's
// down[e]((clamp(up[e] x + bu, +-limit) + 1) * g * sigmoid(1.702 g)) + bd, g = min(gate[e] x + bg,
// limit).
struct ExpertMatrices {
  std::span<const TensorView> gate, down, up;
  std::span<const TensorView> gate_bias = {}, down_bias = {}, up_bias = {};
  float swiglu_limit = 0;
};

// One copy of Backend::download_all: `bytes` from activation memory `src` to host memory `dst`.
struct Download {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
};

// Weights are passed as views of the model's tensors; a backend may keep its own copy of each
// (keyed by the view's data), so the views given to one backend must stay alive and unchanged for
// its life: one backend per model.
//
// Activations live in the backend's memory (host memory on the CPU, device memory on a GPU): every
// float* / int32_t* an op takes or fills, except the tables, is memory from buffer(). The caller
// never reads it directly; upload and download cross over. Ops run in the order they are called
// and may return before they finish; download returns once its data is there.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // The device in words, for the load report ("cpu", "cuda:0 (NVIDIA H200, 140 GiB, sm_90)").
  virtual std::string device() const { return std::string(name()); }
  // Whether `op` runs weights of `type` (Linear, ExpertFfn, Ffn, RmsNorm) or runs at all (Rope,
  // Attention: any type).
  virtual bool supports(BackendOp op, DType type) const = 0;
  virtual std::unique_ptr<BackendScratch> make_scratch(const ModelConfig& c) const = 0;
  // Prepares `s` for positions [0, positions) (tables sized once, not per token).
  virtual void reserve(BackendScratch& s, int64_t positions) const = 0;
  // Takes the model's weights to the device ahead of the first forward pass (the CPU reads them
  // where they are). The views must outlive the backend.
  virtual void prepare(std::span<const TensorView* const> weights) const {}
  // Whether the backend keeps the KV caches in its own memory (in its scratch, by sequence and
  // layer): the Context then holds no host rows, and copying a Context copies the caches through
  // copy_scratch.
  virtual bool keeps_kv_cache() const { return false; }
  // A fresh scratch for a copy of the context that owns `from` (its caches copied, if it keeps
  // them).
  virtual std::unique_ptr<BackendScratch> copy_scratch(const BackendScratch& from,
                                                       const ModelConfig& c) const {
    return make_scratch(c);
  }

  // Whether activation memory is host memory (the CPU): a caller may then pass host memory to
  // the ops, and skip a download.
  virtual bool host_memory() const { return false; }
  // At least `bytes` of activation memory in slot `slot` of `s` (slots are the caller's numbers,
  // 0..63). The slot keeps its memory between calls and grows when asked for more, which leaves
  // earlier pointers into it dangling.
  virtual void* buffer(BackendScratch& s, int slot, size_t bytes) const = 0;
  // Copies `bytes` from host memory into activation memory, or back (download returns when the
  // host copy is complete, after every op called before it).
  virtual void upload(void* dst, const void* src, size_t bytes, BackendScratch& s) const = 0;
  virtual void download(void* dst, const void* src, size_t bytes, BackendScratch& s) const = 0;
  // Several downloads and one wait: a device backend queues the copies, then waits once (a
  // generated token's watched routing and its logits).
  virtual void download_all(std::span<const Download> parts, BackendScratch& s) const {
    for (const Download& p : parts) download(p.dst, p.src, p.bytes, s);
  }

  // x[i] = row tokens[i] of `table` for the n tokens (ids in range, checked by the caller).
  virtual void embed(const TensorView& table, std::span<const int32_t> tokens, float* x,
                     BackendScratch& s) const = 0;
  // x += y over `count` values.
  virtual void add(float* x, const float* y, int64_t count, BackendScratch& s) const = 0;
  // y[i] += b for n rows of b.numel() values.
  virtual void add_bias(const TensorView& b, float* y, int64_t n, BackendScratch& s) const = 0;
  // y = clamp(y, -limit, limit) over `count` values.
  virtual void clamp(float* y, int64_t count, float limit, BackendScratch& s) const = 0;
  // The routing of n rows of `experts` router logits: topk[i] the k best experts of row i (best
  // first, ties to the lower index), topw their softmax weights over all experts, renormalised
  // over the k when `renormalize`.
  virtual void route(const float* logits, int64_t n, int64_t experts, int64_t k, bool renormalize,
                     int32_t* topk, float* topw, BackendScratch& s) const = 0;
  // The routing of n rows under a DeepSeek rule (RouteRule): topk best first by the choice value
  // (ties to the lower index), topw their weights. Backends without it do not run such models.
  virtual void route_grouped(const float* logits, int64_t n, int64_t experts, const RouteRule& r,
                             int32_t* topk, float* topw, BackendScratch& s) const;
  // o[i] += sigmoid(gate . x[i]) * y[i] for n rows of d values (gate: one stored row of d).
  virtual void add_gated(const TensorView& gate, const float* x, const float* y, int64_t n,
                         int64_t d, float* o, BackendScratch& s) const = 0;

  // ys[i] = x W_i^T for n rows of `cols` activations, for matrices that read the same rows (Q, K
  // and V of one token run as one job).
  virtual void linear(std::span<const TensorView* const> ws, const float* x, int64_t n,
                      int64_t cols, std::span<float* const> ys, BackendScratch& s) const = 0;
  // out[i] = sum over row i's k experts e of weight * down_e(silu(gate_e x_i) * up_e x_i), the
  // terms added in expert-index order; out is overwritten.
  virtual void expert_ffn(const ExpertMatrices& experts, int64_t width, const Routing& r,
                          const float* x, int64_t n, int64_t d, float* out,
                          BackendScratch& s) const = 0;
  // out = down(silu(gate x) * up x) for n rows of d activations; the FFN is `width` wide.
  virtual void ffn(const TensorView& gate, const TensorView& down, const TensorView& up,
                   int64_t width, const float* x, int64_t n, int64_t d, float* out,
                   BackendScratch& s) const = 0;
  // out = x / sqrt(mean(x^2) + eps) * w for n rows of d values (out may alias x).
  virtual void rmsnorm(const float* x, int64_t n, int64_t d, const TensorView& w, float eps,
                       float* out, BackendScratch& s) const = 0;
  // rmsnorm() in place of the first d values of n rows `stride` apart (the latents of DeepSeek's
  // kv rows). A backend may do them at once; the results are rmsnorm()'s.
  virtual void rmsnorm_strided(float* x, int64_t n, int64_t d, int64_t stride, const TensorView& w,
                               float eps, BackendScratch& s) const {
    for (int64_t i = 0; i < n; ++i) rmsnorm(x + i * stride, 1, d, w, eps, x + i * stride, s);
  }
  // Rotates, in place, `heads` heads of head_dim values in each of n rows (rows `stride` apart) at
  // positions p0, p0 + 1, ...
  virtual void rope(float* x, int64_t n, int64_t heads, int64_t stride, int64_t p0,
                    BackendScratch& s) const = 0;
  // Appends the n rows of k and v at positions p0... of the cache, then att[i] = softmax(q_i k^T /
  // sqrt(head_dim)) v per query head over cache positions [0, p0 + i] (query head h reads KV head
  // h / (heads / kv_heads)).
  virtual void attention(const float* q, const float* k, const float* v, int64_t n, int64_t p0,
                         int64_t heads, int64_t kv_heads, int64_t head_dim, const KvLayer& kv,
                         float* att, BackendScratch& s) const = 0;
  // rope() of every sequence's rows of a batch (x: the batch's rows, `stride` apart), each at its
  // own positions. A backend may do them at once; the results are rope()'s.
  virtual void rope_batch(float* x, int64_t heads, int64_t stride, std::span<const SeqRows> seqs,
                          BackendScratch& s) const {
    for (const SeqRows& r : seqs) rope(x + r.begin * stride, r.n, heads, stride, r.p0, s);
  }
  // attention() of every sequence's rows of a batch over its own cache (q, k, v, att: the batch's
  // rows). A backend may do them at once; the results are attention()'s.
  virtual void attention_batch(const float* q, const float* k, const float* v, int64_t heads,
                               int64_t kv_heads, int64_t head_dim, std::span<const SeqRows> seqs,
                               float* att, BackendScratch& s) const {
    const int64_t qdim = heads * head_dim, kvdim = kv_heads * head_dim;
    for (const SeqRows& r : seqs)
      attention(q + r.begin * qdim, k + r.begin * kvdim, v + r.begin * kvdim, r.n, r.p0, heads,
                kv_heads, head_dim, r.kv, att + r.begin * qdim, s);
  }
  // attention() with each query head's learned sink logit (sinks: one per head) joining its
  // softmax's denominator (GPT-OSS), over the window of a sliding layer (kv.window > 0). Only for
  // a backend that supports(SinkAttention).
  virtual void attention_sinks(const float* q, const float* k, const float* v, int64_t n,
                               int64_t p0, int64_t heads, int64_t kv_heads, int64_t head_dim,
                               const KvLayer& kv, const TensorView& sinks, float* att,
                               BackendScratch& s) const {
    throw Error("the " + std::string(name()) + " backend has no attention with sinks");
  }
  // Multi-head latent attention of n rows at positions p0...: q holds heads x (nope + rope) per
  // row, kv the row's normed latent then its (unroped) rope part. Appends each kv row, its rope
  // part rotated (interleaved pairs, YaRN per the scratch's model), at its position of kv.k (rows
  // of latent + rope values; kv.v unused), then per head: q_lat = W_uk^T q_nope (W_uk the head's
  // nope rows of kv_b), scores (q_lat . c_t + rope(q_pe) . k_pe_t) * scale over positions
  // [0, p0 + i], o = W_uv (sum_t p_t c_t) (W_uv its v rows) into att (heads x v per row).
  virtual void latent_attention(const float* q, const float* kv, int64_t n, int64_t p0,
                                const LatentShape& shape, const TensorView& kv_b,
                                const KvLayer& cache, float* att, BackendScratch& s) const;
  // latent_attention() of every sequence's rows of a batch over its own cache (q, kv, att: the
  // batch's rows). A backend may do them at once; the results are latent_attention()'s.
  virtual void latent_attention_batch(const float* q, const float* kv, const LatentShape& shape,
                                      const TensorView& kv_b, std::span<const SeqRows> seqs,
                                      float* att, BackendScratch& s) const {
    const int64_t qrow = shape.heads * (shape.nope + shape.rope), row = shape.latent + shape.rope;
    for (const SeqRows& r : seqs)
      latent_attention(q + r.begin * qrow, kv + r.begin * row, r.n, r.p0, shape, kv_b, r.kv,
                       att + r.begin * shape.heads * shape.v, s);
  }
};

// Backends that do not implement DeepSeek's ops say so (supports() is false for them; Model
// refuses such a backend for a model that needs them, so these are never reached from a load).
inline void Backend::route_grouped(const float*, int64_t, int64_t, const RouteRule&, int32_t*,
                                   float*, BackendScratch&) const {
  throw Error("backend " + std::string(name()) + " does not run DeepSeek's grouped routing");
}
inline void Backend::latent_attention(const float*, const float*, int64_t, int64_t,
                                      const LatentShape&, const TensorView&, const KvLayer&, float*,
                                      BackendScratch&) const {
  throw Error("backend " + std::string(name()) + " does not run multi-head latent attention");
}

// The CPU backend (src/backend/cpu/): every type and op.
const Backend& cpu_backend();

// A GPU backend (src/backend/cuda/) on the first device, one per model (it holds that model's
// weights on the device); nullptr when epwa was built without one (-DEPWA_CUDA=ON) or no device
// is usable, and *why_not then says which.
std::shared_ptr<const Backend> gpu_backend(std::string* why_not = nullptr);

}  // namespace epwa
