// The CUDA backend (docs/GPU.md): weights uploaded once per model and kept on the device, every op
// of the backend seam as kernels (kernels.cu), a per-context stream, device buffers and a device
// copy of each KV cache. The seam passes host activations, so each op copies its inputs in and
// its outputs back: correct on every family and type now; keeping activations on the device is the
// next step.
#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cuda_check.hpp"
#include "epwa/backend.hpp"
#include "epwa/config.hpp"
#include "epwa/ops.hpp"
#include "kernels.hpp"

namespace epwa::cuda {
namespace {

// A layer's KV cache on the device: rows [0, valid) equal the host cache's.
struct KvMirror {
  DeviceBuffer k, v;
  int64_t capacity = 0, valid = 0;
};

struct Scratch : BackendScratch {
  cudaStream_t stream{};
  RopeTable rope;  // the CPU's table, so that both backends rotate by the same cos/sin
  DeviceBuffer cos, sin;
  int64_t rope_positions = 0;  // positions of the table on the device
  DeviceBuffer x, y, g, u, out, topk, w, q, att, scores, grow_k, grow_v;
  std::map<std::pair<int32_t, int32_t>, KvMirror> kv;  // by (sequence, layer)

  Scratch(int64_t head_dim, float theta) : rope(head_dim, theta) {
    EPWA_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  ~Scratch() override { cudaStreamDestroy(stream); }
  void sync() const { EPWA_CUDA(cudaStreamSynchronize(stream)); }

  template <typename T>
  T* upload(DeviceBuffer& b, const T* host, int64_t count) {
    T* d = b.get<T>(static_cast<size_t>(count) * sizeof(T));
    if (count > 0)
      EPWA_CUDA(cudaMemcpyAsync(d, host, static_cast<size_t>(count) * sizeof(T),
                                cudaMemcpyHostToDevice, stream));
    return d;
  }
  void download(float* host, const float* dev, int64_t count) {
    if (count > 0)
      EPWA_CUDA(cudaMemcpyAsync(host, dev, static_cast<size_t>(count) * sizeof(float),
                                cudaMemcpyDeviceToHost, stream));
  }
};

// The routed experts of one layer on the device: a row pointer per expert for each matrix.
struct ExpertTable {
  DeviceBuffer ptrs;  // gate[E], up[E], down[E]
  DType gate_t, up_t, down_t;
  int64_t gate_rb, up_rb, down_rb;
  int64_t experts;
  const uint8_t* const* gate() const { return ptrs.data<const uint8_t*>(); }
  const uint8_t* const* up() const { return gate() + experts; }
  const uint8_t* const* down() const { return gate() + 2 * experts; }
};

int64_t row_bytes(const TensorView& t) {
  return dtype_bytes(t.dtype, t.cols());
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, std::string description)
      : device_(device), description_(std::move(description)) {}

  std::string_view name() const override { return "cuda"; }
  std::string device() const override { return description_; }
  bool supports(BackendOp, DType) const override { return true; }

  std::unique_ptr<BackendScratch> make_scratch(const ModelConfig& c) const override {
    EPWA_CUDA(cudaSetDevice(device_));
    return std::make_unique<Scratch>(c.head_dim, c.rope_theta);
  }

  void reserve(BackendScratch& bs, int64_t positions) const override {
    Scratch& s = cast(bs);
    if (positions <= s.rope_positions) return;
    s.rope.ensure(positions);
    const auto cos = s.rope.cos_table(), sin = s.rope.sin_table();
    s.upload(s.cos, cos.data(), static_cast<int64_t>(cos.size()));
    s.upload(s.sin, sin.data(), static_cast<int64_t>(sin.size()));
    s.sync();
    s.rope_positions = s.rope.cached_positions();
  }

  void prepare(std::span<const TensorView* const> ws) const override {
    EPWA_CUDA(cudaSetDevice(device_));
    std::lock_guard lock(mu_);
    for (const TensorView* w : ws)
      if (!w->data.empty()) weight_locked(*w);
    EPWA_CUDA(cudaDeviceSynchronize());
  }

  void linear(std::span<const TensorView* const> ws, const float* x, int64_t n, int64_t cols,
              std::span<float* const> ys, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    const float* dx = s.upload(s.x, x, n * cols);
    for (size_t i = 0; i < ws.size(); ++i) {
      check_cols(*ws[i], cols);
      float* dy = s.y.get<float>(static_cast<size_t>(n * ws[i]->rows()) * sizeof(float));
      cuda::linear(matrix(*ws[i]), dx, n, dy, s.stream);
      s.download(ys[i], dy, n * ws[i]->rows());
    }
    s.sync();
  }

  void expert_ffn(const ExpertMatrices& X, int64_t width, const Routing& r, const float* x,
                  int64_t n, int64_t d, float* out, BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    const ExpertTable& t = experts(X, width, d);
    const int64_t slots = n * r.k;
    for (int64_t i = 0; i < slots; ++i)
      if (r.topk[i] < 0 || r.topk[i] >= t.experts)
        throw Error("expert_ffn: expert " + std::to_string(r.topk[i]) + " out of range (" +
                    std::to_string(t.experts) + " experts)");
    const float* dx = s.upload(s.x, x, n * d);
    const int32_t* dk = s.upload(s.topk, r.topk, slots);
    const float* dw = s.upload(s.w, r.weights, slots);
    float* g = s.g.get<float>(static_cast<size_t>(slots * width) * sizeof(float));
    float* u = s.u.get<float>(static_cast<size_t>(slots * width) * sizeof(float));
    float* y = s.y.get<float>(static_cast<size_t>(slots * d) * sizeof(float));
    float* o = s.out.get<float>(static_cast<size_t>(n * d) * sizeof(float));
    expert_linear(t.gate(), t.gate_t, width, d, t.gate_rb, dk, slots, r.k, true, dx, g, s.stream);
    expert_linear(t.up(), t.up_t, width, d, t.up_rb, dk, slots, r.k, true, dx, u, s.stream);
    swiglu(g, u, slots * width, s.stream);
    expert_linear(t.down(), t.down_t, d, width, t.down_rb, dk, slots, r.k, false, g, y, s.stream);
    combine_experts(y, dk, dw, n, r.k, d, o, s.stream);
    s.download(out, o, n * d);
    s.sync();
  }

  void ffn(const TensorView& gate_w, const TensorView& down_w, const TensorView& up_w,
           int64_t width, const float* x, int64_t n, int64_t d, float* out,
           BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    check_shape(gate_w, width, d);
    check_shape(up_w, width, d);
    check_shape(down_w, d, width);
    const float* dx = s.upload(s.x, x, n * d);
    float* g = s.g.get<float>(static_cast<size_t>(n * width) * sizeof(float));
    float* u = s.u.get<float>(static_cast<size_t>(n * width) * sizeof(float));
    float* o = s.out.get<float>(static_cast<size_t>(n * d) * sizeof(float));
    cuda::linear(matrix(gate_w), dx, n, g, s.stream);
    cuda::linear(matrix(up_w), dx, n, u, s.stream);
    swiglu(g, u, n * width, s.stream);
    cuda::linear(matrix(down_w), g, n, o, s.stream);
    s.download(out, o, n * d);
    s.sync();
  }

  void rmsnorm(const float* x, int64_t n, int64_t d, const TensorView& w, float eps, float* out,
               BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    if (w.numel() != d)
      throw Error("rmsnorm: tensor '" + w.name + "' has " + std::to_string(w.numel()) +
                  " values, rows have " + std::to_string(d));
    const float* dx = s.upload(s.x, x, n * d);
    float* o = s.out.get<float>(static_cast<size_t>(n * d) * sizeof(float));
    cuda::rmsnorm(dx, n, d, weight(w), w.dtype, eps, o, s.stream);
    s.download(out, o, n * d);
    s.sync();
  }

  void rope(float* x, int64_t n, int64_t heads, int64_t stride, int64_t p0,
            BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    if (n == 0) return;
    const int64_t hd = s.rope.head_dim();
    reserve(s, p0 + n);
    const int64_t count = (n - 1) * stride + heads * hd;
    float* dx = s.upload(s.x, static_cast<const float*>(x), count);
    cuda::rope(dx, n, heads, stride, hd, p0, s.cos.data<float>(), s.sin.data<float>(), s.stream);
    s.download(x, dx, count);
    s.sync();
  }

  void attention(const float* q, const float* k, const float* v, int64_t n, int64_t p0, int64_t nh,
                 int64_t nkv, int64_t hd, const KvLayer& kv, float* att,
                 BackendScratch& bs) const override {
    Scratch& s = cast(bs);
    const int64_t kvdim = nkv * hd, qdim = nh * hd;
    if (p0 + n > kv.capacity)
      throw Error("attention: positions " + std::to_string(p0 + n) + " exceed the cache's " +
                  std::to_string(kv.capacity));
    // The host cache gets the rows too: it stays the Context's record (forks copy it).
    std::copy_n(k, n * kvdim, kv.k + p0 * kvdim);
    std::copy_n(v, n * kvdim, kv.v + p0 * kvdim);
    KvMirror& m = s.kv[{kv.sequence, kv.layer}];
    const size_t row = static_cast<size_t>(kvdim) * sizeof(float);
    if (m.capacity < kv.capacity) {  // the host cache grew: grow the copy, keeping its rows
      float* nk = s.grow_k.get<float>(kv.capacity * row);
      float* nv = s.grow_v.get<float>(kv.capacity * row);
      if (m.valid > 0) {
        EPWA_CUDA(cudaMemcpyAsync(nk, m.k.data<float>(), m.valid * row, cudaMemcpyDeviceToDevice,
                                  s.stream));
        EPWA_CUDA(cudaMemcpyAsync(nv, m.v.data<float>(), m.valid * row, cudaMemcpyDeviceToDevice,
                                  s.stream));
      }
      std::swap(m.k, s.grow_k);
      std::swap(m.v, s.grow_v);
      m.capacity = kv.capacity;
    }
    float* dk = m.k.data<float>();
    float* dv = m.v.data<float>();
    // Rows the device has not seen (a forked context's history): from the host cache.
    const int64_t from = std::min(m.valid, p0);
    const int64_t rows = p0 + n - from;
    EPWA_CUDA(cudaMemcpyAsync(dk + from * kvdim, kv.k + from * kvdim, rows * row,
                              cudaMemcpyHostToDevice, s.stream));
    EPWA_CUDA(cudaMemcpyAsync(dv + from * kvdim, kv.v + from * kvdim, rows * row,
                              cudaMemcpyHostToDevice, s.stream));
    m.valid = p0 + n;
    const float* dq = s.upload(s.q, q, n * qdim);
    float* da = s.att.get<float>(static_cast<size_t>(n * qdim) * sizeof(float));
    // Queries in chunks whose scores fit in 256 MiB (a long prompt's n x heads x keys would not).
    const int64_t per_row = nh * (p0 + n);
    const int64_t chunk = std::clamp<int64_t>((int64_t{64} << 20) / per_row, 1, n);
    float* scores = s.scores.get<float>(static_cast<size_t>(chunk * per_row) * sizeof(float));
    for (int64_t i0 = 0; i0 < n; i0 += chunk)
      cuda::attention(dq + i0 * qdim, dk, dv, std::min(chunk, n - i0), p0 + i0, nh, nkv, hd, scores,
                      da + i0 * qdim, s.stream);
    s.download(att, da, n * qdim);
    s.sync();
  }

 private:
  static Scratch& cast(BackendScratch& s) { return static_cast<Scratch&>(s); }

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
    return weights_.emplace(t.data.data(), std::move(b)).first->second.data<const uint8_t>();
  }
  DevMatrix matrix(const TensorView& t) const {
    return {weight(t), t.dtype, t.rows(), t.cols(), row_bytes(t)};
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
                  X.gate[0].dtype,
                  X.up[0].dtype,
                  X.down[0].dtype,
                  row_bytes(X.gate[0]),
                  row_bytes(X.up[0]),
                  row_bytes(X.down[0]),
                  ne};
    EPWA_CUDA(cudaMemcpy(t.ptrs.get(ptrs.size() * sizeof(void*)), ptrs.data(),
                         ptrs.size() * sizeof(void*), cudaMemcpyHostToDevice));
    return tables_.emplace(X.gate.data(), std::move(t)).first->second;
  }

  int device_;
  std::string description_;
  mutable std::mutex mu_;
  mutable std::unordered_map<const std::byte*, DeviceBuffer> weights_;
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
  cudaDeviceProp p{};
  EPWA_CUDA(cudaGetDeviceProperties(&p, 0));
  const double gib = static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024 * 1024);
  char desc[512];
  std::snprintf(desc, sizeof desc, "cuda:0 (%s, %.0f GiB, sm_%d%d)", p.name, gib, p.major, p.minor);
  return std::make_shared<cuda::CudaBackend>(0, desc);
}

}  // namespace epwa
