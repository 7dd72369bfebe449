// GGUF block formats: conversion of rows to and from f32, and dot products of stored weight rows
// with f32 activations. Layouts follow ggml's (docs/QUANT.md), so GGUF files load as they are.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "epwa/tensor.hpp"

namespace epwa {

// Converts `n` stored elements of type `t` (n a multiple of its block size) to f32. Every DType.
void dequantize_row(DType t, const std::byte* src, float* dst, int64_t n);

// Converts `n` f32 values to type `t`, writing dtype_bytes(t, n) bytes. Every DType: the float
// types round to nearest even; Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 use ggml's reference rounding so that the
// files match llama.cpp's; the K-quants use our own scale search (same layout, any reader works).
void quantize_row(DType t, const float* src, std::byte* dst, int64_t n);

// Scalar reference dot product of one stored row with f32 `x`: dequantizes block by block and
// accumulates in double. Slow; the yardstick for the fast kernels.
float vec_dot(DType wtype, const std::byte* wrow, const float* x, int64_t n);

// Instruction sets the fast kernels exist for; each level includes the one before it.
// Avx512Vnni runs the AVX2 kernels except the prompt (multi-vector) products of the integer
// formats, which use `vpdpbusd` on 256-bit registers (AVX-512 VNNI + VL); results stay
// bit-identical to the AVX2 ones.
enum class KernelIsa : uint8_t { Scalar, Avx2, Avx512Vnni };
// The best level this CPU and build can run (Avx2 needs AVX2+FMA+F16C; Avx512Vnni also AVX-512 F,
// BW, VL and VNNI), capped by the environment variable EPWA_ISA=scalar|avx2|avx512vnni if set.
KernelIsa best_isa();
bool isa_available(KernelIsa isa);  // this CPU and build can run it (ignores EPWA_ISA)
std::string_view isa_name(KernelIsa isa);

// How activations are packed for a weight type: f32 for float weights and MXFP4 (whose values are
// exact in f32: GPT-OSS's released experts keep their reference numbers); int8 blocks of 32 with an
// f32 scale and integer sum (Q8_0 style) for Q8_0/Q4_0/Q4_1/Q5_0/Q5_1; int8 super-blocks of 256
// with an f32 scale and sums of each 16 (ggml's Q8_K) for Q4_K/Q5_K/Q6_K.
enum class ActFormat : uint8_t { F32, Q8Block32, Q8Block256 };
ActFormat act_format(DType wtype);

// An activation vector prepared once for many rows of one weight type (decode: quantize x once,
// then integer dot products against every row). pack() reuses its buffers: no allocation when the
// length does not grow.
class PackedVector {
 public:
  void pack(DType wtype, std::span<const float> x);  // throws Error when x.size() is not a
                                                     // multiple of the block size
  DType wtype() const { return wtype_; }
  ActFormat format() const { return format_; }
  int64_t size() const { return n_; }

  // Views for the kernels. f32(): the values (ActFormat::F32). qs(): int8 values; scales(): one per
  // block (32 or 256); sums(): per block of 32 (Q8Block32) or per 16 (Q8Block256), sum of qs.
  const float* f32() const { return f32_.data(); }
  const int8_t* qs() const { return qs_.data(); }
  const float* scales() const { return scales_.data(); }
  const int32_t* sums() const { return sums_.data(); }

 private:
  DType wtype_ = DType::F32;
  ActFormat format_ = ActFormat::F32;
  int64_t n_ = 0;
  std::vector<float> f32_;
  std::vector<int8_t> qs_;
  std::vector<float> scales_;
  std::vector<int32_t> sums_;
};

// Fast dot product of one stored row (x.size() elements, type x.wtype()) with a packed vector,
// on best_isa() or the given one.
float vec_dot_packed(const std::byte* wrow, const PackedVector& x);
float vec_dot_packed(const std::byte* wrow, const PackedVector& x, KernelIsa isa);

// Matrix-vector product over a row range, for callers that split rows across threads:
// out[r] = dot(row r, x) for r in [row_begin, row_end), row r starting at w + r * row_bytes.
// `out` is indexed by absolute row. The weight type is x.wtype().
void vec_dot_rows(const std::byte* w, int64_t row_bytes, const PackedVector& x, int64_t row_begin,
                  int64_t row_end, float* out);
void vec_dot_rows(const std::byte* w, int64_t row_bytes, const PackedVector& x, int64_t row_begin,
                  int64_t row_end, float* out, KernelIsa isa);

// The same for several vectors of one weight type (prompt processing): out[v * out_stride + r] =
// dot(row r, xs[v]). Vectors are taken in groups that fit in L2, so each weight row is read from
// memory once per group instead of once per vector. Results are bit-identical to vec_dot_rows.
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes, std::span<const PackedVector> xs,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride);
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes, std::span<const PackedVector> xs,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride,
                        KernelIsa isa);
// The same with the vectors given by address, in any order (a prompt's expert reads its tokens'
// rows out of the layer's packed rows without copying them).
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes,
                        std::span<const PackedVector* const> xs, int64_t row_begin, int64_t row_end,
                        float* out, int64_t out_stride);
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes,
                        std::span<const PackedVector* const> xs, int64_t row_begin, int64_t row_end,
                        float* out, int64_t out_stride, KernelIsa isa);

// Vectors repacked once for the prompt tiles of their weight type, shared by many
// vec_dot_rows_multi calls (a prompt's expert: its gate and up matrices, in tasks of a few hundred
// rows each, read the same vectors). tiled() is false where the type has no such tiles on the
// kernel level (callers then pass the vectors themselves). repack() reuses the buffer.
class TiledVectors {
 public:
  void repack(std::span<const PackedVector* const> xs, KernelIsa isa);
  void repack(std::span<const PackedVector* const> xs);  // best_isa()
  // The same in two steps, for callers that pack and repack rows in parallel: reserve() sizes the
  // buffer for `count` vectors of n values packed for wtype, then set(v, x) repacks vector v
  // (distinct v from any threads; nothing to do unless tiled()).
  void reserve(DType wtype, int64_t n, int64_t count, KernelIsa isa);
  void set(int64_t v, const PackedVector& x);
  bool tiled() const { return format_ != nullptr; }
  DType wtype() const { return wtype_; }
  int64_t size() const { return n_; }  // values per vector
  int64_t count() const { return count_; }

 private:
  friend void vec_dot_rows_multi(const std::byte*, int64_t, const TiledVectors&, int64_t, int64_t,
                                 float*, int64_t);
  const void* format_ = nullptr;
  DType wtype_ = DType::F32;
  int64_t n_ = 0, count_ = 0, stride_ = 0;
  std::vector<uint8_t> buf_;
};
// vec_dot_rows_multi on vectors repacked by TiledVectors (xs.tiled()): the same values to the bit
// as the call on the vectors themselves, on the kernel level they were repacked for.
void vec_dot_rows_multi(const std::byte* w, int64_t row_bytes, const TiledVectors& xs,
                        int64_t row_begin, int64_t row_end, float* out, int64_t out_stride);

// Convenience single-thread y = W x for a contiguous {rows, cols} matrix of type wtype.
void matvec(DType wtype, const std::byte* w, int64_t rows, int64_t cols, const float* x, float* y);

}  // namespace epwa
