#include <cmath>
#include <string>

#include "epwa/error.hpp"
#include "kernels.hpp"

namespace epwa {

void attention_head(std::span<const float> q, const float* k, const float* v, int64_t n_keys,
                    int64_t stride, std::span<float> scores, std::span<float> out) {
  const int64_t hd = static_cast<int64_t>(q.size());
  // Messages are built only on failure: this runs once per head and token.
  if (hd <= 0 || static_cast<int64_t>(out.size()) != hd)
    throw Error("attention: q has " + std::to_string(q.size()) + " values, out " +
                std::to_string(out.size()));
  if (n_keys <= 0) throw Error("attention: no key to attend to");
  if (stride < hd)
    throw Error("attention: KV stride " + std::to_string(stride) + " < head_dim " +
                std::to_string(hd));
  if (static_cast<int64_t>(scores.size()) < n_keys)
    throw Error("attention: scratch of " + std::to_string(scores.size()) + " floats for " +
                std::to_string(n_keys) + " keys");
  const auto dotf = ops::kernels().dot_f32;
  // transformers multiplies q.k by head_dim ** -0.5 (a Python double rounded to f32).
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  for (int64_t t = 0; t < n_keys; ++t) scores[t] = dotf(k + t * stride, q.data(), hd) * scale;
  const std::span<float> s = scores.first(static_cast<size_t>(n_keys));
  softmax(s);
  for (float& o : out) o = 0;
  for (int64_t t = 0; t < n_keys; ++t) {
    const float p = s[t];
    const float* vt = v + t * stride;
    for (int64_t i = 0; i < hd; ++i) out[i] += p * vt[i];
  }
}

}  // namespace epwa
