// The CUDA backend's kernels (docs/GPU.md): matrix products with f32 activations (or 8-bit ones
// for Q8_0 and Q4_0 weights, through dp4a), a warp per output row (4 rows for a single token and
// for tiles of expert slots), weights decoded a block of 32 at a time (grouped.cuh: Q4_0, Q8_0),
// 8 at a time (chunk8.cuh) or element by element (weight_at.cuh); the conversions around
// cuBLAS's f16 products; the small ops.
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>

#include "backend/grouped_route.hpp"
#include "chunk8.cuh"
#include "cuda_check.hpp"
#include "grouped.cuh"
#include "kernels.hpp"
#include "weight_at.cuh"

namespace epwa::cuda {
namespace {

constexpr int kWarps = 4;                            // output rows per block of the matrix kernels
constexpr int kTile = static_cast<int>(kTileSlots);  // activation rows per weight value read
constexpr int kRows = 4;  // weight rows a warp reads each activation value for (a token, a tile)
constexpr int64_t kRowsMinRows = 4096;  // dense products this tall go by kRows (256+ blocks)
constexpr int64_t kMaxGridY = 65535;

// Kernels take their weight type as an int: nvcc's host stubs cannot name the device-only DType
// values (kernels.hpp) as template arguments.
constexpr int type_id(DType t) {
  return static_cast<int>(t);
}

template <typename F>
void dispatch(DType t, F&& f) {
  if (t == kQ4_0x8) return f(std::integral_constant<DType, kQ4_0x8>{});
  if (t == kQ8_0x8) return f(std::integral_constant<DType, kQ8_0x8>{});
  switch (t) {
    case DType::F32:
      return f(std::integral_constant<DType, DType::F32>{});
    case DType::F16:
      return f(std::integral_constant<DType, DType::F16>{});
    case DType::BF16:
      return f(std::integral_constant<DType, DType::BF16>{});
    case DType::Q8_0:
      return f(std::integral_constant<DType, DType::Q8_0>{});
    case DType::Q4_0:
      return f(std::integral_constant<DType, DType::Q4_0>{});
    case DType::Q4_1:
      return f(std::integral_constant<DType, DType::Q4_1>{});
    case DType::Q5_0:
      return f(std::integral_constant<DType, DType::Q5_0>{});
    case DType::Q5_1:
      return f(std::integral_constant<DType, DType::Q5_1>{});
    case DType::Q4_K:
      return f(std::integral_constant<DType, DType::Q4_K>{});
    case DType::Q5_K:
      return f(std::integral_constant<DType, DType::Q5_K>{});
    case DType::Q6_K:
      return f(std::integral_constant<DType, DType::Q6_K>{});
    case DType::MXFP4:
      return f(std::integral_constant<DType, DType::MXFP4>{});
  }
  throw Error("cuda: unknown tensor type " + std::to_string(static_cast<int>(t)));
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum (or max) over the block, returned to every thread; blockDim.x is a multiple of 32.
template <typename T, bool Max>
__device__ T block_reduce(T v, T* shared) {
  v = Max ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, warps = blockDim.x >> 5;
  __syncthreads();  // `shared` may still be read by a previous reduction
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const T none = Max ? T(-INFINITY) : T(0);
  v = lane < warps ? shared[lane] : none;
  return Max ? warp_max(v) : warp_sum(v);
}

// Softmax numerators of sc[0, n) in place, exp(s - max) with the max taken over `floor` too (a
// sink logit, or -INFINITY), and their sum (with the floor's own term when it is finite), to
// every thread. Each thread reads the sc[t] it wrote itself (t strides by blockDim.x) unless a
// barrier came between; after the call the whole block sees sc.
__device__ float block_exp(float* sc, int64_t n, float floor, float* shared) {
  float mx = floor;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x) mx = fmaxf(mx, sc[t]);
  mx = block_reduce<float, true>(mx, shared);
  float z = 0;
  for (int64_t t = threadIdx.x; t < n; t += blockDim.x) z += (sc[t] = expf(sc[t] - mx));
  z = block_reduce<float, false>(z, shared);  // its barriers also publish sc
  return floor != -INFINITY ? z + expf(floor - mx) : z;
}

template <int TypeId>
__global__ void linear_kernel(const uint8_t* w, int64_t rows, int64_t cols, int64_t row_bytes,
                              const float* x, int64_t n, float* y) {
  constexpr DType T = static_cast<DType>(TypeId);
  const int64_t r = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  const uint8_t* row = w + r * row_bytes;
  for (int64_t i0 = int64_t{blockIdx.y} * kTile; i0 < n; i0 += int64_t{gridDim.y} * kTile) {
    const int nt = static_cast<int>(min(int64_t{kTile}, n - i0));
    float acc[kTile] = {};
    for (int64_t j = lane; j < cols; j += 32) {
      const float wv = weight_at<T>(row, j);
#pragma unroll
      for (int t = 0; t < kTile; ++t)
        if (t < nt) acc[t] += wv * x[(i0 + t) * cols + j];
    }
#pragma unroll
    for (int t = 0; t < kTile; ++t) {
      const float v = warp_sum(acc[t]);
      if (lane == 0 && t < nt) y[(i0 + t) * rows + r] = v;
    }
  }
}

// sum of w[0..7] times a (4 values) and b (4 values).
__device__ __forceinline__ float dot8(const float w[8], float4 a, float4 b) {
  return w[0] * a.x + w[1] * a.y + w[2] * a.z + w[3] * a.w + w[4] * b.x + w[5] * b.y + w[6] * b.z +
         w[7] * b.w;
}

// The activations a decoded chunk of eight weights meets (row i of the input: W, the chunk; X, the
// activations at its positions, read once for every weight row a warp computes with them).
// F32Act: the rows in f32, as given.
template <DType T>
struct F32Act {
  static constexpr int kPer = 8;  // weights a lane decodes at a time
  const float* x;
  int64_t cols;
  struct W {
    float v[8];
    int64_t p0, p1;
  };
  struct X {
    float4 a, b;
  };
  __device__ static void load(const uint8_t* row, int64_t c, W& w) {
    Chunk8<T>::load(row, c, w.v, w.p0, w.p1);
  }
  __device__ X at(int64_t i, const W& w) const {
    const float* r = x + i * cols;
    return {*reinterpret_cast<const float4*>(r + w.p0), *reinterpret_cast<const float4*>(r + w.p1)};
  }
  __device__ static float dot(const W& w, const X& a) { return dot8(w.v, a.a, a.b); }
};

// Q8Act: the rows rounded to 8 bits (quantize_q8), multiplied with dp4a: a chunk reads 8 bytes
// of activations and a scale where F32Act reads 32 bytes.
template <DType T>
struct Q8Act {
  static constexpr int kPer = 8;
  const int8_t* q;
  const float* d;
  int64_t cols;
  using W = Chunk8Int;
  struct X {
    int a, b;
    float d;
  };
  __device__ static void load(const uint8_t* row, int64_t c, W& w) { Chunk8q<T>::load(row, c, w); }
  __device__ X at(int64_t i, const W& w) const {
    const int8_t* r = q + i * cols;
    return {*reinterpret_cast<const int*>(r + w.p0), *reinterpret_cast<const int*>(r + w.p1),
            d[(i * cols + w.p0) / 32]};
  }
  __device__ static float dot(const W& w, const X& a) {
    return w.d * a.d * static_cast<float>(__dp4a(w.hi, a.b, __dp4a(w.lo, a.a, 0)));
  }
};

// The same two policies for grouped rows (grouped.cuh): a lane takes a whole block of 32 weights
// with one or two aligned 16-byte loads, and the activations that meet it as whole blocks too.
template <int TypeId>
struct F32Blk {
  static constexpr DType T = static_cast<DType>(TypeId);
  static constexpr int kPer = 32;
  const float* x;
  int64_t cols;
  struct W {
    float v[32];
    int64_t p;
  };
  struct X {
    float4 a[8];
  };
  __device__ static void load(const uint8_t* row, int64_t c, W& w) {
    Block32 b;
    load_block<T>(row, c, b);
#pragma unroll
    for (int m = 0; m < 8; ++m)
#pragma unroll
      for (int j = 0; j < 4; ++j) w.v[4 * m + j] = b.d * sbyte(b.q[m], j);  // the CPU's widening
    w.p = 32 * c;
  }
  __device__ X at(int64_t i, const W& w) const {
    const float4* r = reinterpret_cast<const float4*>(x + i * cols + w.p);
    X a;
#pragma unroll
    for (int m = 0; m < 8; ++m) a.a[m] = r[m];
    return a;
  }
  __device__ static float dot(const W& w, const X& a) {
    float s = 0;
#pragma unroll
    for (int m = 0; m < 8; ++m)
      s += w.v[4 * m] * a.a[m].x + w.v[4 * m + 1] * a.a[m].y + w.v[4 * m + 2] * a.a[m].z +
           w.v[4 * m + 3] * a.a[m].w;
    return s;
  }
};

template <int TypeId>
struct Q8Blk {
  static constexpr DType T = static_cast<DType>(TypeId);
  static constexpr int kPer = 32;
  const int8_t* q;
  const float* d;
  int64_t cols;
  struct W {
    Block32 b;
    int64_t p;
  };
  struct X {
    int4 a, b;
    float d;
  };
  __device__ static void load(const uint8_t* row, int64_t c, W& w) {
    load_block<T>(row, c, w.b);
    w.p = 32 * c;
  }
  __device__ X at(int64_t i, const W& w) const {
    const int4* r = reinterpret_cast<const int4*>(q + i * cols + w.p);
    return {r[0], r[1], d[(i * cols + w.p) / 32]};
  }
  __device__ static float dot(const W& w, const X& a) {
    const int* q = w.b.q;
    int s = __dp4a(q[0], a.a.x, 0);
    s = __dp4a(q[1], a.a.y, s), s = __dp4a(q[2], a.a.z, s), s = __dp4a(q[3], a.a.w, s);
    s = __dp4a(q[4], a.b.x, s), s = __dp4a(q[5], a.b.y, s), s = __dp4a(q[6], a.b.z, s);
    s = __dp4a(q[7], a.b.w, s);
    return w.b.d * a.d * static_cast<float>(s);
  }
};

// One activation row (a decoded token): a warp computes kRows consecutive rows, so that each chunk
// of the activation is read once for all of them. Block y is a slot of `topk` when `mats` is given
// (its expert's matrix; the activation row of its token when x_per_token), else w itself.
template <typename A>
__global__ void rows_kernel(const uint8_t* w, const uint8_t* const* mats, const int32_t* topk,
                            int64_t k, bool x_per_token, int64_t rows, int64_t row_bytes, A act,
                            float* y) {
  const int64_t r0 = (int64_t{blockIdx.x} * kWarps + threadIdx.x / 32) * kRows;
  const int lane = threadIdx.x & 31;
  if (r0 >= rows) return;
  const int64_t slot = blockIdx.y;
  int64_t xi = 0;
  if (mats) {
    w = mats[topk[slot]];
    xi = x_per_token ? slot / k : slot;
    y += slot * rows;
  }
  const uint8_t* row = w + r0 * row_bytes;
  const int nr = static_cast<int>(min(int64_t{kRows}, rows - r0));
  const int64_t chunks = act.cols / A::kPer;
  float acc[kRows] = {};
  for (int64_t c = lane; c < chunks; c += 32) {
    typename A::W wv;
    A::load(row, c, wv);
    const typename A::X a = act.at(xi, wv);
    acc[0] += A::dot(wv, a);
#pragma unroll
    for (int q = 1; q < kRows; ++q)
      if (q < nr) {
        A::load(row + q * row_bytes, c, wv);
        acc[q] += A::dot(wv, a);
      }
  }
#pragma unroll
  for (int q = 0; q < kRows; ++q) {
    const float v = warp_sum(acc[q]);
    if (lane == 0 && q < nr) y[r0 + q] = v;
  }
}

// linear_kernel for the types decoded by chunks (chunk8.cuh, grouped.cuh): a warp reads its R rows
// in contiguous chunks, each decoded once for kTile activation rows, each activation chunk read
// once for the R rows.
template <int R, typename A>
__global__ void linear_chunk_kernel(const uint8_t* w, int64_t rows, int64_t row_bytes, A act,
                                    int64_t n, float* y) {
  const int64_t r0 = (int64_t{blockIdx.x} * kWarps + threadIdx.x / 32) * R;
  const int lane = threadIdx.x & 31;
  if (r0 >= rows) return;
  const uint8_t* row = w + r0 * row_bytes;
  const int nr = static_cast<int>(min(int64_t{R}, rows - r0));
  const int64_t chunks = act.cols / A::kPer;
  for (int64_t i0 = int64_t{blockIdx.y} * kTile; i0 < n; i0 += int64_t{gridDim.y} * kTile) {
    const int nt = static_cast<int>(min(int64_t{kTile}, n - i0));
    float acc[R][kTile] = {};
    for (int64_t c = lane; c < chunks; c += 32) {
      typename A::W wv[R];
#pragma unroll
      for (int q = 0; q < R; ++q) A::load(row + min(q, nr - 1) * row_bytes, c, wv[q]);
#pragma unroll
      for (int t = 0; t < kTile; ++t)
        if (t < nt) {
          const typename A::X a = act.at(i0 + t, wv[0]);
#pragma unroll
          for (int q = 0; q < R; ++q) acc[q][t] += A::dot(wv[q], a);
        }
    }
#pragma unroll
    for (int t = 0; t < kTile; ++t)
      if (t < nt)
#pragma unroll
        for (int q = 0; q < R; ++q) {
          const float v = warp_sum(acc[q][t]);
          if (lane == 0 && q < nr) y[(i0 + t) * rows + r0 + q] = v;
        }
  }
}

// Tiles of at most `size` slots of one expert, experts in order: {expert, first index into
// order, count, 0}; the table's rest (up to `most`) zero. Run by one block; count[e] and offset[e]
// in shared memory, first_tile (ne entries) its scratch.
__device__ void cut_tiles(const int32_t* count, const int32_t* offset, int32_t* first_tile,
                          int64_t ne, int32_t size, int4* tiles, int64_t most) {
  __shared__ int32_t total;
  if (threadIdx.x == 0) {
    int32_t tile = 0;
    for (int64_t e = 0; e < ne; ++e) first_tile[e] = tile, tile += (count[e] + size - 1) / size;
    total = tile;
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < ne; e += blockDim.x)
    for (int32_t t = 0; t * size < count[e]; ++t)
      tiles[first_tile[e] + t] =
          make_int4(static_cast<int>(e), offset[e] + t * size, min(size, count[e] - t * size), 0);
  for (int64_t t = total + threadIdx.x; t < most; t += blockDim.x) tiles[t] = make_int4(0, 0, 0, 0);
  __syncthreads();
}

// One block: counts the slots of each expert, lays the slots out expert by expert in `order`, and
// cuts each expert's run into tiles of up to kTile slots (`tiles`) and of up to kTileTokens
// (`wide`). The order within an expert does not matter: every slot's output is its own dot
// products.
__global__ void group_kernel(const int32_t* topk, int64_t slots, int64_t ne, int32_t* order,
                             int4* tiles, int64_t max_tiles, int4* wide, int64_t max_wide,
                             int32_t* counts) {
  extern __shared__ int32_t sh[];
  int32_t *count = sh, *offset = sh + ne, *scratch = sh + 2 * ne;
  for (int64_t e = threadIdx.x; e < ne; e += blockDim.x) count[e] = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < slots; i += blockDim.x) atomicAdd(&count[topk[i]], 1);
  __syncthreads();
  if (threadIdx.x == 0)
    for (int32_t e = 0, at = 0; e < ne; ++e) offset[e] = at, at += count[e];
  __syncthreads();
  cut_tiles(count, offset, scratch, ne, kTile, tiles, max_tiles);
  cut_tiles(count, offset, scratch, ne, static_cast<int32_t>(kTileTokens), wide, max_wide);
  for (int64_t e = threadIdx.x; e < ne; e += blockDim.x) {
    counts[e] = count[e];
    count[e] = 0;  // now the fill of the expert's run
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < slots; i += blockDim.x) {
    const int32_t e = topk[i];
    order[offset[e] + atomicAdd(&count[e], 1)] = static_cast<int32_t>(i);
  }
}

// The experts' products by tiles of slots that share an expert: a warp decodes each chunk of its R
// rows once for the tile's (up to kTile) slots, and reads each slot's activations once for the R
// rows.
template <int R, typename A>
__global__ void expert_tile_kernel(const uint8_t* const* mats, int64_t rows, int64_t row_bytes,
                                   const int32_t* order, const int4* tiles, int64_t k,
                                   bool x_per_token, A act, float* y) {
  const int64_t r0 = (int64_t{blockIdx.x} * kWarps + threadIdx.x / 32) * R;
  const int lane = threadIdx.x & 31;
  const int4 tile = tiles[blockIdx.y];
  if (r0 >= rows || tile.z == 0) return;
  const uint8_t* row = mats[tile.x] + r0 * row_bytes;
  const int nr = static_cast<int>(min(int64_t{R}, rows - r0));
  int64_t slot[kTile], xi[kTile];
#pragma unroll
  for (int t = 0; t < kTile; ++t) {
    slot[t] = t < tile.z ? order[tile.y + t] : 0;
    xi[t] = x_per_token ? slot[t] / k : slot[t];
  }
  const int64_t chunks = act.cols / A::kPer;
  float acc[R][kTile] = {};
  for (int64_t c = lane; c < chunks; c += 32) {
    typename A::W w[R];
#pragma unroll
    for (int q = 0; q < R; ++q) A::load(row + min(q, nr - 1) * row_bytes, c, w[q]);
#pragma unroll
    for (int t = 0; t < kTile; ++t)
      if (t < tile.z) {
        const typename A::X a = act.at(xi[t], w[0]);
#pragma unroll
        for (int q = 0; q < R; ++q) acc[q][t] += A::dot(w[q], a);
      }
  }
#pragma unroll
  for (int t = 0; t < kTile; ++t)
    if (t < tile.z)
#pragma unroll
      for (int q = 0; q < R; ++q) {
        const float v = warp_sum(acc[q][t]);
        if (lane == 0 && q < nr) y[slot[t] * rows + r0 + q] = v;
      }
}

// Whether a policy's products of several activation rows (expert tiles; dense products of 4096+
// rows) go by kRows weight rows a warp (its decoded weights are few registers) or by one.
template <typename A>
constexpr bool kRowsOfMany = false;
template <int TypeId>
constexpr bool kRowsOfMany<Q8Blk<TypeId>> = true;
template <DType T>
constexpr bool kRowsOfMany<F32Act<T>> = true;

template <int TypeId>
__global__ void expert_linear_kernel(const uint8_t* const* mats, int64_t rows, int64_t cols,
                                     int64_t row_bytes, const int32_t* topk, int64_t slots,
                                     int64_t k, bool x_per_token, const float* x, float* y) {
  constexpr DType T = static_cast<DType>(TypeId);
  const int64_t r = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (r >= rows) return;
  for (int64_t slot = blockIdx.y; slot < slots; slot += gridDim.y) {
    const uint8_t* row = mats[topk[slot]] + r * row_bytes;
    const float* xs = x + (x_per_token ? slot / k : slot) * cols;
    float acc = 0;
    for (int64_t j = lane; j < cols; j += 32) acc += weight_at<T>(row, j) * xs[j];
    acc = warp_sum(acc);
    if (lane == 0) y[slot * rows + r] = acc;
  }
}

// One warp per block of 32 values: the CPU's rounding (src/quant/activation.cpp), IEEE division
// and round-to-nearest-even as there, so both engines feed their integer products the same bytes.
__global__ void quantize_q8_kernel(const float* x, int64_t blocks, int8_t* q, float* d) {
  const int64_t b = int64_t{blockIdx.x} * kWarps + threadIdx.x / 32;
  if (b >= blocks) return;
  const int lane = threadIdx.x & 31;
  const float v = x[b * 32 + lane];
  const float amax = warp_max(fabsf(v));
  const float scale = amax / 127.0f;
  const float inv = scale != 0.0f ? 1.0f / scale : 0.0f;
  q[b * 32 + lane] = static_cast<int8_t>(__float2int_rn(v * inv));
  if (lane == 0) d[b] = scale;
}

__global__ void swiglu_kernel(float* g, const float* u, int64_t count) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < count) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

// The expert of row i of a products' output: experts[i] (slot order), else the one `fixed`.
__device__ __forceinline__ int64_t expert_of(const int32_t* experts, int32_t fixed, int64_t i) {
  return experts ? experts[i] : fixed;
}

// GPT-OSS's activation (cpu_experts.cpp's `activate`): g = min(g + bg, limit), u = clamp(u + bu,
// +-limit), g = (u + 1) * g * sigmoid(1.702 g); without a limit silu(g + bg) * (u + bu). Biases:
// one f32 row per expert, or null.
__global__ void expert_act_kernel(float* g, const float* u, int64_t count, int64_t width,
                                  const int32_t* experts, int32_t fixed,
                                  const float* const* gate_bias, const float* const* up_bias,
                                  float limit) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= count) return;
  const int64_t e = expert_of(experts, fixed, i / width), c = i % width;
  float gv = g[i] + (gate_bias ? gate_bias[e][c] : 0.0f);
  float uv = u[i] + (up_bias ? up_bias[e][c] : 0.0f);
  if (limit > 0) {
    gv = fminf(gv, limit);
    uv = fminf(fmaxf(uv, -limit), limit);
    g[i] = (uv + 1.0f) * (gv * (1.0f / (1.0f + expf(-(gv * 1.702f)))));
  } else {
    g[i] = gv / (1.0f + expf(-gv)) * uv;
  }
}

// y[i] += bias[expert of row i] for rows of d values.
__global__ void expert_bias_kernel(float* y, int64_t count, int64_t d, const int32_t* experts,
                                   int32_t fixed, const float* const* bias) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < count) y[i] += bias[expert_of(experts, fixed, i / d)][i % d];
}

__global__ void combine_kernel(const float* y, const int32_t* topk, const float* w, int64_t n,
                               int64_t k, int64_t d, float* out) {
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= n * d) return;
  const int64_t i = idx / d, o = idx % d;
  const int32_t* t = topk + i * k;
  float acc = 0;
  int32_t prev = -1;
  for (int64_t m = 0; m < k; ++m) {  // the slots by increasing expert index (k is small)
    int64_t best = -1;
    for (int64_t s = 0; s < k; ++s)
      if (t[s] > prev && (best < 0 || t[s] < t[best])) best = s;
    prev = t[best];
    acc += w[i * k + best] * y[(i * k + best) * d + o];
  }
  out[idx] = acc;
}

template <int TypeId>
__global__ void rmsnorm_kernel(const float* x, int64_t d, int64_t stride, const uint8_t* w,
                               float eps, float* out) {
  constexpr DType T = static_cast<DType>(TypeId);
  __shared__ double partial[32];
  const float* xi = x + int64_t{blockIdx.x} * stride;
  float* oi = out + int64_t{blockIdx.x} * stride;
  double ss = 0;  // in double, as the CPU's rmsnorm
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) ss += static_cast<double>(xi[j]) * xi[j];
  ss = block_reduce<double, false>(ss, partial);
  const float mean = static_cast<float>(ss / static_cast<double>(d));
  const float scale = 1.0f / sqrtf(mean + eps);
  // Each thread writes only the values it read: out may alias x.
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    oi[j] = weight_at<T>(w, j) * (xi[j] * scale);
}

__global__ void rope_kernel(float* x, int64_t n, int64_t heads, int64_t stride, int64_t hd,
                            int64_t p0, const int2* at, const float* cos, const float* sin) {
  const int64_t half = hd / 2;
  const int64_t idx = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (idx >= n * heads * half) return;
  const int64_t i = idx / (heads * half), h = (idx / half) % heads, t = idx % half;
  const int64_t row = at ? at[i].x : i, pos = at ? at[i].y : p0 + i;
  float* v = x + row * stride + h * hd;
  const float c = cos[pos * half + t], s = sin[pos * half + t];
  const float a = v[t], b = v[t + half];
  v[t] = a * c - b * s;
  v[t + half] = b * c + a * s;
}

// Key t of a query's keys in one buffer of rows `kvdim` apart (a cache), from row 0.
struct LinearKeys {
  const float *k, *v;
  int64_t kvdim;
  __device__ const float* key(int64_t t) const { return k + t * kvdim; }
  __device__ const float* value(int64_t t) const { return v + t * kvdim; }
};

// Key t of a query of a sliding-window layer: position first + t, in the batch's own rows from
// position p0 on, before that in the ring cache (position p in row p % window).
struct RingKeys {
  const float *k, *v, *kc, *vc;
  int64_t kvdim, first, p0, window;
  __device__ const float* row(int64_t t, const float* batch, const float* ring) const {
    const int64_t p = first + t;
    return p >= p0 ? batch + (p - p0) * kvdim : ring + (p % window) * kvdim;
  }
  __device__ const float* key(int64_t t) const { return row(t, k, kc); }
  __device__ const float* value(int64_t t) const { return row(t, v, vc); }
};

// One block per (query head, query row): scores over the keys, softmax (with `sink` joining the
// denominator when it is finite), weighted values; key t's rows: keys_at.key(t), .value(t).
template <typename Keys>
__device__ void attend(const float* qi, Keys keys_at, int64_t keys, int64_t g, int64_t hd,
                       float scale, float sink, float* sc, float* out) {
  __shared__ float partial[32];
  for (int64_t t = threadIdx.x; t < keys; t += blockDim.x) {
    const float* kt = keys_at.key(t) + g * hd;
    float dot = 0;
    for (int64_t j = 0; j < hd; ++j) dot += qi[j] * kt[j];
    sc[t] = dot * scale;
  }
  const float sum = block_exp(sc, keys, sink, partial);  // sink: -INFINITY without one
  for (int64_t j = threadIdx.x; j < hd; j += blockDim.x) {
    float acc = 0;
    for (int64_t t = 0; t < keys; ++t) acc += sc[t] * keys_at.value(t)[g * hd + j];
    out[j] = acc / sum;
  }
}

// Query row i of one sequence at position p0 + i.
__global__ void attention_kernel(const float* q, const float* kc, const float* vc, int64_t p0,
                                 int64_t heads, int64_t group, int64_t hd, int64_t kvdim,
                                 float scale, float* scores, int64_t score_stride, float* att) {
  const int64_t h = blockIdx.x, i = blockIdx.y;
  attend(q + (i * heads + h) * hd, LinearKeys{kc, vc, kvdim}, p0 + i + 1, h / group, hd, scale,
         -INFINITY, scores + (i * heads + h) * score_stride, att + (i * heads + h) * hd);
}

// attention_kernel with a sink logit per head (GPT-OSS), over a window when `window` > 0, for the
// batch's rows row0 + blockIdx.y: the batch's k / v rows for its own positions, the ring cache kc
// / vc for earlier ones. Without a window the batch's rows are already in the cache.
__global__ void sink_attention_kernel(const float* q, const float* k, const float* v,
                                      const float* kc, const float* vc, int64_t p0, int64_t row0,
                                      int64_t window, const float* sinks, int64_t heads,
                                      int64_t group, int64_t hd, int64_t kvdim, float scale,
                                      float* scores, int64_t score_stride, float* att) {
  const int64_t h = blockIdx.x, i = row0 + blockIdx.y, p = p0 + i;
  const int64_t first = window > 0 ? max(int64_t{0}, p - window + 1) : 0;
  float* sc = scores + (int64_t{blockIdx.y} * heads + h) * score_stride;
  float* out = att + (i * heads + h) * hd;
  const float* qi = q + (i * heads + h) * hd;
  if (window > 0)
    attend(qi, RingKeys{k, v, kc, vc, kvdim, first, p0, window}, p - first + 1, h / group, hd,
           scale, sinks[h], sc, out);
  else
    attend(qi, LinearKeys{kc, vc, kvdim}, p + 1, h / group, hd, scale, sinks[h], sc, out);
}

// Rows p of k / v at positions [max(p0, p0 + n - window), p0 + n) into the ring (row p % window):
// the last window positions of the batch, after its attention read the ring.
__global__ void ring_store_kernel(const float* k, const float* v, int64_t p0, int64_t n,
                                  int64_t window, int64_t kvdim, float* kc, float* vc) {
  const int64_t from = max(p0, p0 + n - window);
  const int64_t p = from + blockIdx.x;
  for (int64_t j = threadIdx.x; j < kvdim; j += blockDim.x) {
    kc[(p % window) * kvdim + j] = k[(p - p0) * kvdim + j];
    vc[(p % window) * kvdim + j] = v[(p - p0) * kvdim + j];
  }
}

// Entry i of a batch of sequences (attention_rows), its k and v rows already appended.
__global__ void attention_rows_kernel(const float* q, const int2* at, const CacheRows* caches,
                                      int64_t heads, int64_t group, int64_t hd, int64_t kvdim,
                                      float scale, float* scores, int64_t score_stride,
                                      float* att) {
  const int64_t h = blockIdx.x, i = blockIdx.y, row = at[i].x;
  attend(q + (row * heads + h) * hd, LinearKeys{caches[i].k, caches[i].v, kvdim}, at[i].y + 1,
         h / group, hd, scale, -INFINITY, scores + (i * heads + h) * score_stride,
         att + (row * heads + h) * hd);
}

__global__ void append_rows_kernel(const float* k, const float* v, const int2* at,
                                   const CacheRows* caches, int64_t kvdim) {
  const int64_t i = blockIdx.x, row = at[i].x, pos = at[i].y;
  for (int64_t j = threadIdx.x; j < kvdim; j += blockDim.x) {
    caches[i].k[pos * kvdim + j] = k[row * kvdim + j];
    caches[i].v[pos * kvdim + j] = v[row * kvdim + j];
  }
}

template <int TypeId, typename Out>
__global__ void dequantize_kernel(const uint8_t* w, int64_t row_bytes, int64_t r0, int64_t count,
                                  int64_t cols, Out* out) {
  constexpr DType T = static_cast<DType>(TypeId);
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= count * cols) return;
  const float v = weight_at<T>(w + (r0 + i / cols) * row_bytes, i % cols);
  if constexpr (std::is_same_v<Out, float>)
    out[i] = v;
  else
    out[i] = __float2half_rn(v);
}

// One block per row: the power of two that brings the row's largest magnitude into [2^13, 2^14)
// (1 for a row of zeros), and the row times it in f16. Powers of two scale exactly, so a row loses
// only f16's rounding, however large or small its values.
__global__ void to_half_kernel(const float* x, int64_t cols, __half* out, float* scale) {
  __shared__ float red[32];
  const float* row = x + int64_t{blockIdx.x} * cols;
  float m = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, fabsf(row[j]));
  m = block_reduce<float, true>(m, red);
  int e = 0;
  if (m > 0) frexpf(m, &e);  // m < 2^e
  const float sc = m > 0 ? ldexpf(1.0f, 14 - e) : 1.0f;
  if (threadIdx.x == 0) scale[blockIdx.x] = sc;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    out[int64_t{blockIdx.x} * cols + j] = __float2half_rn(row[j] * sc);
}

__global__ void unscale_kernel(float* y, int64_t count, int64_t rows, const float* scale) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < count) y[i] /= scale[i / rows];
}

__global__ void gather_kernel(const float* src, const int32_t* idx, int64_t div, int64_t cols,
                              float* dst) {
  const float* from = src + (idx[blockIdx.x] / div) * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    dst[int64_t{blockIdx.x} * cols + j] = from[j];
}

__global__ void scatter_kernel(const float* src, const int32_t* idx, int64_t cols, float* dst) {
  float* to = dst + int64_t{idx[blockIdx.x]} * cols;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
    to[j] = src[int64_t{blockIdx.x} * cols + j];
}

template <int TypeId>
__global__ void embed_kernel(const uint8_t* table, int64_t row_bytes, const int32_t* tokens,
                             int64_t d, float* x) {
  constexpr DType T = static_cast<DType>(TypeId);
  const uint8_t* row = table + tokens[blockIdx.x] * row_bytes;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
    x[int64_t{blockIdx.x} * d + j] = weight_at<T>(row, j);
}

__global__ void add_kernel(float* x, const float* y, int64_t count) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < count) x[i] += y[i];
}

template <int TypeId>
__global__ void add_bias_kernel(const uint8_t* b, int64_t m, float* y, int64_t count) {
  constexpr DType T = static_cast<DType>(TypeId);
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < count) y[i] += weight_at<T>(b, i % m);
}

__global__ void clamp_kernel(float* y, int64_t count, float limit) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i < count) y[i] = fminf(fmaxf(y[i], -limit), limit);
}

// One thread per row, the CPU's algorithm (src/backend/cpu/cpu_backend.cpp): insertion into the k
// kept so far in index order, then the softmax over all experts summed in index order.
__global__ void route_kernel(const float* logits, int64_t n, int64_t ne, int64_t k,
                             bool renormalize, int32_t* topk, float* topw) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float* row = logits + i * ne;
  int32_t top[kMaxTopK];
  int32_t kept = 0;
  for (int32_t e = 0; e < ne; ++e) {
    const float v = row[e];
    if (kept == k && !(v > row[top[k - 1]])) continue;
    int32_t p = kept < k ? kept++ : static_cast<int32_t>(k) - 1;
    for (; p > 0 && v > row[top[p - 1]]; --p) top[p] = top[p - 1];
    top[p] = e;
  }
  const float mx = row[top[0]];
  float z = 0;
  for (int64_t e = 0; e < ne; ++e) z += expf(row[e] - mx);
  float w[kMaxTopK], wsum = 0;
  for (int64_t j = 0; j < k; ++j) wsum += (w[j] = expf(row[top[j]] - mx) / z);
  for (int64_t j = 0; j < k; ++j) {
    topk[i * k + j] = top[j];
    topw[i * k + j] = renormalize ? w[j] / wsum : w[j];
  }
}

// One block per row: the gate's dot product, then the scaled add.
template <int TypeId>
__global__ void add_gated_kernel(const uint8_t* gate, const float* x, const float* y, int64_t d,
                                 float* o) {
  constexpr DType T = static_cast<DType>(TypeId);
  __shared__ float partial[32];
  const int64_t base = int64_t{blockIdx.x} * d;
  float z = 0;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) z += weight_at<T>(gate, j) * x[base + j];
  z = block_reduce<float, false>(z, partial);
  const float g = 1.0f / (1.0f + expf(-z));
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) o[base + j] += g * y[base + j];
}

// One thread per block of a file's row: its scale and quants to their places in the grouped layout
// (grouped.cuh); blocks never straddle rows there since rows hold whole groups.
__global__ void regroup_kernel(const uint8_t* in, int64_t blocks, int quant_bytes, uint8_t* out) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= blocks) return;
  const int block_bytes = 2 + quant_bytes, b = static_cast<int>(i & 7);
  const uint8_t* src = in + i * block_bytes;
  uint8_t* g = out + (i >> 3) * 8 * block_bytes;
  g[2 * b] = src[0], g[2 * b + 1] = src[1];
  for (int j = 0; j < quant_bytes; ++j) g[16 + b * quant_bytes + j] = src[2 + j];
}

// One thread per row: the CPU's own code (grouped_route.hpp).
__global__ void route_grouped_kernel(const float* logits, int64_t n, int64_t ne, RouteRule r,
                                     const float* bias, int32_t* topk, float* topw) {
  const int64_t i = int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
  if (i >= n) return;
  float score[kMaxGroupedExperts], choice[kMaxGroupedExperts], gscore[kMaxGroups];
  int32_t gbest[kMaxGroups];
  route::grouped_row(logits + i * ne, ne, r, bias, score, choice, gscore, gbest, topk + i * r.k,
                     topw + i * r.k);
}

// Entry i of a LatentRows: its row of the batch, its position and its cache.
__device__ int64_t latent_row(const LatentRows& r, int64_t i) {
  return r.at ? r.at[i].x : i;
}
__device__ int64_t latent_pos(const LatentRows& r, int64_t i) {
  return r.at ? r.at[i].y : r.p0 + i;
}
__device__ float* latent_cache(const LatentRows& r, int64_t i) {
  return r.at ? r.caches[i].k : r.cache;
}

// One block per entry: its row into its cache, the latent as it is, the rope part rotated by
// pairs.
__global__ void latent_append_kernel(const float* kv, LatentRows r, LatentShape sh,
                                     const float* cos, const float* sin) {
  const int64_t i = blockIdx.x, row = sh.latent + sh.rope, pos = latent_pos(r, i);
  const int64_t half = sh.rope / 2;
  const float* src = kv + latent_row(r, i) * row;
  float* dst = latent_cache(r, i) + pos * row;
  for (int64_t j = threadIdx.x; j < sh.latent; j += blockDim.x) dst[j] = src[j];
  for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
    const float c = cos[pos * half + j], s = sin[pos * half + j];
    const float a = src[sh.latent + 2 * j], b = src[sh.latent + 2 * j + 1];
    dst[sh.latent + 2 * j] = a * c - b * s;
    dst[sh.latent + 2 * j + 1] = b * c + a * s;
  }
}

// One block per (head, entry): the rope part of the entry's row of q for the head, rotated at the
// entry's position and times the scale, after the latent part in its row of qlat (latent + rope
// values per row and head).
__global__ void latent_query_rope_kernel(const float* q, LatentRows r, LatentShape sh,
                                         const float* cos, const float* sin, float* qlat) {
  const int64_t h = blockIdx.x, e = blockIdx.y, i = latent_row(r, e), pos = latent_pos(r, e);
  const int64_t half = sh.rope / 2;
  const float* qh = q + (i * sh.heads + h) * (sh.nope + sh.rope) + sh.nope;
  float* out = qlat + (i * sh.heads + h) * (sh.latent + sh.rope) + sh.latent;
  for (int64_t j = threadIdx.x; j < half; j += blockDim.x) {
    const float c = cos[pos * half + j], s = sin[pos * half + j];
    const float a = qh[2 * j], b = qh[2 * j + 1];
    out[2 * j] = (a * c - b * s) * sh.scale;
    out[2 * j + 1] = (b * c + a * s) * sh.scale;
  }
}

// One block per (head, entry), its query absorbed (its row of qlat): scores against every cached
// row (latent + rope values), softmax, the weighted sum of the cached latents into its row of
// olat (latent values per row and head). Shared memory: the query.
__global__ void latent_attend_kernel(const float* qlat, LatentRows r, LatentShape sh, float* scores,
                                     int64_t stride, float* olat) {
  extern __shared__ float qs[];
  __shared__ float red[32];
  const int64_t h = blockIdx.x, e = blockIdx.y, i = latent_row(r, e);
  const int64_t keys = latent_pos(r, e) + 1, row = sh.latent + sh.rope;
  const float* cache = latent_cache(r, e);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, warps = blockDim.x >> 5;
  for (int64_t j = tid; j < row; j += blockDim.x) qs[j] = qlat[(i * sh.heads + h) * row + j];
  __syncthreads();
  float* sc = scores + (e * sh.heads + h) * stride;
  for (int64_t t = warp; t < keys; t += warps) {
    const float* c = cache + t * row;
    float acc = 0;
    for (int64_t j = lane; j < row; j += 32) acc += qs[j] * c[j];
    acc = warp_sum(acc);
    if (lane == 0) sc[t] = acc;
  }
  __syncthreads();
  const float z = block_exp(sc, keys, -INFINITY, red);
  float* out = olat + (i * sh.heads + h) * sh.latent;
  for (int64_t j = tid; j < sh.latent; j += blockDim.x) {
    float acc = 0;
    for (int64_t t = 0; t < keys; ++t) acc += sc[t] * cache[t * row + j];
    out[j] = acc / z;
  }
}

// One block per row r of a prompt's scores (row i = r / heads of the prompt, at position p0 + i):
// softmax over its keys [0, p0 + i], the later keys of the row set to 0 (they enter the weighted
// sum as products).
__global__ void causal_softmax_kernel(float* scores, int64_t stride, int64_t heads, int64_t p0,
                                      int64_t keys) {
  __shared__ float red[32];
  float* sc = scores + int64_t{blockIdx.x} * stride;
  const int64_t valid = p0 + blockIdx.x / heads + 1;
  const float z = block_exp(sc, valid, -INFINITY, red);
  for (int64_t t = threadIdx.x; t < keys; t += blockDim.x) sc[t] = t < valid ? sc[t] / z : 0.0f;
}

void check_launch(const char* what) {
  check_cuda(cudaGetLastError(), what);
}

// Whether a product of a type of chunk8.cuh can read its weights in chunks of eight: rows of whole
// chunks, activations aligned for float4 loads.
bool chunked(int64_t cols, const float* x) {
  return cols % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

int64_t blocks_of(int64_t count, int64_t per) {
  return (count + per - 1) / per;
}

}  // namespace

bool reads_q8(DType type, int64_t cols) {
  return (type == DType::Q8_0 || type == DType::Q4_0 || type == kQ4_0x8 || type == kQ8_0x8) &&
         cols % 32 == 0;
}

DType grouped_type(DType type, int64_t cols) {
  if (cols % 256 != 0) return type;
  return type == DType::Q4_0 ? kQ4_0x8 : type == DType::Q8_0 ? kQ8_0x8 : type;
}

void regroup(const uint8_t* in, int64_t blocks, DType grouped, uint8_t* out, cudaStream_t s) {
  if (blocks == 0) return;
  if (blocks % 8 != 0 || (grouped != kQ4_0x8 && grouped != kQ8_0x8))
    throw Error("regroup: " + std::to_string(blocks) + " blocks of type " +
                std::to_string(static_cast<int>(grouped)));
  const int qb = grouped == kQ4_0x8 ? Grouped<kQ4_0x8>::kQuantBytes : Grouped<kQ8_0x8>::kQuantBytes;
  regroup_kernel<<<static_cast<unsigned>(blocks_of(blocks, 256)), 256, 0, s>>>(in, blocks, qb, out);
  check_launch("regroup kernel");
}

void quantize_q8(const float* x, int64_t n, int64_t cols, const Q8Rows& out, cudaStream_t s) {
  const int64_t blocks = n * cols / 32;
  if (blocks == 0) return;
  quantize_q8_kernel<<<static_cast<unsigned>(blocks_of(blocks, kWarps)), kWarps * 32, 0, s>>>(
      x, blocks, out.q, out.d);
  check_launch("quantize kernel");
}

namespace {
// Calls f with the activation policy of a product of type t (Q8Act where xq is given and the type
// reads it, F32Act where the weights decode by chunks of eight); false where neither applies.
template <DType t, typename F>
bool with_act(const float* x, int64_t cols, const Q8Rows* xq, F&& f) {
  if constexpr (t == kQ4_0x8 || t == kQ8_0x8) {
    if (xq) return f(Q8Blk<type_id(t)>{xq->q, xq->d, cols}), true;
    if (chunked(cols, x)) return f(F32Blk<type_id(t)>{x, cols}), true;
  } else {
    if constexpr (Chunk8q<t>::kFast)
      if (xq) return f(Q8Act<t>{xq->q, xq->d, cols}), true;
    if constexpr (Chunk8<t>::kFast)
      if (chunked(cols, x)) return f(F32Act<t>{x, cols}), true;
  }
  return false;
}
}  // namespace

void linear(const DevMatrix& w, const float* x, int64_t n, float* y, cudaStream_t s,
            const Q8Rows* xq) {
  if (w.rows == 0 || n == 0) return;
  if (xq && !reads_q8(w.type, w.cols)) xq = nullptr;
  const dim3 grid(static_cast<unsigned>(blocks_of(w.rows, kWarps)),
                  static_cast<unsigned>(std::min(blocks_of(n, kTile), kMaxGridY)));
  dispatch(w.type, [&](auto T) {
    constexpr DType t = decltype(T)::value;
    const bool done = with_act<t>(x, w.cols, xq, [&](auto act) {
      // By rows (one token; several, for the policies of kRowsOfMany) where that leaves enough
      // blocks to fill the device (the K and V projections and the router are too short: one
      // warp a row keeps more loads in flight).
      if (n == 1 && w.rows >= kRowsMinRows)
        rows_kernel<<<static_cast<unsigned>(blocks_of(w.rows, kWarps * kRows)), kWarps * 32, 0,
                      s>>>(w.data, nullptr, nullptr, 1, true, w.rows, w.row_bytes, act, y);
      else {
        if constexpr (kRowsOfMany<decltype(act)>)
          if (w.rows >= kRowsMinRows) {
            linear_chunk_kernel<kRows>
                <<<dim3(static_cast<unsigned>(blocks_of(w.rows, kWarps * kRows)), grid.y),
                   kWarps * 32, 0, s>>>(w.data, w.rows, w.row_bytes, act, n, y);
            return;
          }
        linear_chunk_kernel<1><<<grid, kWarps * 32, 0, s>>>(w.data, w.rows, w.row_bytes, act, n, y);
      }
    });
    if (!done)
      linear_kernel<type_id(t)>
          <<<grid, kWarps * 32, 0, s>>>(w.data, w.rows, w.cols, w.row_bytes, x, n, y);
  });
  check_launch("linear kernel");
}

void group_experts(const int32_t* topk, int64_t slots, int64_t experts, ExpertGroups& g,
                   cudaStream_t s) {
  g.max_tiles = max_expert_tiles(slots, experts, kTile);
  g.max_wide = max_expert_tiles(slots, experts, kTileTokens);
  if (slots == 0) return;
  if (g.max_tiles > kMaxGridY)
    throw Error("expert_ffn: " + std::to_string(slots) +
                " (token, expert) pairs in one batch (at most " +
                std::to_string((kMaxGridY - experts) * kTile) + " on the GPU)");
  group_kernel<<<1, 256, static_cast<size_t>(3 * experts) * sizeof(int32_t), s>>>(
      topk, slots, experts, g.order, g.tiles, g.max_tiles, g.wide, g.max_wide, g.counts);
  check_launch("group kernel");
}

void expert_linear(const uint8_t* const* mats, DType type, int64_t rows, int64_t cols,
                   int64_t row_bytes, const int32_t* topk, const ExpertGroups& g, int64_t slots,
                   int64_t k, bool x_per_token, const float* x, float* y, cudaStream_t s,
                   const Q8Rows* xq) {
  if (rows == 0 || slots == 0) return;
  if (xq && !reads_q8(type, cols)) xq = nullptr;
  const unsigned row_blocks = static_cast<unsigned>(blocks_of(rows, kWarps));
  dispatch(type, [&](auto T) {
    constexpr DType t = decltype(T)::value;
    const bool done = with_act<t>(x, cols, xq, [&](auto act) {
      // One token: its k experts are distinct, each read once by its own blocks.
      if (slots == k)
        rows_kernel<<<dim3(static_cast<unsigned>(blocks_of(rows, kWarps * kRows)),
                           static_cast<unsigned>(slots)),
                      kWarps * 32, 0, s>>>(nullptr, mats, topk, k, x_per_token, rows, row_bytes,
                                           act, y);
      else {
        constexpr int R = kRowsOfMany<decltype(act)> ? kRows : 1;
        expert_tile_kernel<R><<<dim3(static_cast<unsigned>(blocks_of(rows, kWarps * R)),
                                     static_cast<unsigned>(g.max_tiles)),
                                kWarps * 32, 0, s>>>(mats, rows, row_bytes, g.order, g.tiles, k,
                                                     x_per_token, act, y);
      }
    });
    if (!done)
      expert_linear_kernel<type_id(t)>
          <<<dim3(row_blocks, static_cast<unsigned>(std::min(slots, kMaxGridY))), kWarps * 32, 0,
             s>>>(mats, rows, cols, row_bytes, topk, slots, k, x_per_token, x, y);
  });
  check_launch("expert linear kernel");
}

namespace {
template <typename Out>
void dequantize_to(const DevMatrix& w, int64_t r0, int64_t count, Out* out, cudaStream_t s) {
  if (count * w.cols == 0) return;
  dispatch(w.type, [&](auto T) {
    dequantize_kernel<type_id(decltype(T)::value), Out>
        <<<static_cast<unsigned>(blocks_of(count * w.cols, 256)), 256, 0, s>>>(
            w.data, w.row_bytes, r0, count, w.cols, out);
  });
  check_launch("dequantize kernel");
}
}  // namespace

void dequantize_rows(const DevMatrix& w, int64_t r0, int64_t count, float* out, cudaStream_t s) {
  dequantize_to(w, r0, count, out, s);
}
void dequantize_rows(const DevMatrix& w, int64_t r0, int64_t count, __half* out, cudaStream_t s) {
  dequantize_to(w, r0, count, out, s);
}

void to_half_rows(const float* x, int64_t n, int64_t cols, __half* out, float* scale,
                  cudaStream_t s) {
  if (n == 0) return;
  to_half_kernel<<<static_cast<unsigned>(n), 256, 0, s>>>(x, cols, out, scale);
  check_launch("to_half kernel");
}

void unscale_rows(float* y, int64_t n, int64_t rows, const float* scale, cudaStream_t s) {
  if (n == 0 || rows == 0) return;
  unscale_kernel<<<static_cast<unsigned>(blocks_of(n * rows, 256)), 256, 0, s>>>(y, n * rows, rows,
                                                                                 scale);
  check_launch("unscale kernel");
}

void gather_rows(const float* src, const int32_t* idx, int64_t count, int64_t div, int64_t cols,
                 float* dst, cudaStream_t s) {
  if (count == 0) return;
  gather_kernel<<<static_cast<unsigned>(count), 256, 0, s>>>(src, idx, div, cols, dst);
  check_launch("gather kernel");
}

void scatter_rows(const float* src, const int32_t* idx, int64_t count, int64_t cols, float* dst,
                  cudaStream_t s) {
  if (count == 0) return;
  scatter_kernel<<<static_cast<unsigned>(count), 256, 0, s>>>(src, idx, cols, dst);
  check_launch("scatter kernel");
}

void embed(const uint8_t* table, DType type, int64_t row_bytes, const int32_t* tokens, int64_t n,
           int64_t d, float* x, cudaStream_t s) {
  if (n == 0) return;
  dispatch(type, [&](auto T) {
    embed_kernel<type_id(decltype(T)::value)>
        <<<static_cast<unsigned>(n), 256, 0, s>>>(table, row_bytes, tokens, d, x);
  });
  check_launch("embed kernel");
}

void add(float* x, const float* y, int64_t count, cudaStream_t s) {
  if (count == 0) return;
  add_kernel<<<static_cast<unsigned>(blocks_of(count, 256)), 256, 0, s>>>(x, y, count);
  check_launch("add kernel");
}

void add_bias(const uint8_t* b, DType type, int64_t m, float* y, int64_t n, cudaStream_t s) {
  if (n * m == 0) return;
  dispatch(type, [&](auto T) {
    add_bias_kernel<type_id(decltype(T)::value)>
        <<<static_cast<unsigned>(blocks_of(n * m, 256)), 256, 0, s>>>(b, m, y, n * m);
  });
  check_launch("bias kernel");
}

void clamp(float* y, int64_t count, float limit, cudaStream_t s) {
  if (count == 0) return;
  clamp_kernel<<<static_cast<unsigned>(blocks_of(count, 256)), 256, 0, s>>>(y, count, limit);
  check_launch("clamp kernel");
}

void route(const float* logits, int64_t n, int64_t experts, int64_t k, bool renormalize,
           int32_t* topk, float* topw, cudaStream_t s) {
  if (n == 0) return;
  if (k < 1 || k > kMaxTopK || k > experts)
    throw Error("route: " + std::to_string(k) + " experts per token (1.." +
                std::to_string(std::min(kMaxTopK, experts)) + " supported on the GPU)");
  route_kernel<<<static_cast<unsigned>(blocks_of(n, 64)), 64, 0, s>>>(logits, n, experts, k,
                                                                      renormalize, topk, topw);
  check_launch("route kernel");
}

void add_gated(const uint8_t* gate, DType type, const float* x, const float* y, int64_t n,
               int64_t d, float* o, cudaStream_t s) {
  if (n == 0) return;
  dispatch(type, [&](auto T) {
    add_gated_kernel<type_id(decltype(T)::value)>
        <<<static_cast<unsigned>(n), 256, 0, s>>>(gate, x, y, d, o);
  });
  check_launch("gate kernel");
}

void route_grouped(const float* logits, int64_t n, int64_t experts, const RouteRule& r,
                   const float* bias, int32_t* topk, float* topw, cudaStream_t s) {
  if (n == 0) return;
  if (experts > kMaxGroupedExperts || r.k < 1 || r.k > std::min(kMaxTopK, experts) ||
      r.groups < 1 || r.groups > kMaxGroups || experts % r.groups != 0 || r.topk_groups < 1 ||
      r.topk_groups > r.groups || (r.group_top2 && experts / r.groups < 2))
    throw Error("route_grouped: " + std::to_string(experts) + " experts in " +
                std::to_string(r.groups) + " groups, top " + std::to_string(r.k) +
                " (the GPU runs up to " + std::to_string(kMaxGroupedExperts) + " experts in " +
                std::to_string(kMaxGroups) + " equal groups)");
  route_grouped_kernel<<<static_cast<unsigned>(blocks_of(n, 64)), 64, 0, s>>>(logits, n, experts, r,
                                                                              bias, topk, topw);
  check_launch("grouped route kernel");
}

void latent_append(const float* kv, int64_t n, const LatentRows& rows, const LatentShape& sh,
                   const float* cos, const float* sin, cudaStream_t s) {
  if (n == 0) return;
  latent_append_kernel<<<static_cast<unsigned>(n), 128, 0, s>>>(kv, rows, sh, cos, sin);
  check_launch("latent append kernel");
}

void latent_query_rope(const float* q, int64_t n, const LatentRows& rows, const LatentShape& sh,
                       const float* cos, const float* sin, float* qlat, cudaStream_t s) {
  if (n == 0) return;
  if (n > kMaxGridY) throw Error("latent attention: " + std::to_string(n) + " rows in one launch");
  latent_query_rope_kernel<<<dim3(static_cast<unsigned>(sh.heads), static_cast<unsigned>(n)), 32, 0,
                             s>>>(q, rows, sh, cos, sin, qlat);
  check_launch("latent query rope kernel");
}

void latent_attend(const float* qlat, int64_t n, const LatentRows& rows, const LatentShape& sh,
                   float* scores, int64_t score_stride, float* olat, cudaStream_t s) {
  if (n == 0) return;
  if (n > kMaxGridY) throw Error("latent attention: " + std::to_string(n) + " rows in one launch");
  const size_t shared = static_cast<size_t>(sh.latent + sh.rope) * sizeof(float);
  latent_attend_kernel<<<dim3(static_cast<unsigned>(sh.heads), static_cast<unsigned>(n)), 256,
                         shared, s>>>(qlat, rows, sh, scores, score_stride, olat);
  check_launch("latent attention kernel");
}

void causal_softmax(float* scores, int64_t n, int64_t heads, int64_t p0, int64_t keys,
                    int64_t score_stride, cudaStream_t s) {
  if (n == 0) return;
  causal_softmax_kernel<<<static_cast<unsigned>(n * heads), 256, 0, s>>>(scores, score_stride,
                                                                         heads, p0, keys);
  check_launch("causal softmax kernel");
}

void swiglu(float* g, const float* u, int64_t count, cudaStream_t s) {
  if (count == 0) return;
  swiglu_kernel<<<static_cast<unsigned>(blocks_of(count, 256)), 256, 0, s>>>(g, u, count);
  check_launch("swiglu kernel");
}

void expert_activation(float* g, const float* u, int64_t rows, int64_t width,
                       const int32_t* experts, int32_t fixed, const float* const* gate_bias,
                       const float* const* up_bias, float limit, cudaStream_t s) {
  const int64_t count = rows * width;
  if (count == 0) return;
  expert_act_kernel<<<static_cast<unsigned>(blocks_of(count, 256)), 256, 0, s>>>(
      g, u, count, width, experts, fixed, gate_bias, up_bias, limit);
  check_launch("expert activation kernel");
}

void add_expert_bias(float* y, int64_t rows, int64_t d, const int32_t* experts, int32_t fixed,
                     const float* const* bias, cudaStream_t s) {
  const int64_t count = rows * d;
  if (count == 0) return;
  expert_bias_kernel<<<static_cast<unsigned>(blocks_of(count, 256)), 256, 0, s>>>(
      y, count, d, experts, fixed, bias);
  check_launch("expert bias kernel");
}

void combine_experts(const float* y, const int32_t* topk, const float* w, int64_t n, int64_t k,
                     int64_t d, float* out, cudaStream_t s) {
  if (n * d == 0) return;
  combine_kernel<<<static_cast<unsigned>(blocks_of(n * d, 256)), 256, 0, s>>>(y, topk, w, n, k, d,
                                                                              out);
  check_launch("combine kernel");
}

void rmsnorm(const float* x, int64_t n, int64_t d, const uint8_t* w, DType wtype, float eps,
             float* out, cudaStream_t s, int64_t stride) {
  if (n == 0) return;
  dispatch(wtype, [&](auto T) {
    rmsnorm_kernel<type_id(decltype(T)::value)>
        <<<static_cast<unsigned>(n), 256, 0, s>>>(x, d, stride > 0 ? stride : d, w, eps, out);
  });
  check_launch("rmsnorm kernel");
}

void rope(float* x, int64_t n, int64_t heads, int64_t stride, int64_t head_dim, int64_t p0,
          const float* cos, const float* sin, cudaStream_t s, const int2* at) {
  const int64_t count = n * heads * (head_dim / 2);
  if (count == 0) return;
  rope_kernel<<<static_cast<unsigned>(blocks_of(count, 256)), 256, 0, s>>>(
      x, n, heads, stride, head_dim, p0, at, cos, sin);
  check_launch("rope kernel");
}

// The CPU's scale (src/ops/attention.cpp): 1/sqrt(head_dim) in double, rounded once.
float attention_scale(int64_t head_dim) {
  return static_cast<float>(1.0 / std::sqrt(static_cast<double>(head_dim)));
}

void attention_rows(const float* q, const float* k, const float* v, const int2* at,
                    const CacheRows* caches, int64_t n, int64_t heads, int64_t kv_heads,
                    int64_t head_dim, float* scores, int64_t score_stride, float* att,
                    cudaStream_t s) {
  if (n == 0) return;
  if (n > kMaxGridY) throw Error("attention: " + std::to_string(n) + " sequences in one step");
  const int64_t kvdim = kv_heads * head_dim;
  append_rows_kernel<<<static_cast<unsigned>(n), 128, 0, s>>>(k, v, at, caches, kvdim);
  check_launch("append kernel");
  attention_rows_kernel<<<dim3(static_cast<unsigned>(heads), static_cast<unsigned>(n)), 128, 0,
                          s>>>(q, at, caches, heads, heads / kv_heads, head_dim, kvdim,
                               attention_scale(head_dim), scores, score_stride, att);
  check_launch("attention kernel");
}

void attention(const float* q, const float* kc, const float* vc, int64_t n, int64_t p0,
               int64_t heads, int64_t kv_heads, int64_t head_dim, float* scores, float* att,
               cudaStream_t s) {
  if (n == 0) return;
  const float scale = attention_scale(head_dim);
  const int64_t qdim = heads * head_dim;
  for (int64_t i0 = 0; i0 < n; i0 += kMaxGridY) {  // grid.y is at most 65535 query rows
    const int64_t rows = std::min(n - i0, kMaxGridY);
    const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(rows));
    attention_kernel<<<grid, 128, 0, s>>>(q + i0 * qdim, kc, vc, p0 + i0, heads, heads / kv_heads,
                                          head_dim, kv_heads * head_dim, scale, scores, p0 + n,
                                          att + i0 * qdim);
    check_launch("attention kernel");
  }
}

void attention_sinks(const float* q, const float* k, const float* v, int64_t n, int64_t p0,
                     int64_t heads, int64_t kv_heads, int64_t head_dim, const float* kc,
                     const float* vc, int64_t window, const float* sinks, float* scores,
                     int64_t score_stride, int64_t chunk, float* att, cudaStream_t s) {
  if (n == 0) return;
  const float scale = attention_scale(head_dim);
  const int64_t kvdim = kv_heads * head_dim, step = std::clamp<int64_t>(chunk, 1, kMaxGridY);
  for (int64_t i0 = 0; i0 < n; i0 += step) {
    const dim3 grid(static_cast<unsigned>(heads), static_cast<unsigned>(std::min(n - i0, step)));
    sink_attention_kernel<<<grid, 128, 0, s>>>(q, k, v, kc, vc, p0, i0, window, sinks, heads,
                                               heads / kv_heads, head_dim, kvdim, scale, scores,
                                               score_stride, att);
    check_launch("sink attention kernel");
  }
}

void ring_store(const float* k, const float* v, int64_t n, int64_t p0, int64_t window,
                int64_t kv_dim, float* kc, float* vc, cudaStream_t s) {
  const int64_t rows = std::min(n, window);
  if (rows <= 0) return;
  ring_store_kernel<<<static_cast<unsigned>(rows), 128, 0, s>>>(k, v, p0, n, window, kv_dim, kc,
                                                                vc);
  check_launch("ring store kernel");
}

}  // namespace epwa::cuda
