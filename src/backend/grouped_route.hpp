// DeepSeek's routers (Backend::route_grouped), one row: the same code for the CPU backend and the
// CUDA kernel (nvcc compiles it for the device), so that both choose the same experts with the
// same weights.
#pragma once
#include <cmath>
#include <cstdint>

#include "epwa/backend.hpp"

#ifdef __CUDACC__
#define EPWA_HOST_DEVICE __host__ __device__
#else
#define EPWA_HOST_DEVICE
#endif

namespace epwa::route {

// The k best of `v` (ties to the lower index), best first.
EPWA_HOST_DEVICE inline void best_k(const float* v, int64_t count, int64_t k, int32_t* out) {
  int64_t kept = 0;
  for (int64_t e = 0; e < count; ++e) {
    if (kept == k && !(v[e] > v[out[k - 1]])) continue;
    int64_t p = kept < k ? kept++ : k - 1;
    for (; p > 0 && v[e] > v[out[p - 1]]; --p) out[p] = out[p - 1];
    out[p] = static_cast<int32_t>(e);
  }
}

// Row l of ne router logits under rule r: top (r.k experts, best first by score + bias, within
// the r.topk_groups best groups) and their weights w. bias: ne f32 values or nullptr. Scratch:
// score and choice of ne values, gscore and gbest of r.groups.
EPWA_HOST_DEVICE inline void grouped_row(const float* l, int64_t ne, const RouteRule& r,
                                         const float* bias, float* score, float* choice,
                                         float* gscore, int32_t* gbest, int32_t* top, float* w) {
  if (r.sigmoid) {
    // In double, rounded once: the watermark's pathway (src/watermark/pathway.cpp) repeats this
    // choice exactly on any libm.
    for (int64_t e = 0; e < ne; ++e)
      score[e] = static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(l[e]))));
  } else {
    float mx = l[0], z = 0;
    for (int64_t e = 1; e < ne; ++e) mx = mx < l[e] ? l[e] : mx;
    for (int64_t e = 0; e < ne; ++e) z += (score[e] = expf(l[e] - mx));
    for (int64_t e = 0; e < ne; ++e) score[e] /= z;
  }
  for (int64_t e = 0; e < ne; ++e) choice[e] = score[e] + (bias ? bias[e] : 0.0f);
  if (r.groups > 1) {
    const int64_t gsize = ne / r.groups;
    for (int64_t g = 0; g < r.groups; ++g) {
      const float* c = choice + g * gsize;
      int32_t two[2];
      best_k(c, gsize, r.group_top2 ? 2 : 1, two);
      gscore[g] = r.group_top2 ? c[two[0]] + c[two[1]] : c[two[0]];
    }
    best_k(gscore, r.groups, r.topk_groups, gbest);
    for (int64_t g = 0; g < r.groups; ++g) {  // experts outside the chosen groups: never chosen
      bool kept = false;
      for (int64_t j = 0; j < r.topk_groups; ++j) kept = kept || gbest[j] == g;
      if (!kept)
        for (int64_t e = 0; e < gsize; ++e) choice[g * gsize + e] = -INFINITY;
    }
  }
  best_k(choice, ne, r.k, top);
  float sum = 0;
  for (int64_t j = 0; j < r.k; ++j) sum += (w[j] = score[top[j]]);
  for (int64_t j = 0; j < r.k; ++j) {
    if (r.renormalize) w[j] /= sum + 1e-20f;
    w[j] *= r.scale;
  }
}

}  // namespace epwa::route
