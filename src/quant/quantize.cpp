// f32 -> block formats. The simple formats follow ggml's reference rounding exactly (files then
// match llama.cpp's byte for byte); the K-quants fit each sub-block's scale by a small
// least-squares search.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "epwa/half.hpp"
#include "epwa/quant.hpp"
#include "quant/blocks.hpp"

namespace epwa {
namespace {
using namespace quant;

int nearest(float v) {
  return static_cast<int>(std::lround(v));
}

void q_q8_0(const float* x, std::byte* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b + Q8_0::d, f32_to_f16(d));
  auto* q = reinterpret_cast<int8_t*>(b + Q8_0::qs);
  for (int j = 0; j < 32; ++j) q[j] = static_cast<int8_t>(std::round(x[j] * id));
}

// The value of largest magnitude, with its sign (the Q4_0/Q5_0 scale maps it to -8 / -16).
float signed_absmax(const float* x, int n) {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < n; ++j)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  return max;
}

void q_q4_0(const float* x, std::byte* b) {
  const float d = signed_absmax(x, 32) / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b + Q4_0::d, f32_to_f16(d));
  uint8_t* q = u8(b + Q4_0::qs);
  for (int j = 0; j < 16; ++j) {
    const auto a =
        static_cast<uint8_t>(std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f))));
    const auto c = static_cast<uint8_t>(
        std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f))));
    q[j] = static_cast<uint8_t>(a | (c << 4));
  }
}

void q_q4_1(const float* x, std::byte* b) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < 32; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
  const float d = (hi - lo) / 15.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b + Q4_1::d, f32_to_f16(d));
  store_u16(b + Q4_1::m, f32_to_f16(lo));
  uint8_t* q = u8(b + Q4_1::qs);
  for (int j = 0; j < 16; ++j) {
    const auto a = static_cast<uint8_t>(
        std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - lo) * id + 0.5f))));
    const auto c = static_cast<uint8_t>(
        std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - lo) * id + 0.5f))));
    q[j] = static_cast<uint8_t>(a | (c << 4));
  }
}

// Packs 32 five-bit values into qs (low nibbles) and qh (fifth bits).
void pack_q5(const uint8_t* v, uint8_t* qs, std::byte* qh_out) {
  uint32_t qh = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = static_cast<uint8_t>((v[j] & 0xF) | ((v[j + 16] & 0xF) << 4));
    qh |= static_cast<uint32_t>((v[j] >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((v[j + 16] >> 4) & 1) << (j + 16);
  }
  store_u32(qh_out, qh);
}

void q_q5_0(const float* x, std::byte* b) {
  const float d = signed_absmax(x, 32) / -16.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b + Q5_0::d, f32_to_f16(d));
  uint8_t v[32];
  for (int j = 0; j < 32; ++j)
    v[j] = static_cast<uint8_t>(
        std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f))));
  pack_q5(v, u8(b + Q5_0::qs), b + Q5_0::qh);
}

void q_q5_1(const float* x, std::byte* b) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < 32; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
  const float d = (hi - lo) / 31.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  store_u16(b + Q5_1::d, f32_to_f16(d));
  store_u16(b + Q5_1::m, f32_to_f16(lo));
  uint8_t v[32];
  for (int j = 0; j < 32; ++j) v[j] = static_cast<uint8_t>((x[j] - lo) * id + 0.5f);
  pack_q5(v, u8(b + Q5_1::qs), b + Q5_1::qh);
}

// Fits x ~ scale*q - mn with q in [0, nmax], scale >= 0, mn >= 0 (ggml's K-quant form: the offset
// never exceeds zero). Tries a few quantisation grids and refits each by least squares.
void fit_affine(const float* x, int n, int nmax, float& scale, float& mn) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  lo = std::min(lo, 0.0f);
  if (hi <= lo) {
    scale = 0.0f;
    mn = -lo;
    return;
  }
  scale = (hi - lo) / static_cast<float>(nmax);
  mn = -lo;
  double best = 0.0;
  for (int i = 0; i < n; ++i) {
    const double q = std::clamp(nearest((x[i] - lo) / scale), 0, nmax);
    best += (scale * q + lo - x[i]) * (scale * q + lo - x[i]);
  }
  for (int step = -6; step <= 6; ++step) {
    const float is = (static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / (hi - lo);
    double sq = 0, sqq = 0, sx = 0, sxq = 0;
    int q[256];
    for (int i = 0; i < n; ++i) {
      q[i] = std::clamp(nearest((x[i] - lo) * is), 0, nmax);
      sq += q[i], sqq += static_cast<double>(q[i]) * q[i], sx += x[i],
          sxq += static_cast<double>(x[i]) * q[i];
    }
    const double det = n * sqq - sq * sq;
    if (det <= 0) continue;
    double a = (n * sxq - sq * sx) / det, c = (sqq * sx - sq * sxq) / det;
    if (c > 0) c = 0, a = sxq / sqq;  // the offset must stay <= 0
    if (a <= 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) err += (a * q[i] + c - x[i]) * (a * q[i] + c - x[i]);
    if (err < best) best = err, scale = static_cast<float>(a), mn = static_cast<float>(-c);
  }
}

// Q4_K and Q5_K: per sub-block (scale, min) quantised to 6 bits against super-block d and dmin.
void q_k_affine(const float* x, std::byte* b, int nmax, size_t off_qs, bool five) {
  float scale[8], mn[8];
  for (int j = 0; j < 8; ++j) fit_affine(x + 32 * j, 32, nmax, scale[j], mn[j]);
  const float max_scale = *std::max_element(scale, scale + 8);
  const float max_min = *std::max_element(mn, mn + 8);
  const uint16_t d16 = f32_to_f16(max_scale / 63.0f), dmin16 = f32_to_f16(max_min / 63.0f);
  const float d = f16_to_f32(d16), dmin = f16_to_f32(dmin16);
  uint8_t sc[8], m[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = static_cast<uint8_t>(d > 0 ? std::clamp(nearest(scale[j] / d), 0, 63) : 0);
    m[j] = static_cast<uint8_t>(dmin > 0 ? std::clamp(nearest(mn[j] / dmin), 0, 63) : 0);
  }
  store_u16(b + Q4_K::d, d16);  // d, dmin and scales sit at the same offsets in Q4_K and Q5_K
  store_u16(b + Q4_K::dmin, dmin16);
  uint8_t* s = u8(b + Q4_K::scales);
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>(sc[j] | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>(m[j] | ((m[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 0xF) | ((m[j + 4] & 0xF) << 4));
  }
  uint8_t L[256];
  for (int j = 0; j < 8; ++j) {
    const float ds = d * sc[j], dm = dmin * m[j];
    for (int i = 0; i < 32; ++i)
      L[32 * j + i] = static_cast<uint8_t>(
          ds > 0 ? std::clamp(nearest((x[32 * j + i] + dm) / ds), 0, nmax) : 0);
  }
  uint8_t* qs = u8(b + off_qs);
  uint8_t* qh = five ? u8(b + Q5_K::qh) : nullptr;
  if (qh) std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = L[64 * c + l], hi = L[64 * c + 32 + l];
      qs[32 * c + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
      if (qh) qh[l] |= static_cast<uint8_t>(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
}

void q_q4_k(const float* x, std::byte* b) {
  q_k_affine(x, b, 15, Q4_K::qs, false);
}
void q_q5_k(const float* x, std::byte* b) {
  q_k_affine(x, b, 31, Q5_K::qs, true);
}

// Fits x ~ scale*q with q in [-nmax, nmax-1]: tries grids around the one that maps the signed
// absolute maximum to -nmax, keeping the least-squares best.
float fit_symmetric(const float* x, int n, int nmax) {
  const float max = signed_absmax(x, n);
  if (max == 0.0f) return 0.0f;
  float best_scale = max / -static_cast<float>(nmax);
  double best_score = -1;
  for (int step = -9; step <= 9; ++step) {
    const float is = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / max;
    double sxq = 0, sqq = 0;
    for (int i = 0; i < n; ++i) {
      const int q = std::clamp(nearest(is * x[i]), -nmax, nmax - 1);
      sxq += static_cast<double>(x[i]) * q, sqq += static_cast<double>(q) * q;
    }
    // least-squares error is sum x^2 - sxq^2/sqq: maximise sxq^2/sqq
    if (sqq > 0 && sxq * sxq / sqq > best_score)
      best_score = sxq * sxq / sqq, best_scale = static_cast<float>(sxq / sqq);
  }
  return best_scale;
}

void q_q6_k(const float* x, std::byte* b) {
  float scale[16];
  float max_scale = 0.0f, amax = 0.0f;
  for (int g = 0; g < 16; ++g) {
    scale[g] = fit_symmetric(x + 16 * g, 16, 32);
    if (std::fabs(scale[g]) > amax) amax = std::fabs(scale[g]), max_scale = scale[g];
  }
  auto* sc = reinterpret_cast<int8_t*>(b + Q6_K::scales);
  uint8_t L[256];
  if (max_scale == 0.0f) {
    std::memset(b, 0, Q6_K::bytes);
    std::memset(L, 32, sizeof L);
  } else {
    const float iscale = -128.0f / max_scale;
    const uint16_t d16 = f32_to_f16(1.0f / iscale);
    const float d = f16_to_f32(d16);
    store_u16(b + Q6_K::d, d16);
    for (int g = 0; g < 16; ++g) {
      sc[g] = static_cast<int8_t>(std::clamp(nearest(iscale * scale[g]), -128, 127));
      const float ds = d * sc[g];
      for (int i = 0; i < 16; ++i)
        L[16 * g + i] = static_cast<uint8_t>(
            ds != 0.0f ? std::clamp(nearest(x[16 * g + i] / ds), -32, 31) + 32 : 32);
    }
  }
  uint8_t* ql = u8(b + Q6_K::ql);
  uint8_t* qh = u8(b + Q6_K::qh);
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* v = L + 128 * h;
      const int q1 = v[l], q2 = v[l + 32], q3 = v[l + 64], q4 = v[l + 96];
      ql[64 * h + l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
      ql[64 * h + l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
      qh[32 * h + l] =
          static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
}

// MXFP4 as ggml's reference quantizer: the scale puts the largest magnitude in [4, 8) of the
// doubled e2m1 integers (e = floor(log2(amax)) - 2 + 127, kept inside 0..254 here), then each value
// takes the nearest of the 16 codes (ties to the lower code, so 0 stays +0).
void q_mxfp4(const float* x, std::byte* b) {
  float amax = 0.0f;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  std::memset(b, 0, MXFP4::bytes);
  if (amax == 0.0f) return;
  const float e = std::clamp(std::floor(std::log2(amax)) - 2.0f + 127.0f, 0.0f, 254.0f);
  const auto eb = static_cast<uint8_t>(e);
  const float d = e8m0_half(eb);
  auto code = [d](float v) {
    int best = 0;
    float err = std::fabs(v - d * kMxfp4Values[0]);
    for (int k = 1; k < 16; ++k)
      if (const float ek = std::fabs(v - d * kMxfp4Values[k]); ek < err) err = ek, best = k;
    return best;
  };
  u8(b)[MXFP4::e] = eb;
  uint8_t* q = u8(b + MXFP4::qs);
  for (int j = 0; j < 16; ++j) q[j] = static_cast<uint8_t>(code(x[j]) | code(x[j + 16]) << 4);
}

template <void (*F)(const float*, std::byte*)>
void per_block(const float* src, std::byte* dst, int64_t n, int64_t qk, int64_t bytes) {
  for (int64_t i = 0; i < n / qk; ++i) F(src + i * qk, dst + i * bytes);
}
}  // namespace

void quantize_row(DType t, const float* src, std::byte* dst, int64_t n) {
  check_row_length("quantize_row", t, n);
  switch (t) {
    case DType::F32:
      if (n) std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, f32_to_f16(src[i]));
      return;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) store_u16(dst + 2 * i, f32_to_bf16(src[i]));
      return;
    case DType::Q8_0:
      return per_block<q_q8_0>(src, dst, n, kQK, Q8_0::bytes);
    case DType::Q4_0:
      return per_block<q_q4_0>(src, dst, n, kQK, Q4_0::bytes);
    case DType::Q4_1:
      return per_block<q_q4_1>(src, dst, n, kQK, Q4_1::bytes);
    case DType::Q5_0:
      return per_block<q_q5_0>(src, dst, n, kQK, Q5_0::bytes);
    case DType::Q5_1:
      return per_block<q_q5_1>(src, dst, n, kQK, Q5_1::bytes);
    case DType::Q4_K:
      return per_block<q_q4_k>(src, dst, n, kQKK, Q4_K::bytes);
    case DType::Q5_K:
      return per_block<q_q5_k>(src, dst, n, kQKK, Q5_K::bytes);
    case DType::Q6_K:
      return per_block<q_q6_k>(src, dst, n, kQKK, Q6_K::bytes);
    case DType::MXFP4:
      return per_block<q_mxfp4>(src, dst, n, kQK, MXFP4::bytes);
  }
  throw Error("quantize_row: unknown tensor type " + std::to_string(static_cast<int>(t)));
}

}  // namespace epwa
