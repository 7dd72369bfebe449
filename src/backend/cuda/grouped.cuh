// The device layout of Q4_0 and Q8_0 rows whose width is a multiple of 256 (kernels.hpp's kQ4_0x8
// and kQ8_0x8): each eight blocks of a row become their eight f16 scales (16 bytes), then their
// quants (16 or 32 bytes a block). A block's quants then sit 16-byte aligned, so a lane loads a
// whole block (32 weights) with one or two 16-byte loads, where the file's 18- and 34-byte blocks
// allow only 2-byte loads. Same bytes, same row size; only their order within a group differs.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels.hpp"
#include "weight_at.cuh"

namespace epwa::cuda {

template <DType T>
struct Grouped;
template <>
struct Grouped<kQ4_0x8> {
  static constexpr int kQuantBytes = 16, kGroupBytes = 8 * (2 + 16);
};
template <>
struct Grouped<kQ8_0x8> {
  static constexpr int kQuantBytes = 32, kGroupBytes = 8 * (2 + 32);
};

// Block c of a grouped row: its scale and the address of its quants.
template <DType T>
__device__ __forceinline__ const uint8_t* grouped_block(const uint8_t* row, int64_t c, float& d) {
  const uint8_t* g = row + (c >> 3) * Grouped<T>::kGroupBytes;
  const int b = static_cast<int>(c & 7);
  d = __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short*>(g) + b)));
  return g + 16 + b * Grouped<T>::kQuantBytes;
}

template <>
__device__ __forceinline__ float weight_at<kQ4_0x8>(const uint8_t* row, int64_t j) {
  float d;
  const uint8_t* qs = grouped_block<kQ4_0x8>(row, j >> 5, d);
  return d * static_cast<float>(nibble(qs, j & 31) - 8);
}
template <>
__device__ __forceinline__ float weight_at<kQ8_0x8>(const uint8_t* row, int64_t j) {
  float d;
  const uint8_t* qs = grouped_block<kQ8_0x8>(row, j >> 5, d);
  return d * static_cast<float>(static_cast<int8_t>(qs[j & 31]));
}

// A block's 32 weights as int8 values in eight ints: q[0..3] elements 0..15, q[4..7] 16..31 (four
// to an int, in order), and its scale.
struct Block32 {
  int q[8];
  float d;
};

template <DType T>
__device__ __forceinline__ void load_block(const uint8_t* row, int64_t c, Block32& w);

template <>
__device__ __forceinline__ void load_block<kQ4_0x8>(const uint8_t* row, int64_t c, Block32& w) {
  const uint4 v = __ldg(reinterpret_cast<const uint4*>(grouped_block<kQ4_0x8>(row, c, w.d)));
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // nibbles 0..15 less 8, byte by byte (-8..7 as int8)
    w.q[i] = static_cast<int>(__vsub4(u[i] & 0x0F0F0F0Fu, 0x08080808u));
    w.q[4 + i] = static_cast<int>(__vsub4((u[i] >> 4) & 0x0F0F0F0Fu, 0x08080808u));
  }
}
template <>
__device__ __forceinline__ void load_block<kQ8_0x8>(const uint8_t* row, int64_t c, Block32& w) {
  const auto* p = reinterpret_cast<const uint4*>(grouped_block<kQ8_0x8>(row, c, w.d));
  const uint4 a = __ldg(p), b = __ldg(p + 1);
  w.q[0] = static_cast<int>(a.x), w.q[1] = static_cast<int>(a.y);
  w.q[2] = static_cast<int>(a.z), w.q[3] = static_cast<int>(a.w);
  w.q[4] = static_cast<int>(b.x), w.q[5] = static_cast<int>(b.y);
  w.q[6] = static_cast<int>(b.z), w.q[7] = static_cast<int>(b.w);
}

// The byte j (0..3) of int v as a signed value.
__device__ __forceinline__ float sbyte(int v, int j) {
  return static_cast<float>(static_cast<int8_t>((v >> (8 * j)) & 0xFF));
}

}  // namespace epwa::cuda
