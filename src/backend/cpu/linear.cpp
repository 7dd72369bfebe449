#include "linear.hpp"

#include <algorithm>
#include <string>

#include "epwa/error.hpp"
#include "epwa/ops.hpp"
#include "epwa/thread_scratch.hpp"

namespace epwa {

namespace {
bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

// Rows per parallel chunk of a decode job: at least ~16 KB of weights.
int64_t row_grain(const TensorView& w) {
  return std::max<int64_t>(16, (16 << 10) / std::max<int64_t>(dtype_bytes(w.dtype, w.cols()), 1));
}
}  // namespace

void LinearInput::prepare(DType wtype, const float* x, int64_t n, int64_t cols, ThreadPool& pool) {
  if (n < 0 || cols <= 0)
    throw Error("linear input: " + std::to_string(n) + " rows of " + std::to_string(cols) +
                " values");
  wtype_ = wtype;
  x_ = x;
  n_ = n;
  cols_ = cols;
  quantized_ = !is_float(wtype);
  if (!quantized_) return;
  if (static_cast<int64_t>(packed_.size()) < n) packed_.resize(static_cast<size_t>(n));
  tiles_.reserve(wtype, cols, n >= 2 ? n : 0, best_isa());
  // Rows are packed (and repacked for the tiles) independently: a prompt's rows are spread over
  // the pool.
  pool.parallel_for(
      n,
      [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          packed_[i].pack(wtype, {x + i * cols, static_cast<size_t>(cols)});
          if (tiles_.tiled()) tiles_.set(i, packed_[i]);
        }
      },
      32);
}

void check_linear(const TensorView& w, const LinearInput& in) {
  // Messages are built only on failure: this runs for every matrix of every token.
  if (w.dtype != in.wtype())
    throw Error("linear: tensor '" + w.name + "' has type " + std::string(dtype_name(w.dtype)) +
                ", its input was prepared for " + std::string(dtype_name(in.wtype())));
  if (w.shape.size() != 2 || w.cols() != in.cols())
    throw Error("linear: tensor '" + w.name + "' has " + std::to_string(w.cols()) +
                " columns, its input has " + std::to_string(in.cols()));
  if (static_cast<int64_t>(w.data.size()) != dtype_bytes(w.dtype, w.rows() * w.cols()))
    throw Error("linear: tensor '" + w.name + "' has " + std::to_string(w.data.size()) +
                " bytes of data for its shape");
  if (in.rows() <= 0) throw Error("linear: no input row for tensor '" + w.name + "'");
}

void linear(const TensorView& w, const LinearInput& in, float* y, ThreadPool& pool) {
  check_linear(w, in);
  const int64_t n = in.rows();
  if (!in.quantized()) {
    matmul(w, in.x(), n, y, pool);
    return;
  }
  // Quantized weights: integer dot products against the packed rows; weight rows are split across
  // the pool, and a prompt's rows go through the multi-vector kernel in one pass over W.
  const int64_t rows = w.rows();
  const int64_t row_bytes = dtype_bytes(w.dtype, w.cols());
  const std::span<const PackedVector> packed = in.packed();
  // A prompt's chunks are at least kPromptRows rows: the multi-vector kernels without tiles read
  // every vector once per call (and the tiles used to repack them once per call: 12 % of an olmoe
  // pp512 profile with 32-row chunks, docs/history/PERF-issue9.md, "Profiles"; now the input's
  // tiles() are repacked once). The row split does not change any value.
  constexpr int64_t kPromptRows = 128;
  const TiledVectors& tiles = in.tiles();
  pool.parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        if (n == 1)
          vec_dot_rows(w.data.data(), row_bytes, packed[0], r0, r1, y);
        else if (tiles.tiled())
          vec_dot_rows_multi(w.data.data(), row_bytes, tiles, r0, r1, y, rows);
        else
          vec_dot_rows_multi(w.data.data(), row_bytes, packed, r0, r1, y, rows);
      },
      n == 1 ? 16 : kPromptRows);
}

void linear(const TensorView& w, const float* x, int64_t n, float* y) {
  thread_local ThreadScratch<LinearInput> in_tls;
  LinearInput& in = *in_tls;
  in.prepare(w.dtype, x, n, w.cols());
  linear(w, in, y);
}

void linear_rows(const TensorView& w, const LinearInput& in, int64_t r0, int64_t r1, float* y) {
  const int64_t cols = w.cols();
  const int64_t row_bytes = dtype_bytes(w.dtype, cols);
  if (in.quantized()) {
    vec_dot_rows(w.data.data(), row_bytes, in.packed()[0], r0, r1, y);
    return;
  }
  // Called inside a pool job, matvec runs on this thread.
  matvec(w, r0, r1, {in.x(), static_cast<size_t>(cols)}, {y + r0, static_cast<size_t>(r1 - r0)});
}

void linear_tasks(std::span<const RowTask> tasks, ThreadPool& pool) {
  int64_t total = 0, grain = 16;
  for (const RowTask& t : tasks) {
    check_linear(*t.w, *t.in);
    total += t.w->rows();
    grain = std::max(grain, row_grain(*t.w));
  }
  pool.parallel_for(
      total,
      [&](int64_t b, int64_t e) {
        int64_t base = 0;  // first global row of task t
        for (const RowTask& t : tasks) {
          const int64_t rows = t.w->rows();
          const int64_t r0 = std::max(b, base) - base, r1 = std::min(e, base + rows) - base;
          if (r0 < r1) linear_rows(*t.w, *t.in, r0, r1, t.y);
          base += rows;
          if (base >= e) break;
        }
      },
      grain);
}

}  // namespace epwa
