#include "table_row.hpp"

#include "epwa/error.hpp"
#include "epwa/quant.hpp"

namespace epwa {

void table_row(const TensorView& w, int64_t row, float* out) {
  const int64_t cols = w.cols();
  if (row < 0 || row >= w.rows())
    throw Error("tensor " + w.name + ": row " + std::to_string(row) + " out of range");
  const int64_t row_bytes = dtype_bytes(w.dtype, cols);
  dequantize_row(w.dtype, w.data.data() + row * row_bytes, out, cols);
}

}  // namespace epwa
