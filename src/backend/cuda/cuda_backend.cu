// The CUDA backend (docs/GPU.md): weights uploaded once per model and kept on the device, every op
// of the backend seam as kernels (kernels.cu) queued on a per-context stream, the activations and
// the KV caches in device memory. Nothing waits for the device but a download (logits, a watched
// router's decisions).
#include <cublas_v2.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "epwa/backend.hpp"
#include "epwa/config.hpp"
#include "epwa/ops.hpp"
#include "kernels.hpp"
#include "op_profile.hpp"

namespace epwa::cuda {
namespace {

// Products of at least this many rows (a dense matrix's tokens; an expert's slots, on average over
// the experts) run through cuBLAS, where a weight serves many rows; below, the kernels read the
// stored weights once per 8 rows. On the H100, 16 sequences decoded together (32 expert slots of 8
// experts) through cuBLAS (f32, the weights copied) ran at a tenth of llama.cpp's speed.
constexpr int64_t kGemmRows = 64, kGemmSlotsPerExpert = 32;
// Grouped Q4_0 / Q8_0 products take the int8 tensor cores (mma_q8) from this many rows of a dense
// matrix, and routed experts from this many slots per expert on average: 16 sequences decoded
// together (16 rows; 32 slots of 8 experts) ran 12-20 % faster there than on the dp4a kernels
// (H100, mixtral-l4; docs/GPU.md).
constexpr int64_t kInt8Rows = 16, kInt8SlotsPerExpert = 2;
// Weights are dequantized for cuBLAS in slices of at most this many bytes.
constexpr int64_t kSliceBytes = int64_t{64} << 20;

void check_blas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cublas: ") + what + ": " + cublasGetStatusString(st));
}

// Whether w can be multiplied on the int8 tensor cores (mma_q8).
bool mma_fits(const DevMatrix& w) {
  return mma_q8_fits(w.type, w.cols, w.row_bytes, w.data);
}

// A layer's KV cache of one sequence: `capacity` rows of kv_dim keys and values (a position each;
// a sliding layer's ring: at most its window).
struct KvCache {
  DeviceBuffer k, v;
  int64_t capacity = 0;
};

struct Scratch : BackendScratch {
  cudaStream_t stream{};
  RopeTable rope;  // the CPU's table, so that both backends rotate by the same cos/sin
  DeviceBuffer cos, sin;
  int64_t rope_positions = 0;            // positions of the table on the device
  std::optional<RopeTable> latent_rope;  // MLA's rope part (YaRN), as the CPU's scratch has it
  DeviceBuffer latent_cos, latent_sin;
  int64_t latent_positions = 0;
  std::array<DeviceBuffer, 64> slots;  // Backend::buffer's activation memory
  DeviceBuffer tokens, g, u, y, xe, ye, wf, xhalf, xscale, scores, grow_k, grow_v, order, tiles,
      counts, xq, xqd, sinks, qlat, olat, wide;
  Q8Rows q8{};
  PinnedBuffer staging;  // download_all's small copies
  // A decode step's {row, position} per sequence and, per layer, the sequences' caches, on the
  // device and as last uploaded: an upload from pageable memory waits for the stream, so each
  // is sent only when it changed (the positions once a step, the caches when they grow).
  struct Table {
    DeviceBuffer dev;
    std::vector<char> host;
  };
  Table step_at;
  std::map<int32_t, Table> layer_caches;
  std::map<std::pair<int32_t, int32_t>, KvCache> kv;  // by (sequence, layer)
  cublasHandle_t blas{};
  bool exact;  // f32 products everywhere (EPWA_CUDA_GEMM=f32): no f16 prompts, no 8-bit decode

  Scratch(int64_t head_dim, float theta, const Yarn& yarn, bool exact_gemm)
      : rope(head_dim, theta, yarn), exact(exact_gemm) {
    EPWA_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~Scratch() override {
    if (blas) cublasDestroy(blas);
    cudaStreamDestroy(stream);
  }
  // The cuBLAS handle, made on the first prompt: a context that only decodes never pays for it.
  cublasHandle_t blas_handle() {
    if (!blas) {
      check_blas(cublasCreate(&blas), "cublasCreate");
      check_blas(cublasSetStream(blas, stream), "cublasSetStream");
    }
    return blas;
  }
  void sync() const { EPWA_CUDA(cudaStreamSynchronize(stream)); }

  // y (n x w.rows) = x (n x w.cols) W^T on the tensor cores. Grouped Q4_0 / Q8_0 weights: as
  // stored, on the int8 cores, activations rounded to 8 bits as for decoding (mma_q8). Other
  // types through cuBLAS: activations in f16 (each row scaled by a power of two, undone on the
  // product), F16 weights as stored, other types dequantized to f16 slice by slice, sums in f32.
  // `exact` (and F32 weights): f32 SGEMM on weights dequantized to f32. The stream orders each
  // slice's product before the next slice overwrites it.
  // xq: x already rounded (round_q8), or null.
  void gemm(const DevMatrix& w, const float* x, int64_t n, float* y, const Q8Rows* xq = nullptr) {
    if (!exact && mma_fits(w)) {
      mma_q8(w, xq ? *xq : *round_q8(x, n, w.cols, true), n, y, stream);
      return;
    }
    const auto m = static_cast<int>(w.rows), nn = static_cast<int>(n), k = static_cast<int>(w.cols);
    const float one = 1, zero = 0;
    if (exact || w.type == DType::F32) {
      const int64_t slice = std::clamp<int64_t>(kSliceBytes / 4 / w.cols, 1, w.rows);
      float* wt = wf.get<float>(static_cast<size_t>(slice * w.cols) * sizeof(float));
      for (int64_t r0 = 0; r0 < w.rows; r0 += slice) {
        const int64_t rc = std::min(slice, w.rows - r0);
        dequantize_rows(w, r0, rc, wt, stream);
        check_blas(cublasSgemm(blas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rc), nn, k,
                               &one, wt, k, x, k, &zero, y + r0, m),
                   "sgemm");
      }
      return;
    }
    __half* xh = xhalf.get<__half>(static_cast<size_t>(n * w.cols) * sizeof(__half));
    float* sc = xscale.get<float>(static_cast<size_t>(n) * sizeof(float));
    to_half_rows(x, n, w.cols, xh, sc, stream);
    const auto hgemm = [&](const void* a, int64_t r0, int64_t rc) {
      check_blas(cublasGemmEx(blas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(rc), nn, k,
                              &one, a, CUDA_R_16F, k, xh, CUDA_R_16F, k, &zero, y + r0, CUDA_R_32F,
                              m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 "gemm (f16)");
    };
    if (w.type == DType::F16) {
      hgemm(w.data, 0, w.rows);
    } else {
      const int64_t slice = std::clamp<int64_t>(kSliceBytes / 2 / w.cols, 1, w.rows);
      __half* wt = wf.get<__half>(static_cast<size_t>(slice * w.cols) * sizeof(__half));
      for (int64_t r0 = 0; r0 < w.rows; r0 += slice) {
        const int64_t rc = std::min(slice, w.rows - r0);
        dequantize_rows(w, r0, rc, wt, stream);
        hgemm(wt, r0, rc);
      }
    }
    unscale_rows(y, n, w.rows, sc, stream);
  }

  // x's n rows rounded to 8 bits for the decode kernels of Q8_0 and Q4_0 weights (`wanted`: a
  // product of x reads them), or null: those kernels then read x in f32.
  const Q8Rows* round_q8(const float* x, int64_t n, int64_t cols, bool wanted) {
    if (exact || !wanted) return nullptr;
    q8 = {xq.get<int8_t>(static_cast<size_t>(n * cols)),
          xqd.get<float>(static_cast<size_t>(n * cols / 32) * sizeof(float))};
    quantize_q8(x, n, cols, q8, stream);
    return &q8;
  }

  // t's device copy of v, uploaded when v differs from what t last sent.
  template <typename T>
  const T* table(Table& t, const std::vector<T>& v) {
    const auto* bytes = reinterpret_cast<const char*>(v.data());
    const size_t size = v.size() * sizeof(T);
    if (t.host.size() != size || !std::equal(t.host.begin(), t.host.end(), bytes)) {
      t.host.assign(bytes, bytes + size);
      upload(t.dev, t.host.data(), static_cast<int64_t>(size));
    }
    return t.dev.data<const T>();
  }

  template <typename T>
  T* upload(DeviceBuffer& b, const T* host, int64_t count) {
    T* d = b.get<T>(static_cast<size_t>(count) * sizeof(T));
    if (count > 0)
      EPWA_CUDA(cudaMemcpyAsync(d, host, static_cast<size_t>(count) * sizeof(T),
                                cudaMemcpyHostToDevice, stream));
    return d;
  }
};

// The routed experts of one layer on the device: a row pointer per expert for each matrix.
struct ExpertTable {
  DeviceBuffer ptrs;                 // gate[E], up[E], down[E]
  std::vector<const uint8_t*> host;  // the same addresses, on the host
  DType gate_t, up_t, down_t;
  int64_t gate_rb, up_rb, down_rb;
  int64_t experts;
  // GPT-OSS's biases: per matrix a device table of E f32 row pointers, or none.
  DeviceBuffer bias_ptrs;  // gate[E], up[E], down[E]
  bool gate_biased = false, up_biased = false, down_biased = false;
  // Every matrix grouped Q4_0 / Q8_0 and no bias: products of 2+ slots per expert on the int8
  // tensor cores, one launch each for all experts (int8_experts).
  bool int8_tiles = false;
  const uint8_t* const* gate() const { return ptrs.data<const uint8_t*>(); }
  const uint8_t* const* up() const { return gate() + experts; }
  const uint8_t* const* down() const { return gate() + 2 * experts; }
  const float* const* bias(int which) const {
    const bool on[] = {gate_biased, up_biased, down_biased};
    return on[which] ? bias_ptrs.data<const float*>() + which * experts : nullptr;
  }
  // Matrix `which` (0 gate, 1 up, 2 down) of expert e, rows x cols.
  DevMatrix matrix(int which, int64_t e, int64_t rows, int64_t cols) const {
    const DType types[] = {gate_t, up_t, down_t};
    const int64_t rb[] = {gate_rb, up_rb, down_rb};
    return {host[which * experts + e], types[which], rows, cols, rb[which]};
  }
};

int64_t row_bytes(const TensorView& t) {
  return dtype_bytes(t.dtype, t.cols());
}

// The type of t's device copy (its layout: kernels.hpp's grouped types).
DType device_type(const TensorView& t) {
  return grouped_type(t.dtype, t.cols());
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::string description, bool exact_gemm)
      : device_(device), description_(std::move(description)), exact_gemm_(exact_gemm) {}

  std::string_view name() const override { return "cuda"; }
  std::string device() const override { return description_; }
  // Every op of the seam, on every stored type.
  bool supports(BackendOp, DType) const override { return true; }

  std::unique_ptr<BackendScratch> make_scratch(const ModelConfig& c) const override {
    EPWA_CUDA(cudaSetDevice(device_));
    // MLA rotates only its rope part (latent_rope); its head_dim (nope + rope) may be odd.
    auto s = std::make_unique<Scratch>(c.mla() ? c.qk_rope_head_dim : c.head_dim, c.rope_theta,
                                       c.yarn, exact_gemm_);
    if (c.mla()) s->latent_rope.emplace(c.qk_rope_head_dim, c.rope_theta, c.yarn);
    return s;
  }

  void reserve(BackendScratch& bs, int64_t positions) const override {
    Scratch& s = cast(bs);
    upload_table(s, s.rope, s.cos, s.sin, s.rope_positions, positions);
    if (s.latent_rope)
      upload_table(s, *s.latent_rope, s.latent_cos, s.latent_sin, s.latent_positions, positions);
  }

  void prepare(std::span<const TensorView* const> ws) const override {
    EPWA_CUDA(cudaSetDevice(device_));
    std::lock_guard lock(mu_);
    for (const TensorView* w : ws)
      if (!w->data.empty()) weight_locked(*w);
    EPWA_CUDA(cudaDeviceSynchronize());
  }

  bool keeps_kv_cache() const override { return true; }

  std::unique_ptr<BackendScratch> copy_scratch(const BackendScratch& from,
                                               const ModelConfig& c) const override {
    auto out = make_scratch(c);
    const Scratch& f = static_cast<const Scratch&>(from);
    Scratch& t = cast(*out);
    f.sync();  // the source's queued appends first
    for (const auto& [key, src] : f.kv) {
      KvCache& dst = t.kv[key];
      for (auto [to, from] : {std::pair{&dst.k, &src.k}, {&dst.v, &src.v}}) {
        const size_t bytes = from->bytes();  // (a latent cache has no values)
        if (bytes > 0)
          EPWA_CUDA(cudaMemcpyAsync(to->get(bytes), from->data<void>(), bytes,
                                    cudaMemcpyDeviceToDevice, t.stream));
      }
      dst.capacity = src.capacity;
    }
    t.sync();
    return out;
  }

  void* buffer(BackendScratch& bs, int slot, size_t bytes) const override {
    Scratch& s = cast(bs);
    if (slot < 0 || slot >= static_cast<int>(s.slots.size()))
      throw Error("backend: buffer slot " + std::to_string(slot) + " out of range");
    return s.slots[slot].get(std::max<size_t>(bytes, 1));
  }
  void upload(void* dst, const void* src, size_t bytes, BackendScratch& bs) const override {
    if (bytes > 0)
      EPWA_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cast(bs).stream));
  }
  void download(void* dst, const void* src, size_t bytes, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    auto timed = profile_.time(s.stream, "download");
    if (bytes > 0) EPWA_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s.stream));
    s.sync();
  }
  // A copy to pageable memory returns only once it is done: the parts up to kStagedBytes are
  // queued into pinned memory instead, so that the whole set waits once; larger ones (a prompt's
  // logits) go straight to their destination (the driver stages them itself; pinning them all
  // would lock hundreds of megabytes).
  void download_all(std::span<const Download> parts, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    auto timed = profile_.time(s.stream, "download");
    constexpr size_t kStagedBytes = size_t{1} << 20, kAlign = 64;
    const auto staged = [&](const Download& p) { return p.bytes > 0 && p.bytes <= kStagedBytes; };
    const auto padded = [&](size_t b) { return (b + kAlign - 1) / kAlign * kAlign; };
    size_t total = 0;
    for (const Download& p : parts)
      if (staged(p)) total += padded(p.bytes);
    char* stage = s.staging.get<char>(std::max<size_t>(total, 1));
    size_t at = 0;
    for (const Download& p : parts)
      if (staged(p)) {
        EPWA_CUDA(cudaMemcpyAsync(stage + at, p.src, p.bytes, cudaMemcpyDeviceToHost, s.stream));
        at += padded(p.bytes);
      }
    for (const Download& p : parts)
      if (p.bytes > 0 && !staged(p))
        EPWA_CUDA(cudaMemcpyAsync(p.dst, p.src, p.bytes, cudaMemcpyDeviceToHost, s.stream));
    s.sync();
    at = 0;
    for (const Download& p : parts)
      if (staged(p)) {
        std::memcpy(p.dst, stage + at, p.bytes);
        at += padded(p.bytes);
      }
  }

  void embed(const TensorView& table, std::span<const int32_t> tokens, float* x,
             BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    const auto n = static_cast<int64_t>(tokens.size());
    auto timed = profile_.time(s.stream, "embed");
    const int32_t* dt = s.upload(s.tokens, tokens.data(), n);
    cuda::embed(weight(table), device_type(table), row_bytes(table), dt, n, table.cols(), x,
                s.stream);
  }

  void add(float* x, const float* y, int64_t count, BackendScratch& bs) const override {
    auto timed = profile_.time(cast(bs).stream, "add");
    cuda::add(x, y, count, cast(bs).stream);
  }

  void add_bias(const TensorView& b, float* y, int64_t n, BackendScratch& bs) const override {
    auto timed = profile_.time(cast(bs).stream, "add_bias");
    cuda::add_bias(weight(b), device_type(b), b.numel(), y, n, cast(bs).stream);
  }

  void clamp(float* y, int64_t count, float limit, BackendScratch& bs) const override {
    auto timed = profile_.time(cast(bs).stream, "clamp");
    cuda::clamp(y, count, limit, cast(bs).stream);
  }

  void route(const float* logits, int64_t n, int64_t experts, int64_t k, bool renormalize,
             int32_t* topk, float* topw, BackendScratch& bs) const override {
    auto timed = profile_.time(cast(bs).stream, "route");
    cuda::route(logits, n, experts, k, renormalize, topk, topw, cast(bs).stream);
  }

  void route_grouped(const float* logits, int64_t n, int64_t experts, const RouteRule& r,
                     int32_t* topk, float* topw, BackendScratch& bs) const override {
    if (r.bias && r.bias->dtype != DType::F32)
      throw Error("route_grouped: the correction bias '" + r.bias->name + "' is " +
                  std::string(dtype_name(r.bias->dtype)) + " (the GPU reads f32)");
    auto timed = profile_.time(cast(bs).stream, "route");
    cuda::route_grouped(logits, n, experts, r,
                        r.bias ? reinterpret_cast<const float*>(weight(*r.bias)) : nullptr, topk,
                        topw, cast(bs).stream);
  }

  void latent_attention(const float* q, const float* kv, int64_t n, int64_t p0,
                        const LatentShape& sh, const TensorView& kv_b, const KvLayer& kvl,
                        float* att, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    if (n == 0) return;
    check_latent(s, kv_b, sh);
    reserve(s, p0 + n);
    auto timed = profile_.time(s.stream, "latent attention");
    const int64_t row = sh.latent + sh.rope, keys = p0 + n;
    float* c = cache(s, kvl, p0, n, row, false).k.data<float>();
    const float *cos = s.latent_cos.data<float>(), *sin = s.latent_sin.data<float>();
    cuda::latent_append(kv, n, {c, p0}, sh, cos, sin, s.stream);
    const float* wkv = widened(kv_b);
    // Rows in chunks whose scores and absorbed queries fit in 256 MiB each (as attention()).
    const int64_t chunk = std::clamp<int64_t>(
        (int64_t{64} << 20) / (sh.heads * std::max(keys, row)), 1, std::min<int64_t>(n, 65535));
    for (int64_t i0 = 0; i0 < n; i0 += chunk)
      latent_rows(s, q + i0 * sh.heads * (sh.nope + sh.rope), std::min(chunk, n - i0), {c, p0 + i0},
                  sh, wkv, keys, att + i0 * sh.heads * sh.v);
  }

  // A decode step of several sequences: one append and one attention launch for all of them, as
  // attention_batch.
  void latent_attention_batch(const float* q, const float* kv, const LatentShape& sh,
                              const TensorView& kv_b, std::span<const SeqRows> seqs, float* att,
                              BackendScratch& bs) const override {
    if (!one_row_each(seqs) || seqs.empty())
      return Backend::latent_attention_batch(q, kv, sh, kv_b, seqs, att, bs);
    Scratch& s = cast(bs);
    check_latent(s, kv_b, sh);
    int64_t keys = 0;
    for (const SeqRows& r : seqs) keys = std::max(keys, r.p0 + 1);
    reserve(s, keys);
    auto timed = profile_.time(s.stream, "latent attention");
    const int64_t row = sh.latent + sh.rope;
    std::vector<CacheRows> caches;
    for (const SeqRows& r : seqs)
      caches.push_back({cache(s, r.kv, r.p0, 1, row, false).k.data<float>(), nullptr});
    const auto n = std::ssize(seqs);
    const cuda::LatentRows rows{nullptr, 0, positions(s, seqs),
                                s.table(s.layer_caches[seqs.front().kv.layer], caches)};
    const float *cos = s.latent_cos.data<float>(), *sin = s.latent_sin.data<float>();
    cuda::latent_append(kv, n, rows, sh, cos, sin, s.stream);
    latent_rows(s, q, n, rows, sh, widened(kv_b), keys, att);
  }

  void add_gated(const TensorView& gate, const float* x, const float* y, int64_t n, int64_t d,
                 float* o, BackendScratch& bs) const override {
    if (gate.numel() != d)
      throw Error("add_gated: tensor '" + gate.name + "' has " + std::to_string(gate.numel()) +
                  " values, rows have " + std::to_string(d));
    auto timed = profile_.time(cast(bs).stream, "add_gated");
    cuda::add_gated(weight(gate), device_type(gate), x, y, n, d, o, cast(bs).stream);
  }

  void linear(std::span<const TensorView* const> ws, const float* x, int64_t n, int64_t cols,
              std::span<float* const> ys, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    // x rounded to 8 bits once for every product that reads it so: the dp4a kernels of Q8_0 /
    // Q4_0, the int8 tensor cores for grouped ones of 16+ rows.
    const auto tensor_cores = [&](const TensorView* w) {
      return n >= kGemmRows || (n >= kInt8Rows && !s.exact && mma_fits(matrix(*w)));
    };
    const Q8Rows* xq = nullptr;
    if (std::any_of(ws.begin(), ws.end(), [&](const TensorView* w) {
          return tensor_cores(w) ? mma_fits(matrix(*w)) : reads_q8(w->dtype, cols);
        })) {
      auto timed = profile_.time(s.stream, "linear: 8-bit activations");
      xq = s.round_q8(x, n, cols, true);
    }
    for (size_t i = 0; i < ws.size(); ++i) {
      check_cols(*ws[i], cols);
      const bool tc = tensor_cores(ws[i]);
      auto timed = profile_.time(s.stream, tc ? "linear (tensor cores)" : "linear");
      if (tc)
        s.gemm(matrix(*ws[i]), x, n, ys[i], xq);
      else
        cuda::linear(matrix(*ws[i]), x, n, ys[i], s.stream, xq);
    }
  }

  // The routing stays on the device: experts are read through the top-k indices there (the route
  // kernel writes only indices in range).
  void expert_ffn(const ExpertMatrices& X, int64_t width, const Routing& r, const float* x,
                  int64_t n, int64_t d, float* out, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    const ExpertTable& t = experts(X, width, d);
    const int64_t slots = n * r.k;
    float* g = s.g.get<float>(static_cast<size_t>(slots * width) * sizeof(float));
    float* u = s.u.get<float>(static_cast<size_t>(slots * width) * sizeof(float));
    float* y = s.y.get<float>(static_cast<size_t>(slots * d) * sizeof(float));
    ExpertGroups eg{
        s.order.get<int32_t>(static_cast<size_t>(slots) * sizeof(int32_t)),
        s.tiles.get<int4>(static_cast<size_t>(max_expert_tiles(slots, t.experts, kTileSlots)) *
                          sizeof(int4)),
        s.wide.get<int4>(static_cast<size_t>(max_expert_tiles(slots, t.experts, kTileTokens)) *
                         sizeof(int4)),
        s.counts.get<int32_t>(static_cast<size_t>(t.experts) * sizeof(int32_t))};
    {
      auto timed = profile_.time(s.stream, "experts: group");
      group_experts(r.topk, slots, t.experts, eg, s.stream);
    }
    const bool prompt = slots >= kGemmSlotsPerExpert * t.experts;
    const bool int8 = t.int8_tiles && !s.exact && slots >= kInt8SlotsPerExpert * t.experts;
    if (int8 || prompt) {
      auto timed = profile_.time(s.stream, int8 ? "experts (tensor cores)" : "experts (prompt)");
      // The slots gathered in expert order (xe), the products, the outputs (ye) scattered back to
      // slot order.
      float* xe = s.xe.get<float>(static_cast<size_t>(slots * d) * sizeof(float));
      float* ye = s.ye.get<float>(static_cast<size_t>(slots * d) * sizeof(float));
      if (!int8) {
        // One expert at a time through cuBLAS: waits once, for the counts of each expert.
        std::vector<int32_t> counts(t.experts);
        download(counts.data(), eg.counts, counts.size() * sizeof(int32_t), s);
        prompt_experts(s, t, X, counts, eg.order, x, r.k, width, d, xe, g, u, ye, y);
      } else {
        // Tiles of one expert cut by group_experts, no wait: up to kTileTokens slots for a prompt
        // (each tile reads its expert's weights once), up to kTileSlots for a few sequences' step.
        const Tiles tl = prompt ? Tiles{eg.wide, eg.max_wide, kTileTokens}
                                : Tiles{eg.tiles, eg.max_tiles, kTileSlots};
        int8_experts(s, t, X, tl, eg.order, x, slots, r.k, width, d, xe, g, u, ye, y);
      }
    } else {
      {
        auto timed = profile_.time(s.stream, "experts: gate, up");
        const Q8Rows* xq = s.round_q8(x, n, d, reads_q8(t.gate_t, d) || reads_q8(t.up_t, d));
        expert_linear(t.gate(), t.gate_t, width, d, t.gate_rb, r.topk, eg, slots, r.k, true, x, g,
                      s.stream, xq);
        expert_linear(t.up(), t.up_t, width, d, t.up_rb, r.topk, eg, slots, r.k, true, x, u,
                      s.stream, xq);
      }
      {
        auto timed = profile_.time(s.stream, "experts: swiglu");
        activate(t, X, g, u, slots, width, r.topk, 0, s.stream);
      }
      auto timed = profile_.time(s.stream, "experts: down");
      const Q8Rows* gq = s.round_q8(g, slots, width, reads_q8(t.down_t, width));
      expert_linear(t.down(), t.down_t, d, width, t.down_rb, r.topk, eg, slots, r.k, false, g, y,
                    s.stream, gq);
      if (t.bias(2)) add_expert_bias(y, slots, d, r.topk, 0, t.bias(2), s.stream);
    }
    auto timed = profile_.time(s.stream, "experts: combine");
    combine_experts(y, r.topk, r.weights, n, r.k, d, out, s.stream);
  }

  // A prompt's experts one by one: each expert's slots gathered, its three products (gemm), the
  // activation and its down bias, its outputs scattered to slot order (ye: in expert order).
  void prompt_experts(Scratch& s, const ExpertTable& t, const ExpertMatrices& X,
                      const std::vector<int32_t>& counts, const int32_t* order, const float* x,
                      int64_t k, int64_t width, int64_t d, float* xe, float* g, float* u, float* ye,
                      float* y) const {
    int64_t at = 0;
    for (int64_t e = 0; e < t.experts; ++e) {
      const int64_t c = counts[e];
      if (c == 0) continue;
      const int32_t* idx = order + at;
      gather_rows(x, idx, c, k, d, xe + at * d, s.stream);
      const DevMatrix gate = t.matrix(0, e, width, d), up = t.matrix(1, e, width, d);
      const Q8Rows* xq = s.round_q8(xe + at * d, c, d, mma_fits(gate) || mma_fits(up));
      s.gemm(gate, xe + at * d, c, g + at * width, xq);
      s.gemm(up, xe + at * d, c, u + at * width, xq);
      activate(t, X, g + at * width, u + at * width, c, width, nullptr, static_cast<int32_t>(e),
               s.stream);
      s.gemm(t.matrix(2, e, d, width), g + at * width, c, ye + at * d);
      if (t.bias(2))
        add_expert_bias(ye + at * d, c, d, nullptr, static_cast<int32_t>(e), t.bias(2), s.stream);
      scatter_rows(ye + at * d, idx, c, d, y, s.stream);
      at += c;
    }
  }

  // Tiles of slots of one expert, on the device: {expert, first row in expert order, rows, 0}.
  struct Tiles {
    const int4* dev;
    int64_t count, most;  // entries; the most rows of one
  };
  // The experts when every matrix is grouped Q4_0 / Q8_0 without biases (int8_tiles): all
  // experts' slots at once, gathered in expert order, each product one launch over the tiles (a
  // launch per expert left the SMs idle: a 4096-row down product is 64 blocks of rows), the
  // outputs scattered back to slot order.
  static void int8_experts(Scratch& s, const ExpertTable& t, const ExpertMatrices& X,
                           const Tiles& tl, const int32_t* order, const float* x, int64_t slots,
                           int64_t k, int64_t width, int64_t d, float* xe, float* g, float* u,
                           float* ye, float* y) {
    gather_rows(x, order, slots, k, d, xe, s.stream);
    const Q8Rows xq = *s.round_q8(xe, slots, d, true);
    mma_q8_experts(t.gate(), t.gate_t, width, d, t.gate_rb, tl.dev, tl.count, tl.most, xq, g,
                   s.stream);
    mma_q8_experts(t.up(), t.up_t, width, d, t.up_rb, tl.dev, tl.count, tl.most, xq, u, s.stream);
    activate(t, X, g, u, slots, width, nullptr, 0, s.stream);
    const Q8Rows gq = *s.round_q8(g, slots, width, true);
    mma_q8_experts(t.down(), t.down_t, d, width, t.down_rb, tl.dev, tl.count, tl.most, gq, ye,
                   s.stream);
    scatter_rows(ye, order, slots, d, y, s.stream);
  }

  void ffn(const TensorView& gate_w, const TensorView& down_w, const TensorView& up_w,
           int64_t width, const float* x, int64_t n, int64_t d, float* out,
           BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    check_shape(gate_w, width, d);
    check_shape(up_w, width, d);
    check_shape(down_w, d, width);
    float* g = s.g.get<float>(static_cast<size_t>(n * width) * sizeof(float));
    float* u = s.u.get<float>(static_cast<size_t>(n * width) * sizeof(float));
    const TensorView* gu[] = {&gate_w, &up_w};
    float* ys[] = {g, u};
    linear(gu, x, n, d, ys, s);
    swiglu(g, u, n * width, s.stream);
    const TensorView* dn[] = {&down_w};
    linear(dn, g, n, width, {&out, 1}, s);
  }

  void rmsnorm(const float* x, int64_t n, int64_t d, const TensorView& w, float eps, float* out,
               BackendScratch& bs) const override {
    check_norm(w, d);
    auto timed = profile_.time(cast(bs).stream, "rmsnorm");
    cuda::rmsnorm(x, n, d, weight(w), device_type(w), eps, out, cast(bs).stream);
  }

  void rmsnorm_strided(float* x, int64_t n, int64_t d, int64_t stride, const TensorView& w,
                       float eps, BackendScratch& bs) const override {
    check_norm(w, d);
    auto timed = profile_.time(cast(bs).stream, "rmsnorm");
    cuda::rmsnorm(x, n, d, weight(w), device_type(w), eps, x, cast(bs).stream, stride);
  }

  void rope(float* x, int64_t n, int64_t heads, int64_t stride, int64_t p0,
            BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    if (n == 0) return;
    reserve(s, p0 + n);
    auto timed = profile_.time(s.stream, "rope");
    cuda::rope(x, n, heads, stride, s.rope.head_dim(), p0, s.cos.data<float>(), s.sin.data<float>(),
               s.stream);
  }

  void attention(const float* q, const float* k, const float* v, int64_t n, int64_t p0, int64_t nh,
                 int64_t nkv, int64_t hd, const KvLayer& kv, float* att,
                 BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    const int64_t kvdim = nkv * hd;
    auto timed = profile_.time(s.stream, "attention");
    KvCache& c = cache(s, kv, p0, n, kvdim);
    append(s, c, k, v, p0, n, kvdim);
    const float* dk = c.k.data<float>();
    const float* dv = c.v.data<float>();
    const int64_t qdim = nh * hd;
    // Queries in chunks whose scores fit in 256 MiB (a long prompt's n x heads x keys would not).
    const int64_t per_row = nh * (p0 + n);
    const int64_t chunk = std::clamp<int64_t>((int64_t{64} << 20) / per_row, 1, n);
    float* scores = s.scores.get<float>(static_cast<size_t>(chunk * per_row) * sizeof(float));
    for (int64_t i0 = 0; i0 < n; i0 += chunk) {
      const int64_t rows = std::min(chunk, n - i0);
      if (n >= kGemmRows)
        attention_gemm(s, q + i0 * qdim, dk, dv, rows, p0 + i0, nh, nkv, hd, scores,
                       att + i0 * qdim);
      else
        cuda::attention(q + i0 * qdim, dk, dv, rows, p0 + i0, nh, nkv, hd, scores, att + i0 * qdim,
                        s.stream);
    }
  }

  // A prompt's attention (n rows from position p0 on, the cache holding them) as f32 GEMMs, as the
  // latent attention's: per kv head, its group's query heads batched over the one cached K: the
  // scores of row i and head h at (i nh + h) keys (column-major, keys x n nh), the causal softmax,
  // then the values V p the same way. The one block per (head, row) that decode uses reads a key
  // row per thread: pp512 of the Mixtral-l4 shape went 1.19-1.28x faster on the H100 with this.
  static void attention_gemm(Scratch& s, const float* q, const float* dk, const float* dv,
                             int64_t n, int64_t p0, int64_t nh, int64_t nkv, int64_t hd,
                             float* scores, float* att) {
    const int64_t keys = p0 + n, group = nh / nkv, kvdim = nkv * hd;
    const auto i32 = [](int64_t v) { return static_cast<int>(v); };
    const float scale = cuda::attention_scale(hd), one = 1, zero = 0;
    for (int64_t g = 0; g < nkv; ++g)
      check_blas(cublasSgemmStridedBatched(
                     s.blas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, i32(keys), i32(n), i32(hd), &scale,
                     dk + g * hd, i32(kvdim), 0, q + g * group * hd, i32(nh * hd), hd, &zero,
                     scores + g * group * keys, i32(nh * keys), keys, i32(group)),
                 "attention scores");
    cuda::causal_softmax(scores, n, nh, p0, keys, keys, s.stream);
    for (int64_t g = 0; g < nkv; ++g)
      check_blas(cublasSgemmStridedBatched(s.blas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, i32(hd),
                                           i32(n), i32(keys), &one, dv + g * hd, i32(kvdim), 0,
                                           scores + g * group * keys, i32(nh * keys), keys, &zero,
                                           att + g * group * hd, i32(nh * hd), hd, i32(group)),
                 "attention values");
  }

  // GPT-OSS's attention: a sink logit per head; a sliding layer's cache is a ring of its window,
  // read before the batch's rows are stored in it (the CPU's order).
  void attention_sinks(const float* q, const float* k, const float* v, int64_t n, int64_t p0,
                       int64_t nh, int64_t nkv, int64_t hd, const KvLayer& kv,
                       const TensorView& sinks, float* att, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    if (sinks.numel() != nh)
      throw Error("attention: " + std::to_string(sinks.numel()) + " sink logits for " +
                  std::to_string(nh) + " heads");
    if (n == 0) return;
    auto timed = profile_.time(s.stream, "attention (sinks)");
    const int64_t kvdim = nkv * hd, w = kv.window;
    KvCache& c = cache(s, kv, p0, n, kvdim);
    if (w == 0) append(s, c, k, v, p0, n, kvdim);
    float* dk = c.k.data<float>();
    float* dv = c.v.data<float>();
    const float* sink = reinterpret_cast<const float*>(weight(sinks));
    if (sinks.dtype != DType::F32) {
      float* f = s.sinks.get<float>(static_cast<size_t>(nh) * sizeof(float));
      dequantize_rows(DevMatrix{weight(sinks), device_type(sinks), 1, nh, row_bytes(sinks)}, 0, 1,
                      f, s.stream);
      sink = f;
    }
    // Each query reads at most the window's keys (all positions up to its own without one).
    const int64_t keys = w > 0 ? std::min(w, p0 + n) : p0 + n;
    const int64_t chunk = std::clamp<int64_t>((int64_t{64} << 20) / (nh * keys), 1, n);
    float* scores = s.scores.get<float>(static_cast<size_t>(chunk * nh * keys) * sizeof(float));
    cuda::attention_sinks(q, k, v, n, p0, nh, nkv, hd, dk, dv, w, sink, scores, keys, chunk, att,
                          s.stream);
    if (w > 0) ring_store(k, v, n, p0, w, kvdim, dk, dv, s.stream);
  }

  // A decode step of several sequences (one row each): one launch for all of them, where the
  // per-sequence ops took a launch and two copies each (a third of a 16-sequence step on the H100,
  // docs/RESULTS.md). Other batches go sequence by sequence.
  void rope_batch(float* x, int64_t heads, int64_t stride, std::span<const SeqRows> seqs,
                  BackendScratch& bs) const override {
    if (!one_row_each(seqs)) return Backend::rope_batch(x, heads, stride, seqs, bs);
    Scratch& s = cast(bs);
    int64_t last = 0;
    for (const SeqRows& r : seqs) last = std::max(last, r.p0);
    reserve(s, last + 1);
    auto timed = profile_.time(s.stream, "rope");
    cuda::rope(x, std::ssize(seqs), heads, stride, s.rope.head_dim(), 0, s.cos.data<float>(),
               s.sin.data<float>(), s.stream, positions(s, seqs));
  }

  void attention_batch(const float* q, const float* k, const float* v, int64_t heads,
                       int64_t kv_heads, int64_t head_dim, std::span<const SeqRows> seqs,
                       float* att, BackendScratch& bs) const override {
    if (!one_row_each(seqs) || seqs.empty())
      return Backend::attention_batch(q, k, v, heads, kv_heads, head_dim, seqs, att, bs);
    Scratch& s = cast(bs);
    const int64_t kvdim = kv_heads * head_dim;
    auto timed = profile_.time(s.stream, "attention");
    int64_t keys = 0;
    std::vector<CacheRows> caches;
    for (const SeqRows& r : seqs) {
      KvCache& c = cache(s, r.kv, r.p0, 1, kvdim);
      caches.push_back({c.k.data<float>(), c.v.data<float>()});
      keys = std::max(keys, r.p0 + 1);
    }
    const auto n = std::ssize(seqs);
    const int2* at = positions(s, seqs);
    const CacheRows* dc = s.table(s.layer_caches[seqs.front().kv.layer], caches);
    float* scores = s.scores.get<float>(static_cast<size_t>(n * heads * keys) * sizeof(float));
    cuda::attention_rows(q, k, v, at, dc, n, heads, kv_heads, head_dim, scores, keys, att,
                         s.stream);
  }

 private:
  static Scratch& cast(BackendScratch& s) { return static_cast<Scratch&>(s); }

  // g = the experts' activation of g and u over `rows` rows (of experts[i], or `fixed`): SwiGLU,
  // or GPT-OSS's with biases and the clamp.
  static void activate(const ExpertTable& t, const ExpertMatrices& X, float* g, const float* u,
                       int64_t rows, int64_t width, const int32_t* experts, int32_t fixed,
                       cudaStream_t stream) {
    if (!t.bias(0) && !t.bias(1) && X.swiglu_limit == 0) return swiglu(g, u, rows * width, stream);
    expert_activation(g, u, rows, width, experts, fixed, t.bias(0), t.bias(1), X.swiglu_limit,
                      stream);
  }

  static void check_norm(const TensorView& w, int64_t d) {
    if (w.numel() != d)
      throw Error("rmsnorm: tensor '" + w.name + "' has " + std::to_string(w.numel()) +
                  " values, rows have " + std::to_string(d));
  }
  // The scratch has the latent RoPE table (an MLA model's), kv_b the latent attention's shape.
  static void check_latent(const Scratch& s, const TensorView& kv_b, const LatentShape& sh) {
    if (!s.latent_rope) throw Error("latent attention: the scratch has no latent RoPE table");
    check_shape(kv_b, sh.heads * (sh.nope + sh.v), sh.latent);
  }

  static bool one_row_each(std::span<const SeqRows> seqs) {
    return std::all_of(seqs.begin(), seqs.end(), [](const SeqRows& r) { return r.n == 1; });
  }
  // The step's {row, position} of each sequence (one row each), on the device.
  static const int2* positions(Scratch& s, std::span<const SeqRows> seqs) {
    std::vector<int2> at;
    for (const SeqRows& r : seqs)
      at.push_back(make_int2(static_cast<int>(r.begin), static_cast<int>(r.p0)));
    return s.table(s.step_at, at);
  }

  // The device cache of kv's (sequence, layer), kv_dim floats a row, room for positions [0, p0 +
  // n): grown with the Context's (rows before p0 kept) when its capacity grew; a sliding layer's
  // (kv.window > 0) a ring of at most `window` rows, all kept as it grows; without values (a
  // latent cache) only the keys' rows.
  static KvCache& cache(Scratch& s, const KvLayer& kv, int64_t p0, int64_t n, int64_t kvdim,
                        bool values = true) {
    if (p0 + n > kv.capacity)
      throw Error("attention: positions " + std::to_string(p0 + n) + " exceed the cache's " +
                  std::to_string(kv.capacity));
    KvCache& c = s.kv[{kv.sequence, kv.layer}];
    const int64_t rows = kv.window > 0 ? std::min(kv.capacity, kv.window) : kv.capacity;
    if (c.capacity < rows) {
      const size_t row = static_cast<size_t>(kvdim) * sizeof(float);
      const int64_t keep = kv.window > 0 ? c.capacity : std::min(c.capacity, p0);
      for (auto [buf, grow] : {std::pair{&c.k, &s.grow_k}, {&c.v, &s.grow_v}}) {
        if (grow == &s.grow_v && !values) break;
        float* to = grow->get<float>(rows * row);
        if (keep > 0)
          EPWA_CUDA(cudaMemcpyAsync(to, buf->data<float>(), keep * row, cudaMemcpyDeviceToDevice,
                                    s.stream));
        std::swap(*buf, *grow);
      }
      c.capacity = rows;
    }
    return c;
  }

  // The n rows of k and v at positions p0... of the cache c (kv_dim floats a row).
  static void append(Scratch& s, KvCache& c, const float* k, const float* v, int64_t p0, int64_t n,
                     int64_t kvdim) {
    const size_t row = static_cast<size_t>(kvdim) * sizeof(float);
    EPWA_CUDA(cudaMemcpyAsync(c.k.data<float>() + p0 * kvdim, k, n * row, cudaMemcpyDeviceToDevice,
                              s.stream));
    EPWA_CUDA(cudaMemcpyAsync(c.v.data<float>() + p0 * kvdim, v, n * row, cudaMemcpyDeviceToDevice,
                              s.stream));
  }

  // Uploads table t's cos / sin once it covers `positions` (the table grows, never shrinks).
  static void upload_table(Scratch& s, RopeTable& t, DeviceBuffer& cos, DeviceBuffer& sin,
                           int64_t& on_device, int64_t positions) {
    if (positions <= on_device) return;
    t.ensure(positions);
    s.upload(cos, t.cos_table().data(), static_cast<int64_t>(t.cos_table().size()));
    s.upload(sin, t.sin_table().data(), static_cast<int64_t>(t.sin_table().size()));
    s.sync();
    on_device = t.cached_positions();
  }

  static void check_cols(const TensorView& w, int64_t cols) {
    if (w.cols() != cols)
      throw Error("linear: tensor '" + w.name + "' has " + std::to_string(w.cols()) +
                  " columns, the input " + std::to_string(cols));
  }
  static void check_shape(const TensorView& w, int64_t rows, int64_t cols) {
    if (w.rows() != rows || w.cols() != cols)
      throw Error("tensor '" + w.name + "' is not " + std::to_string(rows) + " x " +
                  std::to_string(cols));
  }

  // The device copy of a weight, uploaded on first use (prepare() uploads them all at load).
  const uint8_t* weight(const TensorView& t) const {
    std::lock_guard lock(mu_);
    return weight_locked(t);
  }
  const uint8_t* weight_locked(const TensorView& t) const {
    auto it = weights_.find(t.data.data());
    if (it != weights_.end()) return it->second.data<const uint8_t>();
    const int64_t bytes = dtype_bytes(t.dtype, t.numel());
    if (static_cast<int64_t>(t.data.size()) != bytes)
      throw Error("tensor '" + t.name + "' has " + std::to_string(t.data.size()) +
                  " bytes of data for its shape (" + std::to_string(bytes) + " expected)");
    DeviceBuffer b;
    EPWA_CUDA(
        cudaMemcpy(b.get(t.data.size()), t.data.data(), t.data.size(), cudaMemcpyHostToDevice));
    if (const DType g = device_type(t); g != t.dtype) {
      DeviceBuffer file = std::move(b);
      regroup(file.data<const uint8_t>(), t.numel() / 32, g, b.get<uint8_t>(t.data.size()),
              nullptr);
      EPWA_CUDA(cudaStreamSynchronize(nullptr));  // before `file` goes and before any use
    }
    return weights_.emplace(t.data.data(), std::move(b)).first->second.data<const uint8_t>();
  }
  DevMatrix matrix(const TensorView& t) const {
    return {weight(t), device_type(t), t.rows(), t.cols(), row_bytes(t)};
  }

  // kv_b in f32 for the latent attention's GEMMs: F32 as uploaded, other types widened once, on
  // first use, and kept beside the stored copy (heads x (nope + v) x latent floats a layer: 8 MiB
  // for DeepSeek-V2-Lite's 16 heads, 64 MiB for V3's 128), not widened again for every layer of
  // every step.
  const float* widened(const TensorView& kv_b) const {
    if (device_type(kv_b) == DType::F32) return reinterpret_cast<const float*>(weight(kv_b));
    const DevMatrix m = matrix(kv_b);
    std::lock_guard lock(mu_);
    auto it = widened_.find(kv_b.data.data());
    if (it != widened_.end()) return it->second.data<const float>();
    DeviceBuffer b;
    dequantize_rows(m, 0, m.rows, b.get<float>(static_cast<size_t>(kv_b.numel()) * sizeof(float)),
                    nullptr);
    EPWA_CUDA(cudaStreamSynchronize(nullptr));  // before any stream reads it
    return widened_.emplace(kv_b.data.data(), std::move(b)).first->second.data<const float>();
  }

  // Latent attention of the n rows of q (entries `rows`, appended; keys: more than any entry's
  // position), wkv: kv_b in f32. q_lat = W_uk^T q_nope for every row and head in one f32 GEMM
  // batched over the heads (each block converted the head's 128 x 512 nope weights for its one
  // row: 26.5 % of a decode step, docs/RESULTS.md), the rope parts rotated; then the attention in
  // the latent space: one sequence's rows share its cache, so their scores for every head are one
  // GEMM against the cached rows, a masked softmax, and the weighted latents a second GEMM (one
  // block per (head, row) took 11 ms a layer for a 512-token prompt); rows of several sequences
  // (one each) one block per (head, entry) over their own caches. Last, W_uv of each head's sum
  // as a GEMM batched over the heads.
  static void latent_rows(Scratch& s, const float* q, int64_t n, const cuda::LatentRows& rows,
                          const LatentShape& sh, const float* wkv, int64_t keys, float* att) {
    const int64_t row = sh.latent + sh.rope, qd = sh.nope + sh.rope, nh = n * sh.heads;
    const int64_t per_head = (sh.nope + sh.v) * sh.latent;  // kv_b's floats per head
    float* qlat = s.qlat.get<float>(static_cast<size_t>(nh * row) * sizeof(float));
    float* olat = s.olat.get<float>(static_cast<size_t>(nh * sh.latent) * sizeof(float));
    float* scores = s.scores.get<float>(static_cast<size_t>(nh * keys) * sizeof(float));
    const auto i32 = [](int64_t v) { return static_cast<int>(v); };
    const float one = 1, zero = 0;
    // Column-major views of the row-major data: the head's nope rows of kv_b are a latent x nope
    // matrix, its query rows a nope x n one (heads x qd apart).
    check_blas(cublasSgemmStridedBatched(s.blas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, i32(sh.latent),
                                         i32(n), i32(sh.nope), &sh.scale, wkv, i32(sh.latent),
                                         per_head, q, i32(sh.heads * qd), qd, &zero, qlat,
                                         i32(sh.heads * row), row, i32(sh.heads)),
               "latent query");
    const float *cos = s.latent_cos.data<float>(), *sin = s.latent_sin.data<float>();
    cuda::latent_query_rope(q, n, rows, sh, cos, sin, qlat, s.stream);
    if (rows.at) {
      cuda::latent_attend(qlat, n, rows, sh, scores, keys, olat, s.stream);
    } else {
      // scores (keys x nh, column-major) = the cached rows (keys x row) . the qlat rows (row x
      // nh); olat (latent x nh) = the cached latents (latent x keys) . the softmax (keys x nh).
      check_blas(
          cublasSgemm(s.blas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, i32(keys), i32(nh), i32(row), &one,
                      rows.cache, i32(row), qlat, i32(row), &zero, scores, i32(keys)),
          "latent scores");
      cuda::causal_softmax(scores, n, sh.heads, rows.p0, keys, keys, s.stream);
      check_blas(
          cublasSgemm(s.blas_handle(), CUBLAS_OP_N, CUBLAS_OP_N, i32(sh.latent), i32(nh), i32(keys),
                      &one, rows.cache, i32(row), scores, i32(keys), &zero, olat, i32(sh.latent)),
          "latent sums");
    }
    check_blas(
        cublasSgemmStridedBatched(s.blas_handle(), CUBLAS_OP_T, CUBLAS_OP_N, i32(sh.v), i32(n),
                                  i32(sh.latent), &one, wkv + sh.nope * sh.latent, i32(sh.latent),
                                  per_head, olat, i32(sh.heads * sh.latent), sh.latent, &zero, att,
                                  i32(sh.heads * sh.v), sh.v, i32(sh.heads)),
        "latent values");
  }

  const ExpertTable& experts(const ExpertMatrices& X, int64_t width, int64_t d) const {
    std::lock_guard lock(mu_);
    auto it = tables_.find(X.gate.data());
    if (it != tables_.end()) return it->second;
    const auto ne = static_cast<int64_t>(X.gate.size());
    if (ne == 0 || static_cast<int64_t>(X.up.size()) != ne ||
        static_cast<int64_t>(X.down.size()) != ne)
      throw Error("expert_ffn: the layer's gate, up and down experts differ in number");
    std::vector<const uint8_t*> ptrs;
    for (auto side : {X.gate, X.up, X.down})
      for (const TensorView& t : side) {
        const bool down = side.data() == X.down.data();
        check_shape(t, down ? d : width, down ? width : d);
        if (t.dtype != side[0].dtype)
          throw Error("expert_ffn: tensor '" + t.name + "' is " + std::string(dtype_name(t.dtype)) +
                      ", expert 0's is " + std::string(dtype_name(side[0].dtype)));
        ptrs.push_back(weight_locked(t));
      }
    ExpertTable t{{},
                  ptrs,
                  device_type(X.gate[0]),
                  device_type(X.up[0]),
                  device_type(X.down[0]),
                  row_bytes(X.gate[0]),
                  row_bytes(X.up[0]),
                  row_bytes(X.down[0]),
                  ne,
                  {}};
    EPWA_CUDA(cudaMemcpy(t.ptrs.get(ptrs.size() * sizeof(void*)), ptrs.data(),
                         ptrs.size() * sizeof(void*), cudaMemcpyHostToDevice));
    std::vector<const float*> biases(3 * ne, nullptr);
    bool* biased[] = {&t.gate_biased, &t.up_biased, &t.down_biased};
    int which = 0;
    for (auto side : {X.gate_bias, X.up_bias, X.down_bias}) {
      if (!side.empty()) {
        if (static_cast<int64_t>(side.size()) != ne)
          throw Error("expert_ffn: " + std::to_string(side.size()) + " bias rows for " +
                      std::to_string(ne) + " experts");
        for (int64_t e = 0; e < ne; ++e) {
          const TensorView& b = side[e];
          if (b.dtype != DType::F32 || b.numel() != (which == 2 ? d : width))
            throw Error("expert bias '" + b.name + "' is not " +
                        std::to_string(which == 2 ? d : width) + " f32 values");
          biases[which * ne + e] = reinterpret_cast<const float*>(weight_locked(b));
        }
        *biased[which] = true;
      }
      ++which;
    }
    if (t.gate_biased || t.up_biased || t.down_biased)
      EPWA_CUDA(cudaMemcpy(t.bias_ptrs.get(biases.size() * sizeof(void*)), biases.data(),
                           biases.size() * sizeof(void*), cudaMemcpyHostToDevice));
    t.int8_tiles = !t.gate_biased && !t.up_biased && !t.down_biased;
    for (int64_t i = 0; i < 3 * ne; ++i) {
      const int which = static_cast<int>(i / ne);
      t.int8_tiles = t.int8_tiles && mma_fits(t.matrix(which, i % ne, which == 2 ? d : width,
                                                       which == 2 ? width : d));
    }
    return tables_.emplace(X.gate.data(), std::move(t)).first->second;
  }

  int device_;
  std::string description_;
  bool exact_gemm_;
  mutable OpProfile profile_;
  mutable std::mutex mu_;
  mutable std::unordered_map<const std::byte*, DeviceBuffer> weights_;
  mutable std::unordered_map<const std::byte*, DeviceBuffer> widened_;  // f32 kv_b (widened())
  mutable std::unordered_map<const TensorView*, ExpertTable> tables_;
};

}  // namespace
}  // namespace epwa::cuda

namespace epwa {

std::shared_ptr<const Backend> gpu_backend(std::string* why_not) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    if (why_not)
      *why_not = e != cudaSuccess ? std::string("no usable CUDA device: ") + cudaGetErrorString(e)
                                  : std::string("no CUDA device");
    return nullptr;
  }
  // "f16" (the default: prompts on f16 tensor cores, 8-bit activations for decoding Q8_0 and Q4_0)
  // or "f32" (exact: f32 activations everywhere; docs/GPU.md).
  const char* env = std::getenv("EPWA_CUDA_GEMM");
  const std::string gemm = env && *env ? env : "f16";
  if (gemm != "f16" && gemm != "f32")
    throw Error("EPWA_CUDA_GEMM: '" + gemm + "' is neither f16 nor f32");
  cudaDeviceProp p{};
  EPWA_CUDA(cudaGetDeviceProperties(&p, 0));
  const double gib = static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024 * 1024);
  char desc[512];
  std::snprintf(desc, sizeof desc, "cuda:0 (%s, %.0f GiB, sm_%d%d)", p.name, gib, p.major, p.minor);
  return std::make_shared<cuda::CudaBackend>(0, desc, gemm == "f32");
}

}  // namespace epwa
