// One row of a stored table (an embedding row, a bias, a norm or router row) as f32.
#pragma once
#include <cstdint>

#include "epwa/tensor.hpp"

namespace epwa {

// Throws Error naming the tensor when the row is out of range.
void table_row(const TensorView& w, int64_t row, float* out);

}  // namespace epwa
