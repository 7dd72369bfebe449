// Normalisation, softmax, activations: f32 in and out, written to follow transformers' f32 order
// of operations so that the engine tracks the reference closely.
#include <cmath>
#include <string>
#include <vector>

#include "epwa/error.hpp"
#include "epwa/ops.hpp"
#include "epwa/thread_scratch.hpp"

namespace epwa {

void rmsnorm(std::span<const float> x, std::span<const float> weight, float eps,
             std::span<float> out) {
  // Messages are built only on failure (here and below): these run once per token and layer.
  if (weight.size() != x.size() || out.size() != x.size())
    throw Error("rmsnorm: x has " + std::to_string(x.size()) + " values, weight " +
                std::to_string(weight.size()) + ", out " + std::to_string(out.size()));
  if (x.empty()) return;
  // The mean of squares in double: no cancellation, and at most one rounding away from the exact
  // value that transformers' pairwise f32 sum approximates.
  double ss = 0;
  for (float v : x) ss += static_cast<double>(v) * v;
  const float mean = static_cast<float>(ss / static_cast<double>(x.size()));
  const float scale = 1.0f / std::sqrt(mean + eps);
  for (size_t i = 0; i < x.size(); ++i) out[i] = weight[i] * (x[i] * scale);
}

void rmsnorm(std::span<const float> x, const TensorView& weight, float eps, std::span<float> out) {
  if (weight.numel() != static_cast<int64_t>(x.size()))
    throw Error("rmsnorm: tensor '" + weight.name + "' has " + std::to_string(weight.numel()) +
                " values, x has " + std::to_string(x.size()));
  if (static_cast<int64_t>(weight.data.size()) != dtype_bytes(weight.dtype, weight.numel()))
    throw Error("rmsnorm: tensor '" + weight.name + "' has " + std::to_string(weight.data.size()) +
                " bytes of data for its shape");
  thread_local ThreadScratch<std::vector<float>> w_tls;
  std::vector<float>& w = *w_tls;
  w.resize(x.size());
  to_f32(weight.dtype, weight.data.data(), w.data(), weight.numel());
  rmsnorm(x, std::span<const float>(w), eps, out);
}

void softmax(std::span<float> x) {
  if (x.empty()) return;
  float mx = x[0];
  // A comparison, not std::fmax (a libm call per score, 19% of a long prompt's time in perf);
  // the same maximum for every non-NaN input.
  for (float v : x) mx = v > mx ? v : mx;
  double sum = 0;
  for (float& v : x) {
    v = std::exp(v - mx);
    sum += v;
  }
  const float s = static_cast<float>(sum);
  for (float& v : x) v /= s;
}

void silu(std::span<float> x) {
  for (float& v : x) v = v / (1.0f + std::exp(-v));
}

void swiglu(std::span<float> gate, std::span<const float> up) {
  if (gate.size() != up.size())
    throw Error("swiglu: gate has " + std::to_string(gate.size()) + " values, up " +
                std::to_string(up.size()));
  for (size_t i = 0; i < gate.size(); ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void axpy(float a, std::span<const float> x, std::span<float> y) {
  check(x.size() == y.size(),
        "axpy: x has " + std::to_string(x.size()) + " values, y " + std::to_string(y.size()));
  for (size_t i = 0; i < x.size(); ++i) y[i] += a * x[i];
}

}  // namespace epwa
