// Byte layouts of GGUF's block formats (ggml-common.h), as offsets into a block. Fields are read
// with memcpy: mmapped tensors need not be aligned for the 16-bit scales.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "epwa/error.hpp"
#include "epwa/tensor.hpp"

namespace epwa::quant {

inline constexpr int64_t kQK = 32;    // elements per block of the simple formats
inline constexpr int64_t kQKK = 256;  // elements per K-quant super-block

// Q8_0: f16 d, int8 qs[32]; x = d*q.
struct Q8_0 {
  static constexpr size_t d = 0, qs = 2, bytes = 34;
};
// Q4_0: f16 d, u8 qs[16]; element j is the low nibble of qs[j], element j+16 the high one;
// x = d*(q-8).
struct Q4_0 {
  static constexpr size_t d = 0, qs = 2, bytes = 18;
};
// Q4_1: f16 d, f16 m, u8 qs[16]; x = d*q + m.
struct Q4_1 {
  static constexpr size_t d = 0, m = 2, qs = 4, bytes = 20;
};
// Q5_0: f16 d, u32 qh (bit j = fifth bit of element j), u8 qs[16] as Q4_0; x = d*(q-16).
struct Q5_0 {
  static constexpr size_t d = 0, qh = 2, qs = 6, bytes = 22;
};
// Q5_1: f16 d, f16 m, u32 qh, u8 qs[16]; x = d*q + m.
struct Q5_1 {
  static constexpr size_t d = 0, m = 2, qh = 4, qs = 8, bytes = 24;
};
// Q4_K: f16 d, f16 dmin, 12 bytes of 6-bit (scale, min) pairs for 8 sub-blocks of 32, u8 qs[128].
// Each 64 elements use 32 bytes of qs: low nibbles are sub-block 2c, high nibbles 2c+1;
// x = d*sc*q - dmin*m.
struct Q4_K {
  static constexpr size_t d = 0, dmin = 2, scales = 4, qs = 16, bytes = 144;
};
// Q5_K: as Q4_K plus u8 qh[32]: bit 2c of qh[l] is the fifth bit of element l of sub-block 2c,
// bit 2c+1 that of sub-block 2c+1.
struct Q5_K {
  static constexpr size_t d = 0, dmin = 2, scales = 4, qh = 16, qs = 48, bytes = 176;
};
// Q6_K: u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), int8 scales[16] (one per 16 elements),
// f16 d; x = d*sc*(q-32). Each 128 elements use 64 bytes of ql and 32 of qh, in four groups of 32.
struct Q6_K {
  static constexpr size_t ql = 0, qh = 128, scales = 192, d = 208, bytes = 210;
};
// MXFP4 (OCP microscaling FP4): u8 e (e8m0 scale), u8 qs[16]; nibbles as Q4_0 (element j < 16
// the low nibble of qs[j], j >= 16 the high nibble of qs[j - 16]), each an e2m1 code. ggml keeps
// the codes as doubled integers (kMxfp4Values) and halves the scale: x = value * 2^(e - 128).
struct MXFP4 {
  static constexpr size_t e = 0, qs = 1, bytes = 17;
};
inline constexpr int8_t kMxfp4Values[16] = {0, 1,  2,  3,  4,  6,  8,  12,
                                            0, -1, -2, -3, -4, -6, -8, -12};
// 2^(e - 128) exactly, as ggml_e8m0_to_fp32_half: e = 0 and 1 give the subnormals 2^-128, 2^-127.
// e = 255 (NaN in the OCP format) gives 2^127 as in ggml; loaders refuse it.
inline float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? 0x00200000u << e : static_cast<uint32_t>(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t load_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint32_t load_u32(const std::byte* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void store_u16(std::byte* p, uint16_t v) {
  std::memcpy(p, &v, 2);
}
inline void store_u32(std::byte* p, uint32_t v) {
  std::memcpy(p, &v, 4);
}
inline const uint8_t* u8(const std::byte* p) {
  return reinterpret_cast<const uint8_t*>(p);
}
inline uint8_t* u8(std::byte* p) {
  return reinterpret_cast<uint8_t*>(p);
}

// The 6-bit scale and min of sub-block j (0..7) from Q4_K/Q5_K's 12 packed bytes: bytes 0-3 hold
// scales 0-3 (low 6 bits) and the top 2 bits of scales 4-7; bytes 4-7 the same for the mins;
// bytes 8-11 the low 4 bits of scale 4-7 (low nibble) and min 4-7 (high nibble).
inline void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// Throws when n is not a positive-or-zero multiple of t's block size; `what` names the caller.
inline void check_row_length(const char* what, DType t, int64_t n) {
  const int64_t b = dtype_block_size(t);
  if (n < 0 || n % b != 0)
    throw Error(std::string(what) + ": " + std::string(dtype_name(t)) + " row of " +
                std::to_string(n) + " elements is not a multiple of the block size " +
                std::to_string(b));
}

}  // namespace epwa::quant
