// Eight weights of a stored row at a time, for the types whose matrix-vector products decode whole
// blocks (kernels.cu): chunk c of a row holds the elements at p0..p0+3 and p1..p1+3. A warp's 32
// lanes take 32 consecutive chunks, so its loads of the row are contiguous, and each lane reads
// its activations as two float4s. The values are weight_at's (the CPU's dequantization).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

#include "weight_at.cuh"

namespace epwa::cuda {

template <DType T>
struct Chunk8 {
  static constexpr bool kFast = false;
};

template <>
struct Chunk8<DType::F32> {
  static constexpr bool kFast = true;
  __device__ static void load(const uint8_t* row, int64_t c, float w[8], int64_t& p0, int64_t& p1) {
    const float4* v = reinterpret_cast<const float4*>(row) + 2 * c;
    const float4 a = __ldg(v), b = __ldg(v + 1);
    w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
    p0 = 8 * c, p1 = 8 * c + 4;
  }
};

template <>
struct Chunk8<DType::F16> {
  static constexpr bool kFast = true;
  __device__ static void load(const uint8_t* row, int64_t c, float w[8], int64_t& p0, int64_t& p1) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(row) + c);
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&u[i]));
      w[2 * i] = f.x, w[2 * i + 1] = f.y;
    }
    p0 = 8 * c, p1 = 8 * c + 4;
  }
};

template <>
struct Chunk8<DType::BF16> {
  static constexpr bool kFast = true;
  __device__ static void load(const uint8_t* row, int64_t c, float w[8], int64_t& p0, int64_t& p1) {
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(row) + c);
    const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[2 * i] = __uint_as_float(u[i] << 16);
      w[2 * i + 1] = __uint_as_float(u[i] & 0xFFFF0000u);
    }
    p0 = 8 * c, p1 = 8 * c + 4;
  }
};

// Two bytes at a 2-byte-aligned address (the 18- and 34-byte blocks align no wider).
__device__ __forceinline__ uint32_t u16_at(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}

// Q8_0 (34-byte blocks): chunk c is eight consecutive int8s of block c / 4.
template <>
struct Chunk8<DType::Q8_0> {
  static constexpr bool kFast = true;
  __device__ static void load(const uint8_t* row, int64_t c, float w[8], int64_t& p0, int64_t& p1) {
    const uint8_t* b = row + (c >> 2) * 34;
    const int t = static_cast<int>(c & 3);
    const float d = __half2float(__ushort_as_half(static_cast<unsigned short>(u16_at(b))));
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t q = u16_at(b + 2 + 8 * t + 2 * i);
      w[2 * i] = d * static_cast<float>(static_cast<int8_t>(q & 0xFF));
      w[2 * i + 1] = d * static_cast<float>(static_cast<int8_t>(q >> 8));
    }
    p0 = (c >> 2) * 32 + 8 * t, p1 = p0 + 4;
  }
};

// Q4_0 (18-byte blocks): chunk c is bytes 4t..4t+3 of block c / 4 (t = c % 4), whose low nibbles
// are elements 4t..4t+3 and high nibbles elements 16+4t..16+4t+3.
template <>
struct Chunk8<DType::Q4_0> {
  static constexpr bool kFast = true;
  __device__ static void load(const uint8_t* row, int64_t c, float w[8], int64_t& p0, int64_t& p1) {
    const uint8_t* b = row + (c >> 2) * 18;
    const int t = static_cast<int>(c & 3);
    const float d = __half2float(__ushort_as_half(static_cast<unsigned short>(u16_at(b))));
    const uint32_t q = u16_at(b + 2 + 4 * t) | (u16_at(b + 4 + 4 * t) << 16);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      w[i] = d * static_cast<float>(static_cast<int>((q >> (8 * i)) & 0xF) - 8);
      w[4 + i] = d * static_cast<float>(static_cast<int>((q >> (8 * i + 4)) & 0xF) - 8);
    }
    p0 = (c >> 2) * 32 + 4 * t, p1 = p0 + 16;
  }
};

// MXFP4 (17-byte blocks: an e8m0 scale, then Q4_0's nibble order): chunk c is bytes 4t..4t+3 of
// block c / 4's nibbles, as Q4_0's; each nibble an e2m1 value (doubled, as weight_at's).
template <>
struct Chunk8<DType::MXFP4> {
  static constexpr bool kFast = true;
  __device__ static float value(uint32_t nib) {
    // Magnitudes 0, 1, 2, 3, 4, 6, 8, 12 as nibbles of one word; bit 3 the sign.
    const auto m = static_cast<float>((0xC8643210u >> (4 * (nib & 7))) & 0xF);
    return nib & 8 ? -m : m;
  }
  __device__ static void load(const uint8_t* row, int64_t c, float w[8], int64_t& p0, int64_t& p1) {
    const uint8_t* b = row + (c >> 2) * 17;
    const int t = static_cast<int>(c & 3);
    const uint32_t e = __ldg(b);
    const float d = __uint_as_float(e < 2 ? 0x00200000u << e : (e - 1) << 23);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t q = __ldg(b + 1 + 4 * t + i);
      w[i] = d * value(q & 0xF);
      w[4 + i] = d * value(q >> 4);
    }
    p0 = (c >> 2) * 32 + 4 * t, p1 = p0 + 16;
  }
};

// The same chunks as int8 values for dp4a against 8-bit activations (kernels.cu's Q8Act): `lo`
// holds the four weights at p0..p0+3 and `hi` those at p1..p1+3 (both in one block of 32), `d`
// the block's scale.
struct Chunk8Int {
  int lo, hi;
  float d;
  int64_t p0, p1;
};

template <DType T>
struct Chunk8q {
  static constexpr bool kFast = false;
};

template <>
struct Chunk8q<DType::Q8_0> {
  static constexpr bool kFast = true;
  __device__ static void load(const uint8_t* row, int64_t c, Chunk8Int& w) {
    const uint8_t* b = row + (c >> 2) * 34;
    const int t = static_cast<int>(c & 3);
    w.d = __half2float(__ushort_as_half(static_cast<unsigned short>(u16_at(b))));
    const uint8_t* q = b + 2 + 8 * t;
    w.lo = static_cast<int>(u16_at(q) | (u16_at(q + 2) << 16));
    w.hi = static_cast<int>(u16_at(q + 4) | (u16_at(q + 6) << 16));
    w.p0 = (c >> 2) * 32 + 8 * t, w.p1 = w.p0 + 4;
  }
};

template <>
struct Chunk8q<DType::Q4_0> {
  static constexpr bool kFast = true;
  __device__ static void load(const uint8_t* row, int64_t c, Chunk8Int& w) {
    const uint8_t* b = row + (c >> 2) * 18;
    const int t = static_cast<int>(c & 3);
    w.d = __half2float(__ushort_as_half(static_cast<unsigned short>(u16_at(b))));
    const uint32_t q = u16_at(b + 2 + 4 * t) | (u16_at(b + 4 + 4 * t) << 16);
    // Nibbles 0..15 less 8, byte by byte (__vsub4 wraps each byte: -8..7 as int8).
    w.lo = static_cast<int>(__vsub4(q & 0x0F0F0F0Fu, 0x08080808u));
    w.hi = static_cast<int>(__vsub4((q >> 4) & 0x0F0F0F0Fu, 0x08080808u));
    w.p0 = (c >> 2) * 32 + 4 * t, w.p1 = w.p0 + 16;
  }
};

}  // namespace epwa::cuda
