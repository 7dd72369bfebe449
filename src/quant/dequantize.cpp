// Block -> f32 for every storage type, straight from the layout definitions in blocks.hpp.
#include <cstring>

#include "epwa/half.hpp"
#include "epwa/quant.hpp"
#include "quant/blocks.hpp"

namespace epwa {
namespace {
using namespace quant;

void deq_q8_0(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q8_0::d));
  const auto* q = reinterpret_cast<const int8_t*>(b + Q8_0::qs);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(q[j]);
}

void deq_q4_0(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q4_0::d));
  const uint8_t* q = u8(b + Q4_0::qs);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>((q[j] & 0xF) - 8);
    y[j + 16] = d * static_cast<float>((q[j] >> 4) - 8);
  }
}

void deq_q4_1(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q4_1::d));
  const float m = f16_to_f32(load_u16(b + Q4_1::m));
  const uint8_t* q = u8(b + Q4_1::qs);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(q[j] & 0xF) + m;
    y[j + 16] = d * static_cast<float>(q[j] >> 4) + m;
  }
}

// The 5-bit values of a Q5_0/Q5_1 block, 0..31.
void q5_values(const uint8_t* qs, uint32_t qh, int* v) {
  for (int j = 0; j < 16; ++j) {
    v[j] = (qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4);
    v[j + 16] = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
  }
}

void deq_q5_0(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q5_0::d));
  int v[32];
  q5_values(u8(b + Q5_0::qs), load_u32(b + Q5_0::qh), v);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(v[j] - 16);
}

void deq_q5_1(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q5_1::d));
  const float m = f16_to_f32(load_u16(b + Q5_1::m));
  int v[32];
  q5_values(u8(b + Q5_1::qs), load_u32(b + Q5_1::qh), v);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(v[j]) + m;
}

void deq_q4_k(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q4_K::d));
  const float dmin = f16_to_f32(load_u16(b + Q4_K::dmin));
  const uint8_t* sc = u8(b + Q4_K::scales);
  const uint8_t* q = u8(b + Q4_K::qs);
  for (int c = 0; c < 4; ++c, q += 32, y += 64) {
    uint8_t s0, m0, s1, m1;
    scale_min_k4(2 * c, sc, s0, m0);
    scale_min_k4(2 * c + 1, sc, s1, m1);
    const float d0 = d * s0, o0 = dmin * m0, d1 = d * s1, o1 = dmin * m1;
    for (int l = 0; l < 32; ++l) {
      y[l] = d0 * static_cast<float>(q[l] & 0xF) - o0;
      y[l + 32] = d1 * static_cast<float>(q[l] >> 4) - o1;
    }
  }
}

void deq_q5_k(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q5_K::d));
  const float dmin = f16_to_f32(load_u16(b + Q5_K::dmin));
  const uint8_t* sc = u8(b + Q5_K::scales);
  const uint8_t* qh = u8(b + Q5_K::qh);
  const uint8_t* q = u8(b + Q5_K::qs);
  for (int c = 0; c < 4; ++c, q += 32, y += 64) {
    uint8_t s0, m0, s1, m1;
    scale_min_k4(2 * c, sc, s0, m0);
    scale_min_k4(2 * c + 1, sc, s1, m1);
    const float d0 = d * s0, o0 = dmin * m0, d1 = d * s1, o1 = dmin * m1;
    for (int l = 0; l < 32; ++l) {
      const int h0 = (qh[l] >> (2 * c)) & 1, h1 = (qh[l] >> (2 * c + 1)) & 1;
      y[l] = d0 * static_cast<float>((q[l] & 0xF) | (h0 << 4)) - o0;
      y[l + 32] = d1 * static_cast<float>((q[l] >> 4) | (h1 << 4)) - o1;
    }
  }
}

void deq_q6_k(const std::byte* b, float* y) {
  const float d = f16_to_f32(load_u16(b + Q6_K::d));
  const uint8_t* ql = u8(b + Q6_K::ql);
  const uint8_t* qh = u8(b + Q6_K::qh);
  const auto* sc = reinterpret_cast<const int8_t*>(b + Q6_K::scales);
  for (int h = 0; h < 2; ++h, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int g = l / 16;  // which 16 of the group of 32: selects the scale
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[g] * q1);
      y[l + 32] = d * static_cast<float>(sc[g + 2] * q2);
      y[l + 64] = d * static_cast<float>(sc[g + 4] * q3);
      y[l + 96] = d * static_cast<float>(sc[g + 6] * q4);
    }
  }
}

void deq_mxfp4(const std::byte* b, float* y) {
  const float d = e8m0_half(u8(b)[MXFP4::e]);
  const uint8_t* q = u8(b + MXFP4::qs);
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(kMxfp4Values[q[j] & 0xF]);
    y[j + 16] = d * static_cast<float>(kMxfp4Values[q[j] >> 4]);
  }
}

template <void (*F)(const std::byte*, float*)>
void per_block(const std::byte* src, float* dst, int64_t n, int64_t qk, int64_t bytes) {
  for (int64_t i = 0; i < n / qk; ++i) F(src + i * bytes, dst + i * qk);
}
}  // namespace

void dequantize_row(DType t, const std::byte* src, float* dst, int64_t n) {
  check_row_length("dequantize_row", t, n);
  switch (t) {
    case DType::F32:
      if (n) std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(src + 2 * i));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(src + 2 * i));
      return;
    case DType::Q8_0:
      return per_block<deq_q8_0>(src, dst, n, kQK, Q8_0::bytes);
    case DType::Q4_0:
      return per_block<deq_q4_0>(src, dst, n, kQK, Q4_0::bytes);
    case DType::Q4_1:
      return per_block<deq_q4_1>(src, dst, n, kQK, Q4_1::bytes);
    case DType::Q5_0:
      return per_block<deq_q5_0>(src, dst, n, kQK, Q5_0::bytes);
    case DType::Q5_1:
      return per_block<deq_q5_1>(src, dst, n, kQK, Q5_1::bytes);
    case DType::Q4_K:
      return per_block<deq_q4_k>(src, dst, n, kQKK, Q4_K::bytes);
    case DType::Q5_K:
      return per_block<deq_q5_k>(src, dst, n, kQKK, Q5_K::bytes);
    case DType::Q6_K:
      return per_block<deq_q6_k>(src, dst, n, kQKK, Q6_K::bytes);
    case DType::MXFP4:
      return per_block<deq_mxfp4>(src, dst, n, kQK, MXFP4::bytes);
  }
  throw Error("dequantize_row: unknown tensor type " + std::to_string(static_cast<int>(t)));
}

}  // namespace epwa
