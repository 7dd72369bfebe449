#include <algorithm>
#include <cmath>
#include <string>
#include <utility>
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

RopeTable::RopeTable(std::vector<float> inv_freq, float scale)
    : hd_(static_cast<int64_t>(inv_freq.size()) * 2),
      scale_(scale),
      inv_freq_(std::move(inv_freq)) {
  check(hd_ > 0, "rope: no frequencies");
}

std::vector<float> yarn_inv_freq(int64_t dim, float theta, float factor, int64_t original_max,
                                 float beta_fast, float beta_slow) {
  const double pi = 3.14159265358979323846;
  auto correction_dim = [&](double rotations) {
    return dim * std::log(original_max / (rotations * 2 * pi)) / (2 * std::log(double{theta}));
  };
  const double low = std::max(std::floor(correction_dim(beta_fast)), 0.0);
  double high = std::min(std::ceil(correction_dim(beta_slow)), double(dim - 1));
  if (low == high) high += 0.001;  // transformers' guard against a zero-width ramp
  std::vector<float> out(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    // As transformers: the powers and the blend in f32.
    const float pos_freq = std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(dim));
    const float extrapolation = 1.0f / pos_freq, interpolation = 1.0f / (factor * pos_freq);
    const float ramp = static_cast<float>(std::clamp((i - low) / (high - low), 0.0, 1.0));
    const float keep = 1 - ramp;  // the share of the unscaled frequency
    out[i] = interpolation * (1 - keep) + extrapolation * keep;
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
    const float c = std::cos(ang), s = std::sin(ang);
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
