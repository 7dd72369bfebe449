// Packing of activation vectors: once per matrix-vector product, so the per-row kernels only do
// integer dot products.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"

namespace epwa {
namespace quant {
void pack_q8_scalar(const float* x, int64_t n, int block, int sum_group, int8_t* qs, float* scales,
                    int32_t* sums) {
  for (int64_t b = 0; b < n / block; ++b) {
    const float* xb = x + b * block;
    float amax = 0.0f;
    for (int i = 0; i < block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < block; ++i)
      qs[b * block + i] = static_cast<int8_t>(std::nearbyint(xb[i] * id));
    scales[b] = d;
  }
  for (int64_t g = 0; g < n / sum_group; ++g) {
    int32_t s = 0;
    for (int i = 0; i < sum_group; ++i) s += qs[g * sum_group + i];
    sums[g] = s;
  }
}
}  // namespace quant

ActFormat act_format(DType wtype) {
  switch (wtype) {
    case DType::F32:
    case DType::F16:
    case DType::BF16:
    case DType::MXFP4:  // exact in f32: float activations keep the release's reference numbers
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
    case ActFormat::Q8Block256: {
      const int block = format_ == ActFormat::Q8Block32 ? 32 : 256;
      const int sum_group = format_ == ActFormat::Q8Block32 ? 32 : 16;
      qs_.resize(x.size());
      scales_.resize(x.size() / block);
      sums_.resize(x.size() / sum_group);
      if (best_isa() >= KernelIsa::Avx2 &&
          quant::pack_q8_avx2(x.data(), n, block, sum_group, qs_.data(), scales_.data(),
                              sums_.data()))
        return;
      quant::pack_q8_scalar(x.data(), n, block, sum_group, qs_.data(), scales_.data(),
                            sums_.data());
      return;
    }
  }
}

}  // namespace epwa
