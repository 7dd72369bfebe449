// Element j of a stored weight row, for every storage type, on the device. The block layouts are
// GGUF's (src/quant/blocks.hpp states them); each formula is the CPU's dequantize_row's for that
// element (src/quant/dequantize.cpp).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "epwa/tensor.hpp"

namespace epwa::cuda {

__device__ __forceinline__ float f16_at(const uint8_t* p) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(p[0] | (p[1] << 8))));
}
__device__ __forceinline__ uint32_t u32_at(const uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
// The low or high nibble that holds element i (0..31) of a Q4_0/Q4_1/Q5 block's 16 bytes.
__device__ __forceinline__ int nibble(const uint8_t* qs, int i) {
  return i < 16 ? qs[i] & 0xF : qs[i - 16] >> 4;
}
// Q4_K/Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes.
__device__ __forceinline__ void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

template <DType T>
__device__ __forceinline__ float weight_at(const uint8_t* row, int64_t j);

template <>
__device__ __forceinline__ float weight_at<DType::F32>(const uint8_t* row, int64_t j) {
  return reinterpret_cast<const float*>(row)[j];
}
template <>
__device__ __forceinline__ float weight_at<DType::F16>(const uint8_t* row, int64_t j) {
  return f16_at(row + 2 * j);
}
template <>
__device__ __forceinline__ float weight_at<DType::BF16>(const uint8_t* row, int64_t j) {
  return __uint_as_float(static_cast<uint32_t>(row[2 * j] | (row[2 * j + 1] << 8)) << 16);
}
template <>
__device__ __forceinline__ float weight_at<DType::Q8_0>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 5) * 34;
  return f16_at(b) * static_cast<float>(static_cast<int8_t>(b[2 + (j & 31)]));
}
template <>
__device__ __forceinline__ float weight_at<DType::Q4_0>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 5) * 18;
  return f16_at(b) * static_cast<float>(nibble(b + 2, j & 31) - 8);
}
template <>
__device__ __forceinline__ float weight_at<DType::Q4_1>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 5) * 20;
  return f16_at(b) * static_cast<float>(nibble(b + 4, j & 31)) + f16_at(b + 2);
}
template <>
__device__ __forceinline__ float weight_at<DType::Q5_0>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 5) * 22;
  const int i = j & 31;
  const int q = nibble(b + 6, i) | static_cast<int>(((u32_at(b + 2) >> i) & 1u) << 4);
  return f16_at(b) * static_cast<float>(q - 16);
}
template <>
__device__ __forceinline__ float weight_at<DType::Q5_1>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 5) * 24;
  const int i = j & 31;
  const int q = nibble(b + 8, i) | static_cast<int>(((u32_at(b + 4) >> i) & 1u) << 4);
  return f16_at(b) * static_cast<float>(q) + f16_at(b + 2);
}
// Q4_K and Q5_K: each 64 elements (c = 0..3) are sub-blocks 2c (low nibbles of 32 bytes) and 2c+1
// (high nibbles); x = (d*sc)*q - dmin*m.
template <>
__device__ __forceinline__ float weight_at<DType::Q4_K>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 8) * 144;
  const int i = j & 255, c = i >> 6, hi = (i >> 5) & 1, l = i & 31;
  int sc, m;
  scale_min_k4(2 * c + hi, b + 4, sc, m);
  const uint8_t byte = b[16 + c * 32 + l];
  const int q = hi ? byte >> 4 : byte & 0xF;
  return f16_at(b) * static_cast<float>(sc) * static_cast<float>(q) -
         f16_at(b + 2) * static_cast<float>(m);
}
template <>
__device__ __forceinline__ float weight_at<DType::Q5_K>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 8) * 176;
  const int i = j & 255, c = i >> 6, hi = (i >> 5) & 1, l = i & 31, sub = 2 * c + hi;
  int sc, m;
  scale_min_k4(sub, b + 4, sc, m);
  const uint8_t byte = b[48 + c * 32 + l];
  const int q = (hi ? byte >> 4 : byte & 0xF) | (((b[16 + l] >> sub) & 1) << 4);
  return f16_at(b) * static_cast<float>(sc) * static_cast<float>(q) -
         f16_at(b + 2) * static_cast<float>(m);
}
// Q6_K: each 128 elements (h) are four quarters of 32 over 64 bytes of ql and 32 of qh.
template <>
__device__ __forceinline__ float weight_at<DType::Q6_K>(const uint8_t* row, int64_t j) {
  const uint8_t* b = row + (j >> 8) * 210;
  const int i = j & 255, h = i >> 7, quarter = (i >> 5) & 3, l = i & 31;
  const uint8_t* ql = b + h * 64;
  const uint8_t qh = b[128 + h * 32 + l];
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192 + h * 8);
  const uint8_t low = ql[l + (quarter & 1) * 32];
  const int q = ((quarter < 2 ? low & 0xF : low >> 4) | (((qh >> (2 * quarter)) & 3) << 4)) - 32;
  return f16_at(b + 208) * static_cast<float>(sc[(l >> 4) + 2 * quarter] * q);
}
// MXFP4 (17-byte blocks): e8m0 byte, then Q4_0's nibbles; the doubled e2m1 integer times
// 2^(e - 128) (quant::e8m0_half, ggml's halved scale).
template <>
__device__ __forceinline__ float weight_at<DType::MXFP4>(const uint8_t* row, int64_t j) {
  constexpr int8_t kValues[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  const uint8_t* b = row + (j >> 5) * 17;
  const uint32_t e = b[0];
  const float d = __uint_as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);
  return d * static_cast<float>(kValues[nibble(b + 1, j & 31)]);
}

}  // namespace epwa::cuda
