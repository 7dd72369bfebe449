// The model's view of the kernels: a linear layer over n rows of activations. Keeps the graph code
// independent of which kernel library serves each weight type.
#pragma once
#include <cstdint>

#include "epwa/tensor.hpp"

namespace epwa {

// y[n x w.rows()] = x[n x w.cols()] * w^T
void linear(const TensorView& w, const float* x, int64_t n, float* y);
// One row of an embedding-like table as f32.
void table_row(const TensorView& w, int64_t row, float* out);

}  // namespace epwa
