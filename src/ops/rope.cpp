#include <algorithm>
#include <cmath>
#include <numbers>
#include <string>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/ops.hpp"

namespace epwa {

RopeTable::RopeTable(int64_t head_dim, float theta, int64_t positions) : hd_(head_dim) {
  check(head_dim > 0 && head_dim % 2 == 0,
        "rope: head_dim " + std::to_string(head_dim) + " is not a positive even number");
  check(theta > 0 && std::isfinite(theta),
        "rope: theta " + std::to_string(theta) + " is not positive");
  // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), all in f32.
  inv_freq_.resize(static_cast<size_t>(hd_ / 2));
  for (int64_t i = 0; i < hd_ / 2; ++i)
    inv_freq_[i] = 1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(hd_));
  ensure(positions);
}

RopeTable::RopeTable(int64_t head_dim, float theta, const Yarn& yarn, int64_t positions)
    : RopeTable(head_dim, theta, 0) {
  if (yarn.on()) {
    inv_freq_ = yarn_inv_freq(hd_, theta, yarn);
    scale_ = yarn.cos_sin_factor();
  }
  ensure(positions);
}

std::vector<float> yarn_inv_freq(int64_t dim, float theta, const Yarn& yarn) {
  check(yarn.factor > 0 && yarn.original_max_position > 0,
        "rope: YaRN needs a positive factor and original_max_position_embeddings");
  // transformers' _compute_yarn_parameters: the correction range in double (Python floats), the
  // powers, the ramp and the blend in f32 tensors.
  const auto d = static_cast<double>(dim);
  const auto correction_dim = [&](double rotations) {
    return d * std::log(yarn.original_max_position / (rotations * 2 * std::numbers::pi)) /
           (2 * std::log(static_cast<double>(theta)));
  };
  double low = correction_dim(yarn.beta_fast), high = correction_dim(yarn.beta_slow);
  if (yarn.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0), high = std::min(high, d - 1);
  if (low == high) high += 0.001;  // linear_ramp_factor's guard against a zero-width ramp
  std::vector<float> out(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    const float pos_freq = std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(dim));
    const float extrapolation = 1.0f / pos_freq, interpolation = 1.0f / (yarn.factor * pos_freq);
    const float ramp = std::clamp(
        (static_cast<float>(i) - static_cast<float>(low)) / static_cast<float>(high - low), 0.0f,
        1.0f);
    const float keep = 1.0f - ramp;  // the share of the unscaled frequency
    out[i] = interpolation * (1.0f - keep) + extrapolation * keep;
  }
  return out;
}

void RopeTable::ensure(int64_t positions) {
  const int64_t half = hd_ / 2;
  const int64_t have = cached_positions();
  if (positions <= have) return;
  cos_.resize(static_cast<size_t>(positions * half));
  sin_.resize(static_cast<size_t>(positions * half));
  for (int64_t p = have; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const float a = static_cast<float>(p) * inv_freq_[i];  // rounded to f32 like the reference
      cos_[p * half + i] = std::cos(a) * scale_;
      sin_[p * half + i] = std::sin(a) * scale_;
    }
}

void RopeTable::apply(std::span<float> x, int64_t pos) const {
  // Messages are built only on failure: this runs once per head and token.
  if (static_cast<int64_t>(x.size()) != hd_)
    throw Error("rope: head vector has " + std::to_string(x.size()) + " values, head_dim is " +
                std::to_string(hd_));
  if (pos < 0) throw Error("rope: negative position " + std::to_string(pos));
  const int64_t half = hd_ / 2;
  if (pos < cached_positions()) {
    const float* c = cos_.data() + pos * half;
    const float* s = sin_.data() + pos * half;
    for (int64_t i = 0; i < half; ++i) {
      const float a = x[i], b = x[i + half];
      x[i] = a * c[i] - b * s[i];
      x[i + half] = b * c[i] + a * s[i];
    }
    return;
  }
  for (int64_t i = 0; i < half; ++i) {
    const float ang = static_cast<float>(pos) * inv_freq_[i];
    const float c = std::cos(ang) * scale_, s = std::sin(ang) * scale_;
    const float a = x[i], b = x[i + half];
    x[i] = a * c - b * s;
    x[i + half] = b * c + a * s;
  }
}

void RopeTable::apply_pairs(float* x, int64_t pos) const {
  if (pos < 0) throw Error("rope: negative position " + std::to_string(pos));
  const int64_t half = hd_ / 2;
  for (int64_t i = 0; i < half; ++i) {
    float c, s;
    if (pos < cached_positions()) {
      c = cos_[pos * half + i];
      s = sin_[pos * half + i];
    } else {
      const float ang = static_cast<float>(pos) * inv_freq_[i];
      c = std::cos(ang) * scale_;
      s = std::sin(ang) * scale_;
    }
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * c - b * s;
    x[2 * i + 1] = b * c + a * s;
  }
}

void RopeTable::apply_heads(std::span<float> heads, int64_t pos) const {
  check(heads.size() % static_cast<size_t>(hd_) == 0, "rope: " + std::to_string(heads.size()) +
                                                          " values are not whole heads of " +
                                                          std::to_string(hd_));
  for (size_t h = 0; h < heads.size(); h += static_cast<size_t>(hd_))
    apply(heads.subspan(h, static_cast<size_t>(hd_)), pos);
}

}  // namespace epwa
