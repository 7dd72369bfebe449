// Products of grouped Q4_0 / Q8_0 weights with 16 rows or more (prompts, decode steps of several
// sequences) on the int8 tensor cores, from the stored blocks: activations rounded to 8 bits per
// block of 32 (quantize_q8, the CPU's rounding), each block's 32-term integer dot product one
// mma.m16n8k32, then scaled by the weight's and the activation's block scales and summed in f32
// (the decode kernels' per-block formula, d_w * d_x * isum). The weights are never widened: the
// f16 path wrote and read 2 bytes a weight per product before its GEMM could start (77 % of a
// full-size Mixtral prompt).
#include <cuda_fp16.h>

#include <string>
#include <type_traits>

#include "cuda_check.hpp"
#include "grouped.cuh"
#include "kernels.hpp"

namespace epwa::cuda {
namespace {

// A block computes 64 weight rows x Tokens activation rows (64, or 16 / 8 for a few sequences'
// decode step: the weights are read once per block either way); its four warps 32 x 32 each (2 x 4
// fragments of 16 x 8) for 64 tokens, 16 x Tokens each for fewer. One stage holds one group
// (eight blocks, 256 values) of each row.
constexpr int kTileRows = 64, kThreads = 128;
static_assert(kTileSlots == 8 && kTileTokens == 64, "the tiles dispatch() has kernels for");
// Bytes from one token's row of the stage to the next: 256 quants and 16 bytes of padding, so
// that the eight rows a fragment load touches fall in different banks (272 / 4 = 68 = 4 mod 32).
constexpr int kTokenStride = 256 + 16;

template <DType T, int Tokens>
struct MmaStage {
  // A weight row's group as stored (scales, then quants): 144 or 272 bytes, both 4 mod 32 words.
  static constexpr int kRowBytes = Grouped<T>::kGroupBytes;
  static constexpr int kWeightBytes = kTileRows * kRowBytes;
  static constexpr int kTokenBytes = Tokens * kTokenStride;
  static constexpr int kScaleBytes = Tokens * 8 * 4;
  static constexpr int kBytes = kWeightBytes + kTokenBytes + kScaleBytes;
};

__device__ __forceinline__ void copy16(void* smem, const void* gmem) {
  const auto s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
template <int N>
__device__ __forceinline__ void wait_groups() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// d (16 x 8, int32) = a (16 x 32, int8, row-major) b (32 x 8, int8, column-major).
__device__ __forceinline__ void mma_s8(int (&d)[4], const int (&a)[4], const int (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%10, %10, %10, %10};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(0));
}

// float(v) for |v| < 2^22 (a block's dot product: at most 32 * 127 * 127): v added to the bits
// of 1.5 * 2^23, whose float spacing is 1, less 1.5 * 2^23. An integer add and a float add, both
// at full rate, where the conversion instruction runs at a quarter (four per mma would bound it).
__device__ __forceinline__ float exact_float(int v) {
  return __int_as_float(0x4B400000 + v) - 12582912.0f;
}

// Block b's quants at columns 4t..4t+3 (lo) and 16+4t..16+4t+3 (hi) of a row in the stage, as
// int8 values: a Q4_0 byte holds column j in its low nibble and j + 16 in its high one.
template <DType T>
__device__ __forceinline__ void quants(const uint8_t* row, int b, int t, int& lo, int& hi) {
  const uint8_t* q = row + 16 + b * Grouped<T>::kQuantBytes + 4 * t;
  if constexpr (T == kQ4_0x8) {
    const uint32_t v = *reinterpret_cast<const uint32_t*>(q);
    lo = static_cast<int>(__vsub4(v & 0x0F0F0F0Fu, 0x08080808u));
    hi = static_cast<int>(__vsub4((v >> 4) & 0x0F0F0F0Fu, 0x08080808u));
  } else {
    lo = *reinterpret_cast<const int*>(q);
    hi = *reinterpret_cast<const int*>(q + 16);
  }
}

// y[i * ldy + r] = sum over blocks b of d_w[r][b] * d_x[i][b] * (q_w[r][b] . q_x[i][b]), for the
// rows r of W and the rows i of x: blockIdx.y's 64 of the n rows, or with `tiles` the rows of
// tile blockIdx.y {expert, first row, rows (at most 64), 0}, W = mats[expert]. Rows and tokens
// past the end are loaded from the last one and not stored.
// The kernel's template argument is the type's value as an int: nvcc's host stubs cannot name an
// enum template argument of a kernel in an unnamed namespace.
template <int Type, int Tokens>
__global__ void __launch_bounds__(kThreads)
    mma_q8_kernel(const uint8_t* w, const uint8_t* const* mats, const int4* tiles, int64_t rows,
                  int64_t row_bytes, int64_t groups, const int8_t* xq, const float* xd, int64_t n,
                  float* y, int64_t ldy) {
  constexpr DType T = static_cast<DType>(Type);
  using S = MmaStage<T, Tokens>;
  // Warps side by side along the tokens (WN), fragments a warp (MT x NT).
  constexpr int WN = Tokens == 64 ? 2 : 1, MT = kTileRows / (4 / WN * 16), NT = Tokens / (WN * 8);
  extern __shared__ __align__(16) uint8_t smem[];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;  // the fragments' row group and thread in group
  const int64_t r0 = int64_t{blockIdx.x} * kTileRows;
  int64_t i0 = int64_t{blockIdx.y} * Tokens, end = n;
  if (tiles) {
    const int4 tile = tiles[blockIdx.y];
    w = mats[tile.x], i0 = tile.y, end = int64_t{tile.y} + tile.z;
  }
  if (end <= i0) return;  // an unused tile (group_experts' table is sized for the most)
  const int64_t cols = groups * 256;

  const auto load = [&](int stage, int64_t grp) {
    uint8_t* sw = smem + stage * S::kBytes;
    uint8_t* sx = sw + S::kWeightBytes;
    uint8_t* sd = sx + S::kTokenBytes;
    constexpr int kChunks = S::kRowBytes / 16;
    for (int c = tid; c < kTileRows * kChunks; c += kThreads) {
      const int r = c / kChunks, part = c % kChunks;
      const int64_t row = min(r0 + r, rows - 1);
      copy16(sw + r * S::kRowBytes + part * 16,
             w + row * row_bytes + grp * S::kRowBytes + part * 16);
    }
    for (int c = tid; c < Tokens * 16; c += kThreads) {
      const int i = c >> 4, part = c & 15;
      const int64_t tok = min(i0 + i, end - 1);
      copy16(sx + i * kTokenStride + part * 16, xq + tok * cols + grp * 256 + part * 16);
    }
    for (int c = tid; c < Tokens * 2; c += kThreads) {
      const int i = c >> 1, part = c & 1;
      const int64_t tok = min(i0 + i, end - 1);
      copy16(sd + i * 32 + part * 16, xd + tok * (cols / 32) + grp * 8 + part * 4);
    }
    commit();
  };

  const int wm = warp / WN * MT * 16, wn = warp % WN * NT * 8;  // the warp's first row and token
  float acc[MT][NT][4] = {};
  load(0, 0);
  for (int64_t grp = 0; grp < groups; ++grp) {
    if (grp + 1 < groups) {
      load(static_cast<int>((grp + 1) & 1), grp + 1);
      wait_groups<1>();
    } else {
      wait_groups<0>();
    }
    __syncthreads();
    const uint8_t* sw = smem + (grp & 1) * S::kBytes;
    const uint8_t* sx = sw + S::kWeightBytes;
    const auto* sd = reinterpret_cast<const float*>(sx + S::kTokenBytes);
#pragma unroll
    for (int b = 0; b < 8; ++b) {
      int a[MT][4], bq[NT][2];
      float dw[MT][2], dx[NT][2];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        const uint8_t* top = sw + (wm + mt * 16 + g) * S::kRowBytes;
        const uint8_t* bottom = top + 8 * S::kRowBytes;
        quants<T>(top, b, t, a[mt][0], a[mt][2]);
        quants<T>(bottom, b, t, a[mt][1], a[mt][3]);
        dw[mt][0] = __half2float(reinterpret_cast<const __half*>(top)[b]);
        dw[mt][1] = __half2float(reinterpret_cast<const __half*>(bottom)[b]);
      }
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint8_t* q = sx + (wn + nt * 8 + g) * kTokenStride + b * 32 + 4 * t;
        bq[nt][0] = *reinterpret_cast<const int*>(q);
        bq[nt][1] = *reinterpret_cast<const int*>(q + 16);
        const int i = wn + nt * 8 + 2 * t;
        dx[nt][0] = sd[i * 8 + b];
        dx[nt][1] = sd[(i + 1) * 8 + b];
      }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          int d[4];
          mma_s8(d, a[mt], bq[nt]);
#pragma unroll
          for (int e = 0; e < 4; ++e)
            acc[mt][nt][e] += dw[mt][e >> 1] * dx[nt][e & 1] * exact_float(d[e]);
        }
    }
    __syncthreads();  // the stage is loaded again two groups on
  }

#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t r = r0 + wm + mt * 16 + g + (e >> 1) * 8;
        const int64_t i = i0 + wn + nt * 8 + 2 * t + (e & 1);
        if (r < rows && i < end) y[i * ldy + r] = acc[mt][nt][e];
      }
}

template <DType T, int Tokens>
void launch(const uint8_t* w, const uint8_t* const* mats, const int4* tiles, unsigned token_blocks,
            int64_t rows, int64_t cols, int64_t row_bytes, const Q8Rows& x, int64_t n, float* y,
            cudaStream_t s) {
  constexpr int kType = static_cast<int>(T);
  constexpr int bytes = 2 * MmaStage<T, Tokens>::kBytes;  // two stages: one loads, one multiplies
  static const bool opted_in = [] {
    EPWA_CUDA(cudaFuncSetAttribute(mma_q8_kernel<kType, Tokens>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    return true;
  }();
  (void)opted_in;
  const dim3 grid(static_cast<unsigned>((rows + kTileRows - 1) / kTileRows), token_blocks);
  mma_q8_kernel<kType, Tokens><<<grid, kThreads, bytes, s>>>(w, mats, tiles, rows, row_bytes,
                                                             cols / 256, x.q, x.d, n, y, rows);
  check_cuda(cudaGetLastError(), "mma_q8 kernel");
}

// f(type, tokens) with the tile of the fewest tokens that holds `most` rows (8, 16 or 64).
template <typename F>
void dispatch(DType type, int64_t most, F&& f) {
  const auto by_tokens = [&](auto T) {
    if (most <= 8)
      f(T, std::integral_constant<int, 8>{});
    else if (most <= 16)
      f(T, std::integral_constant<int, 16>{});
    else
      f(T, std::integral_constant<int, 64>{});
  };
  if (type == kQ4_0x8)
    by_tokens(std::integral_constant<DType, kQ4_0x8>{});
  else if (type == kQ8_0x8)
    by_tokens(std::integral_constant<DType, kQ8_0x8>{});
  else
    throw Error("mma_q8: weights of type " + std::to_string(static_cast<int>(type)));
}

}  // namespace

bool mma_q8_fits(DType type, int64_t cols, int64_t row_bytes, const void* data) {
  return (type == kQ4_0x8 || type == kQ8_0x8) && cols % 256 == 0 && row_bytes % 16 == 0 &&
         reinterpret_cast<uintptr_t>(data) % 16 == 0;
}

void mma_q8(const DevMatrix& w, const Q8Rows& x, int64_t n, float* y, cudaStream_t s) {
  if (n == 0 || w.rows == 0) return;
  const auto fail = [&] {
    return Error("mma_q8: a matrix of type " + std::to_string(static_cast<int>(w.type)) + ", " +
                 std::to_string(w.cols) + " columns, for " + std::to_string(n) + " rows");
  };
  if (!mma_q8_fits(w.type, w.cols, w.row_bytes, w.data)) throw fail();
  dispatch(w.type, n, [&](auto T, auto tok) {
    constexpr int64_t tokens = decltype(tok)::value;
    const int64_t token_blocks = (n + tokens - 1) / tokens;
    if (token_blocks > 65535) throw fail();
    launch<decltype(T)::value, tokens>(w.data, nullptr, nullptr,
                                       static_cast<unsigned>(token_blocks), w.rows, w.cols,
                                       w.row_bytes, x, n, y, s);
  });
}

void mma_q8_experts(const uint8_t* const* mats, DType type, int64_t rows, int64_t cols,
                    int64_t row_bytes, const int4* tiles, int64_t count, int64_t tile_tokens,
                    const Q8Rows& x, float* y, cudaStream_t s) {
  if (count == 0 || rows == 0) return;
  if (count > 65535) throw Error("mma_q8: " + std::to_string(count) + " expert tiles");
  if (tile_tokens != kTileSlots && tile_tokens != kTileTokens)
    throw Error("mma_q8: expert tiles of " + std::to_string(tile_tokens) + " rows");
  dispatch(type, tile_tokens, [&](auto T, auto tok) {
    launch<decltype(T)::value, decltype(tok)::value>(
        nullptr, mats, tiles, static_cast<unsigned>(count), rows, cols, row_bytes, x, 0, y, s);
  });
}

}  // namespace epwa::cuda
