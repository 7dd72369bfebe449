#include "linear.hpp"

#include <vector>

#include "epwa/error.hpp"
#include "epwa/ops.hpp"
#include "epwa/quant.hpp"

namespace epwa {

namespace {
bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }
}  // namespace

void table_row(const TensorView& w, int64_t row, float* out) {
  const int64_t cols = w.cols();
  check(row >= 0 && row < w.rows(), "tensor " + w.name + ": row " + std::to_string(row) + " out of range");
  const int64_t row_bytes = dtype_bytes(w.dtype, cols);
  dequantize_row(w.dtype, w.data.data() + row * row_bytes, out, cols);
}

void linear(const TensorView& w, const float* x, int64_t n, float* y) {
  if (is_float(w.dtype)) {
    matmul(w, x, n, y);
    return;
  }
  // Quantized weights: quantize each activation row once, then integer dot products; rows are split
  // across the pool, and a prompt's rows go through the multi-vector kernel in one pass over W.
  const int64_t rows = w.rows(), cols = w.cols();
  const int64_t row_bytes = dtype_bytes(w.dtype, cols);
  std::vector<PackedVector> packed(n);
  for (int64_t i = 0; i < n; ++i) packed[i].pack(w.dtype, {x + i * cols, static_cast<size_t>(cols)});
  ThreadPool::global().parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        if (n == 1)
          vec_dot_rows(w.data.data(), row_bytes, packed[0], r0, r1, y);
        else
          vec_dot_rows_multi(w.data.data(), row_bytes, packed, r0, r1, y, rows);
      },
      16);
}

}  // namespace epwa
