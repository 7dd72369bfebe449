// Packing of activation vectors: once per matrix-vector product, so the per-row kernels only do
// integer dot products.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"

namespace epwa {
namespace {
// Symmetric int8 quantisation of n values: q = round(x / d), d = amax / 127.
float quantize_i8(const float* x, int n, int8_t* q) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; ++i) q[i] = static_cast<int8_t>(std::nearbyint(x[i] * id));
  return d;
}
}  // namespace

ActFormat act_format(DType wtype) {
  switch (wtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
      return ActFormat::F32;
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
      return ActFormat::Q8Block32;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return ActFormat::Q8Block256;
  }
  throw Error("act_format: unknown tensor type " + std::to_string(static_cast<int>(wtype)));
}

void PackedVector::pack(DType wtype, std::span<const float> x) {
  const auto n = static_cast<int64_t>(x.size());
  quant::check_row_length("PackedVector::pack", wtype, n);
  wtype_ = wtype;
  format_ = act_format(wtype);
  n_ = n;
  switch (format_) {
    case ActFormat::F32:
      f32_.resize(x.size());
      if (n) std::memcpy(f32_.data(), x.data(), x.size() * sizeof(float));
      return;
    case ActFormat::Q8Block32:
      qs_.resize(x.size());
      scales_.resize(x.size() / 32);
      sums_.resize(x.size() / 32);
      for (int64_t b = 0; b < n / 32; ++b) {
        int8_t* q = qs_.data() + 32 * b;
        scales_[b] = quantize_i8(x.data() + 32 * b, 32, q);
        int32_t s = 0;
        for (int i = 0; i < 32; ++i) s += q[i];
        sums_[b] = s;
      }
      return;
    case ActFormat::Q8Block256:
      qs_.resize(x.size());
      scales_.resize(x.size() / 256);
      sums_.resize(x.size() / 16);
      for (int64_t b = 0; b < n / 256; ++b)
        scales_[b] = quantize_i8(x.data() + 256 * b, 256, qs_.data() + 256 * b);
      for (int64_t g = 0; g < n / 16; ++g) {
        int32_t s = 0;
        for (int i = 0; i < 16; ++i) s += qs_[16 * g + i];
        sums_[g] = s;
      }
      return;
  }
}

}  // namespace epwa
