// Portable kernels: the f32 reference vec_dot, and scalar versions of the packed (integer) kernels
// that do the same integer arithmetic as the SIMD ones, for CPUs without AVX2.
#include <array>

#include "epwa/half.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

namespace epwa {
using namespace quant;

float vec_dot(DType wtype, const std::byte* wrow, const float* x, int64_t n) {
  check_row_length("vec_dot", wtype, n);
  // Dequantise a chunk of whole blocks at a time: 256 is a multiple of every block size.
  const int64_t qk = dtype_block_size(wtype);
  const int64_t chunk =
      wtype == DType::F32 || wtype == DType::F16 || wtype == DType::BF16 ? 256 : qk;
  std::array<float, 256> buf;
  double acc = 0.0;
  for (int64_t i = 0; i < n; i += chunk) {
    const int64_t m = std::min(chunk, n - i);
    dequantize_row(wtype, wrow + dtype_bytes(wtype, i), buf.data(), m);
    for (int64_t j = 0; j < m; ++j) acc += static_cast<double>(buf[j]) * x[i + j];
  }
  return static_cast<float>(acc);
}

namespace quant {
namespace {

float dot_f32(const std::byte* w, const PackedVector& x) {
  const float* a = reinterpret_cast<const float*>(w);
  float s = 0.0f;
  for (int64_t i = 0; i < x.size(); ++i) s += a[i] * x.f32()[i];
  return s;
}
float dot_f16(const std::byte* w, const PackedVector& x) {
  float s = 0.0f;
  for (int64_t i = 0; i < x.size(); ++i) s += f16_to_f32(load_u16(w + 2 * i)) * x.f32()[i];
  return s;
}
float dot_bf16(const std::byte* w, const PackedVector& x) {
  float s = 0.0f;
  for (int64_t i = 0; i < x.size(); ++i) s += bf16_to_f32(load_u16(w + 2 * i)) * x.f32()[i];
  return s;
}

float dot_q8_0(const std::byte* w, const PackedVector& x) {
  float s = 0.0f;
  for (int64_t b = 0; b < x.size() / 32; ++b, w += Q8_0::bytes) {
    const auto* q = reinterpret_cast<const int8_t*>(w + Q8_0::qs);
    const int8_t* y = x.qs() + 32 * b;
    int32_t acc = 0;
    for (int i = 0; i < 32; ++i) acc += q[i] * y[i];
    s += f16_to_f32(load_u16(w + Q8_0::d)) * x.scales()[b] * static_cast<float>(acc);
  }
  return s;
}

// Sum of nibble value * activation over a 32-block of 4-bit values (0..15), plus optional 5th bits.
int32_t dot_u4(const uint8_t* qs, uint32_t qh, const int8_t* y) {
  int32_t acc = 0;
  for (int j = 0; j < 16; ++j) {
    acc += ((qs[j] & 0xF) | static_cast<int>(((qh >> j) & 1u) << 4)) * y[j];
    acc += ((qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4)) * y[j + 16];
  }
  return acc;
}

// Q4_0/Q5_0: x = d*(q - off); Q4_1/Q5_1: x = d*q + m.
template <size_t D, size_t M, size_t QH, size_t QS, size_t BYTES, int OFF>
float dot_small(const std::byte* w, const PackedVector& x) {
  float s = 0.0f;
  for (int64_t b = 0; b < x.size() / 32; ++b, w += BYTES) {
    const uint32_t qh = QH ? load_u32(w + QH) : 0u;
    const int32_t acc = dot_u4(u8(w + QS), qh, x.qs() + 32 * b);
    const float d = f16_to_f32(load_u16(w + D)), dx = x.scales()[b];
    if constexpr (M != 0) {
      s += d * dx * static_cast<float>(acc) +
           f16_to_f32(load_u16(w + M)) * dx * static_cast<float>(x.sums()[b]);
    } else {
      s += d * dx * static_cast<float>(acc - OFF * x.sums()[b]);
    }
  }
  return s;
}

// Q4_K/Q5_K: sum_j sc_j * <q, y>_j scaled by d, minus dmin * sum_j m_j * (sum of y over j).
template <bool FIVE>
float dot_k_affine(const std::byte* w, const PackedVector& x) {
  constexpr size_t bytes = FIVE ? Q5_K::bytes : Q4_K::bytes;
  constexpr size_t off_qs = FIVE ? Q5_K::qs : Q4_K::qs;
  float s = 0.0f;
  for (int64_t b = 0; b < x.size() / 256; ++b, w += bytes) {
    const uint8_t* sc = u8(w + Q4_K::scales);
    const uint8_t* q = u8(w + off_qs);
    const uint8_t* qh = u8(w + Q5_K::qh);
    const int8_t* y = x.qs() + 256 * b;
    const int32_t* bs = x.sums() + 16 * b;
    int32_t sumi = 0, summ = 0;
    for (int c = 0; c < 4; ++c, q += 32, y += 64) {
      uint8_t s0, m0, s1, m1;
      scale_min_k4(2 * c, sc, s0, m0);
      scale_min_k4(2 * c + 1, sc, s1, m1);
      int32_t a0 = 0, a1 = 0;
      for (int l = 0; l < 32; ++l) {
        int v0 = q[l] & 0xF, v1 = q[l] >> 4;
        if constexpr (FIVE)
          v0 |= ((qh[l] >> (2 * c)) & 1) << 4, v1 |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
        a0 += v0 * y[l];
        a1 += v1 * y[l + 32];
      }
      sumi += s0 * a0 + s1 * a1;
      summ += m0 * (bs[4 * c] + bs[4 * c + 1]) + m1 * (bs[4 * c + 2] + bs[4 * c + 3]);
    }
    const float d = f16_to_f32(load_u16(w + Q4_K::d)), dmin = f16_to_f32(load_u16(w + Q4_K::dmin));
    s += x.scales()[b] * (d * static_cast<float>(sumi) - dmin * static_cast<float>(summ));
  }
  return s;
}

// Q6_K: values 0..63 against y, minus 32 * (sum of y) per 16, scaled by the int8 scale.
float dot_q6_k(const std::byte* w, const PackedVector& x) {
  float s = 0.0f;
  for (int64_t b = 0; b < x.size() / 256; ++b, w += Q6_K::bytes) {
    const uint8_t* ql = u8(w + Q6_K::ql);
    const uint8_t* qh = u8(w + Q6_K::qh);
    const auto* sc = reinterpret_cast<const int8_t*>(w + Q6_K::scales);
    const int8_t* y = x.qs() + 256 * b;
    int32_t a[16] = {};
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32, y += 128) {
      for (int l = 0; l < 32; ++l) {
        const int g = 8 * h + l / 16;
        a[g] += ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) * y[l];
        a[g + 2] += ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) * y[l + 32];
        a[g + 4] += ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) * y[l + 64];
        a[g + 6] += ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) * y[l + 96];
      }
    }
    const int32_t* bs = x.sums() + 16 * b;
    int32_t sumi = 0;
    for (int g = 0; g < 16; ++g) sumi += sc[g] * (a[g] - 32 * bs[g]);
    s += f16_to_f32(load_u16(w + Q6_K::d)) * x.scales()[b] * static_cast<float>(sumi);
  }
  return s;
}

// MXFP4 against f32 activations: each block's sum of the doubled e2m1 integers times x, times
// 2^(e - 128).
float dot_mxfp4(const std::byte* w, const PackedVector& x) {
  float s = 0.0f;
  for (int64_t b = 0; b < x.size() / 32; ++b, w += MXFP4::bytes) {
    const uint8_t* q = u8(w + MXFP4::qs);
    const float* y = x.f32() + 32 * b;
    float acc = 0.0f;
    for (int j = 0; j < 16; ++j)
      acc += static_cast<float>(kMxfp4Values[q[j] & 0xF]) * y[j] +
             static_cast<float>(kMxfp4Values[q[j] >> 4]) * y[j + 16];
    s += e8m0_half(u8(w)[MXFP4::e]) * acc;
  }
  return s;
}

}  // namespace

RowDot row_dot_scalar(DType t) {
  switch (t) {
    case DType::F32:
      return dot_f32;
    case DType::F16:
      return dot_f16;
    case DType::BF16:
      return dot_bf16;
    case DType::Q8_0:
      return dot_q8_0;
    case DType::Q4_0:
      return dot_small<Q4_0::d, 0, 0, Q4_0::qs, Q4_0::bytes, 8>;
    case DType::Q4_1:
      return dot_small<Q4_1::d, Q4_1::m, 0, Q4_1::qs, Q4_1::bytes, 0>;
    case DType::Q5_0:
      return dot_small<Q5_0::d, 0, Q5_0::qh, Q5_0::qs, Q5_0::bytes, 16>;
    case DType::Q5_1:
      return dot_small<Q5_1::d, Q5_1::m, Q5_1::qh, Q5_1::qs, Q5_1::bytes, 0>;
    case DType::Q4_K:
      return dot_k_affine<false>;
    case DType::Q5_K:
      return dot_k_affine<true>;
    case DType::Q6_K:
      return dot_q6_k;
    case DType::MXFP4:
      return dot_mxfp4;
  }
  throw Error("vec_dot_packed: unknown tensor type " + std::to_string(static_cast<int>(t)));
}

}  // namespace quant
}  // namespace epwa
