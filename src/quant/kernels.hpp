// Per-ISA row kernels behind vec_dot_packed / vec_dot_rows. Internal: tests and benches call them
// directly to compare every path with the scalar one.
#pragma once
#include <cstddef>

#include "epwa/quant.hpp"

namespace epwa::quant {

// Dot product of one stored row with a packed vector of the matching format (length x.size()).
using RowDot = float (*)(const std::byte* wrow, const PackedVector& x);

// The kernel for weight type t on `isa`; throws Error when that ISA is not available here.
RowDot row_dot(DType t, KernelIsa isa);

// Each ISA's table; nullptr entries never occur for Scalar. avx2 returns nullptr when the build
// has no x86 AVX2 code.
RowDot row_dot_scalar(DType t);
RowDot row_dot_avx2(DType t);

}  // namespace epwa::quant
