// The CPU backend's linear layers over rows of activations: which kernel library serves each
// weight type (quant/ for the block types, ops/ for the float types).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "epwa/quant.hpp"
#include "epwa/tensor.hpp"
#include "epwa/thread_pool.hpp"

namespace epwa {

// Activation rows prepared once for the weights of one type, shared by every matrix of that type
// that reads them (Q, K and V; an expert's gate and up): packed into 8-bit blocks for the quantized
// kernels, read as they are by the float ones. Buffers are kept between uses: no allocation once
// they have grown.
class LinearInput {
 public:
  // n rows of `cols` values at x; x must stay valid and unchanged while the input is used.
  void prepare(DType wtype, const float* x, int64_t n, int64_t cols,
               ThreadPool& pool = ThreadPool::global());
  DType wtype() const { return wtype_; }
  const float* x() const { return x_; }
  int64_t rows() const { return n_; }
  int64_t cols() const { return cols_; }
  bool quantized() const { return quantized_; }
  std::span<const PackedVector> packed() const { return {packed_.data(), static_cast<size_t>(n_)}; }
  // Two rows or more, repacked once for the prompt tiles of the type (where it has them), shared
  // by every row chunk of every matrix reading this input.
  const TiledVectors& tiles() const { return tiles_; }

 private:
  DType wtype_ = DType::F32;
  const float* x_ = nullptr;
  int64_t n_ = 0, cols_ = 0;
  bool quantized_ = false;
  std::vector<PackedVector> packed_;
  TiledVectors tiles_;
};

// y[n x w.rows()] = x[n x w.cols()] * w^T with x prepared for w's type.
void linear(const TensorView& w, const LinearInput& in, float* y,
            ThreadPool& pool = ThreadPool::global());
// The same, preparing x on the calling thread's own input (one use).
void linear(const TensorView& w, const float* x, int64_t n, float* y);

// Rows [r0, r1) of W times the first prepared row, on the calling thread: y[r] for r in [r0, r1)
// (y indexed by absolute row). For jobs that cover several matrices; the values are bit-identical
// to linear() with one row.
void linear_rows(const TensorView& w, const LinearInput& in, int64_t r0, int64_t r1, float* y);

// y = W x for several matrices of one token, as one parallel job: their rows are split across the
// pool together, so that small matrices do not each pay a job's start and end.
struct RowTask {
  const TensorView* w;
  const LinearInput* in;
  float* y;
};
void linear_tasks(std::span<const RowTask> tasks, ThreadPool& pool = ThreadPool::global());

// Checks that `in` (one row at least) fits W: type, columns, and W's byte size for its shape.
void check_linear(const TensorView& w, const LinearInput& in);

}  // namespace epwa
