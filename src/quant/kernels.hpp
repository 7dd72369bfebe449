// Per-ISA row kernels behind vec_dot_packed / vec_dot_rows. Internal: tests and benches call them
// directly to compare every path with the scalar one.
#pragma once
#include <cstddef>

#include "epwa/platform.hpp"
#include "epwa/quant.hpp"

namespace epwa::quant {

// Dot product of one stored row with a packed vector of the matching format (length x.size()).
using RowDot = float (*)(const std::byte* wrow, const PackedVector& x);

// Dot products of `kRowsAtOnce` rows (row r at w + r * row_bytes) with x, into out[0..kRowsAtOnce).
// Each row's result is bit-identical to RowDot's for that row.
inline constexpr int kRowsAtOnce = 4;
using RowsDot = void (*)(const std::byte* w, int64_t row_bytes, const PackedVector& x, float* out);

// One row against kVectorsAtOnce vectors xs[0..4), into out[0..4); each result bit-identical to
// RowDot's for that vector.
inline constexpr int kVectorsAtOnce = 4;
using RowMultiDot = void (*)(const std::byte* wrow, const PackedVector* const* xs, float* out);

// The kernel for weight type t on `isa`; throws Error when that ISA is not available here.
RowDot row_dot(DType t, KernelIsa isa);

// Each ISA's table; nullptr entries never occur for Scalar. avx2 returns nullptr when the build
// has no x86 AVX2 code.
RowDot row_dot_scalar(DType t);
RowDot row_dot_avx2(DType t);
RowsDot rows4_dot_avx2(DType t);      // nullptr where there is no multi-row kernel
RowMultiDot row_dot4v_avx2(DType t);  // nullptr where there is no multi-vector kernel

// Tiled multi-vector kernel (gemm_avx2.cpp, prompt processing): vec_dot_rows_multi for rows
// [row_begin, row_end) and every vector, bit-identical to vec_dot_rows (exact integer block sums,
// then the decode kernels' float steps in the same order). nullptr for types it does not cover.
using RowsMultiDot = void (*)(const std::byte* w, int64_t row_bytes,
                              std::span<const PackedVector* const> xs, int64_t row_begin,
                              int64_t row_end, float* out, int64_t out_stride);
RowsMultiDot gemm_avx2(DType t);
// The same contract with AVX-512 VNNI tiles (gemm_avx512.cpp): nullptr for types it does not cover
// and when the build has no AVX-512 code; callers check the CPU (isa_available). `vbmi` picks the
// Q4_0 tiles that unpack weights by byte permutes (callers check cpu_features().avx512vbmi).
RowsMultiDot gemm_avx512vnni(DType t, bool vbmi);
inline RowsMultiDot gemm_avx512vnni(DType t) {
  return gemm_avx512vnni(t, cpu_features().avx512vbmi);
}
// The tile formats behind those (gemm_layout.hpp), for vectors repacked once and shared by many
// calls (TiledVectors): nullptr where a type has no format-driven tiles on the level (MXFP4's
// tiles are its own). run_tile_passes is run_tiles on vectors already repacked, `stride` bytes
// apart; both drivers run the same passes, so the results are the same to the bit.
struct TileFormat;
const TileFormat* tile_format_avx2(DType t);
const TileFormat* tile_format_avx512vnni(DType t, bool vbmi);
int64_t tile_stride(const TileFormat& f, int64_t n);  // repacked bytes of a vector of n values
void tile_repack(const TileFormat& f, const PackedVector& x, uint8_t* dst);
void run_tile_passes(const TileFormat& f, const std::byte* w, int64_t row_bytes, const uint8_t* y,
                     int64_t count, int64_t stride, int64_t n, int64_t row_begin, int64_t row_end,
                     float* out, int64_t out_stride);
// Decode of rows [row_begin, row_end) against one vector with AVX-512 VNNI (gemm_avx512.cpp):
// out[r] bit-identical to RowDot's (the AVX2 kernel's) for every row. nullptr for types it does
// not cover and when the build has no AVX-512 code; callers check the CPU (isa_available).
using RangeDot = void (*)(const std::byte* w, int64_t row_bytes, const PackedVector& x,
                          int64_t row_begin, int64_t row_end, float* out);
RangeDot rows_dot_avx512vnni(DType t);
// It repacks the vector once per call (for 4096 values about one row's work), so shorter ranges
// keep the AVX2 kernel.
inline constexpr int64_t kVnniDecodeMinRows = 4;
// MXFP4 on the AVX-512 VNNI level (mxfp4_avx512.cpp): one row, a row range and the prompt tiles,
// all with one arithmetic (512-bit accumulators), so the three agree to the bit. nullptr when the
// build has no AVX-512 code; callers check the CPU (isa_available).
RowDot mxfp4_row_avx512();
RangeDot mxfp4_rows_avx512();
RowsMultiDot mxfp4_gemm_avx512();

// Quantises n values (n a multiple of `block`) to int8: per `block` values d = amax / 127 and
// q = x / d rounded to nearest even; one sum of q per `sum_group` values. Both versions give
// identical bytes; the AVX2 one returns false when the build has no AVX2 code.
void pack_q8_scalar(const float* x, int64_t n, int block, int sum_group, int8_t* qs, float* scales,
                    int32_t* sums);
bool pack_q8_avx2(const float* x, int64_t n, int block, int sum_group, int8_t* qs, float* scales,
                  int32_t* sums);

}  // namespace epwa::quant
