// The tiled multi-vector kernels (src/quant/gemm_avx2.cpp, gemm_avx512.cpp) behind
// vec_dot_rows_multi on every x86 level this CPU runs, on
// fresh random data, against a double-precision dot of the dequantised rows with the packed
// activations (what the integer kernel computes exactly). Bound, with M = sum_i |w_i| |xq_i| plus
// the magnitude of the offset terms (Q4_0: 8 |d_b| sum |xq_i|; Q6_K: 32 |d sc_g| sum |xq_i|;
// Q4_K/Q5_K, whose w = d sc q - dmin m: (31 |d sc_j| + |dmin m_j|) sum |xq_i| per sub-block j):
//   |fast - exact| <= 2e-5 * M   (float roundings only: ~n/128 + 8 chained roundings of 2^-24,
//                                 i.e. < 1e-6 relative for n <= 4096; 2e-5 leaves room but a wrong
//                                 block, lane or scale gives O(1) errors)
// and bit-identical to the one-row kernel (vec_dot_rows): the tiles form the same exact integer
// block sums and repeat the decode kernels' float steps (the engine relies on prompt and decode
// logits agreeing to the bit). The scalar reference (other float order) is held to twice the bound.
// MXFP4 (f32 activations, AVX-512 VNNI level only) has no integer sums: its products are exact and
// each (row, vector) adds them in one 16-lane FMA chain (n/16 + 4 roundings, < 1.6e-5 relative
// for n <= 4096), the decode kernel's chain.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "epwa/quant.hpp"
#include "quant/blocks.hpp"
#include "quant/kernels.hpp"
#include "quant_test_util.hpp"

using namespace epwa;

namespace {

bool super_blocks(DType t) {
  return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

// Every kernel level this CPU runs that has a tiled kernel for t (the AVX-512 VNNI level falls back
// to the AVX2 tiles for the types it has none for; MXFP4 has tiles on that level only).
std::vector<KernelIsa> tiled_isas(DType t) {
  std::vector<KernelIsa> v;
  for (KernelIsa isa : test::runnable_isas())
    if ((isa >= KernelIsa::Avx2 && quant::gemm_avx2(t)) ||
        (isa == KernelIsa::Avx512Vnni && quant::gemm_avx512vnni(t)))
      v.push_back(isa);
  return v;
}
bool tiled(DType t) {
  return !tiled_isas(t).empty();
}

std::vector<std::byte> quantized(DType t, const std::vector<float>& w, int64_t rows, int64_t n) {
  std::vector<std::byte> b(static_cast<size_t>(dtype_bytes(t, n) * rows));
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(t, w.data() + r * n, b.data() + r * dtype_bytes(t, n), n);
  return b;
}

// The f16 scale d at the start of a Q4_0 or Q8_0 block.
double block_scale(const std::byte* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return static_cast<double>(f16_to_f32(h));
}

double xq(const PackedVector& p, int64_t i) {
  if (p.format() == ActFormat::F32) return p.f32()[i];
  return static_cast<double>(p.qs()[i]) *
         p.scales()[i / (p.format() == ActFormat::Q8Block32 ? 32 : 256)];
}

// Runs vec_dot_rows_multi over rows [r0, rows) with out_stride rows + 3 and checks every value
// against the exact dot and against vec_dot_rows; rows before r0 and the padding stay untouched.
void check_isa(KernelIsa isa, DType t, const std::vector<std::byte>& w, int64_t rows, int64_t n,
               const std::vector<PackedVector>& xs, int64_t r0) {
  SCOPED_TRACE(std::string(isa_name(isa)));
  const int64_t rb = dtype_bytes(t, n), ld = rows + 3;
  const auto nv = static_cast<int64_t>(xs.size());
  std::vector<float> out(static_cast<size_t>(nv * ld), -7.0f), one(static_cast<size_t>(rows));
  vec_dot_rows_multi(w.data(), rb, xs, r0, rows, out.data(), ld, isa);
  std::vector<float> wd(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    const std::byte* row = w.data() + r * rb;
    dequantize_row(t, row, wd.data(), n);
    for (int64_t v = 0; v < nv; ++v) {
      const float got = out[v * ld + r];
      if (r < r0) {
        ASSERT_EQ(got, -7.0f) << "row " << r << " outside the range was written";
        continue;
      }
      double exact = 0, mag = 0;
      for (int64_t i = 0; i < n; ++i) {
        exact += wd[i] * xq(xs[v], i);
        mag += std::abs(wd[i] * xq(xs[v], i));
        if (t == DType::Q4_0 && i % 32 == 0) {
          double ys = 0;
          for (int64_t j = i; j < i + 32; ++j) ys += std::abs(xq(xs[v], j));
          mag += 8 * ys * std::abs(block_scale(row + (i / 32) * dtype_bytes(t, 32)));
        }
        if ((t == DType::Q4_K || t == DType::Q5_K) && i % 32 == 0) {
          const std::byte* sb = row + (i / 256) * dtype_bytes(t, 256);
          uint8_t sc, m;
          quant::scale_min_k4(static_cast<int>(i % 256 / 32), quant::u8(sb + quant::Q4_K::scales),
                              sc, m);
          double ys = 0;
          for (int64_t j = i; j < i + 32; ++j) ys += std::abs(xq(xs[v], j));
          mag += ys * (31 * sc * std::abs(block_scale(sb + quant::Q4_K::d)) +
                       m * std::abs(block_scale(sb + quant::Q4_K::dmin)));
        }
        if (t == DType::Q6_K && i % 16 == 0) {  // w = d sc (q - 32): 2 * 32 |d sc| covers both
          const std::byte* sb = row + (i / 256) * quant::Q6_K::bytes;
          const auto sc = static_cast<int8_t>(sb[quant::Q6_K::scales + i % 256 / 16]);
          double ys = 0;
          for (int64_t j = i; j < i + 16; ++j) ys += std::abs(xq(xs[v], j));
          mag += 64 * ys * std::abs(sc * block_scale(sb + quant::Q6_K::d));
        }
      }
      const double bound = 2e-5 * mag + 1e-30;
      ASSERT_LE(std::abs(got - exact), bound) << "row " << r << " vector " << v << " of " << nv;
      const float scalar = vec_dot_packed(row, xs[v], KernelIsa::Scalar);
      ASSERT_LE(std::abs(got - scalar), 2 * bound) << "row " << r << " vector " << v << " (scalar)";
      vec_dot_rows(w.data(), rb, xs[v], r, r + 1, one.data(), isa);
      ASSERT_EQ(got, one[r]) << "row " << r << " vector " << v;
    }
    for (int64_t v = 0; v < nv; ++v)
      for (int64_t p = rows; p < ld; ++p) ASSERT_EQ(out[v * ld + p], -7.0f) << "padding written";
  }
}
void check(DType t, const std::vector<std::byte>& w, int64_t rows, int64_t n,
           const std::vector<PackedVector>& xs, int64_t r0) {
  for (KernelIsa isa : tiled_isas(t)) check_isa(isa, t, w, rows, n, xs, r0);
}

}  // namespace

TEST(GemmTiled, RandomMatricesEveryVectorCountAndLength) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q6_K, DType::Q4_K, DType::Q5_K, DType::MXFP4}) {
    if (!tiled(t)) GTEST_SKIP() << "no tiled kernel on this CPU";
    // n: one block, a partial group of four blocks, whole groups, whole groups plus a partial one
    // (super-block types: one to five super-blocks)
    for (int64_t n : {32, 96, 128, 160, 1024 + 64}) {
      if (super_blocks(t)) n = n <= 128 ? 256 * (n / 32) : 1280;
      const int64_t rows = 5;
      const auto w = quantized(t, test::gaussian(rng, rows * n), rows, n);
      for (int64_t nv : {1, 3, 8, 9, 17}) {
        SCOPED_TRACE(std::string(dtype_name(t)) + " n=" + std::to_string(n) +
                     " vectors=" + std::to_string(nv));
        std::vector<PackedVector> xs(static_cast<size_t>(nv));
        for (auto& p : xs) p.pack(t, test::gaussian(rng, n, 3.0f));
        check(t, w, rows, n, xs, nv % 2);
      }
    }
  }
}

// Tiles of several rows (Q4_0 and the K-quants at the AVX-512 VNNI level: four rows per tile,
// the last rows % 4 one by one; Q8_0 three): every row count and start of the range against the
// decode kernel to the bit, with vector counts below, at and above a pass of eight or sixteen and
// lengths with a partial group (super-block types: one, two and nine super-blocks).
TEST(GemmTiled, RowTilesEveryRowCountAndStart) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4}) {
    if (!tiled(t)) GTEST_SKIP() << "no tiled kernel on this CPU";
    for (int64_t n : {32, 288, 2048 + 96}) {
      if (super_blocks(t)) n = n == 32 ? 256 : n == 288 ? 512 : 2304;
      const int64_t rows = 11;
      const auto w = quantized(t, test::gaussian(rng, rows * n), rows, n);
      for (int64_t nv : {1, 2, 7, 8, 19, 33}) {
        std::vector<PackedVector> xs(static_cast<size_t>(nv));
        for (auto& p : xs) p.pack(t, test::gaussian(rng, n, 3.0f));
        for (int64_t end = 1; end <= rows; ++end)
          for (int64_t r0 = 0; r0 < std::min<int64_t>(end, 4); ++r0) {
            SCOPED_TRACE(std::string(dtype_name(t)) + " n=" + std::to_string(n) +
                         " vectors=" + std::to_string(nv) + " rows [" + std::to_string(r0) + ", " +
                         std::to_string(end) + ")");
            const std::vector<std::byte> head(w.begin(), w.begin() + end * dtype_bytes(t, n));
            check(t, head, end, n, xs, r0);
          }
      }
    }
  }
}

TEST(GemmTiled, ManyVectorsSpanSeveralRepackBatches) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q6_K, DType::Q4_K, DType::Q5_K, DType::MXFP4}) {
    if (!tiled(t)) GTEST_SKIP() << "no tiled kernel on this CPU";
    const int64_t rows = 3, n = 4096, nv = 53;  // batches of 40 (super-blocks: 48) vectors here
    const auto w = quantized(t, test::gaussian(rng, rows * n), rows, n);
    std::vector<PackedVector> xs(nv);
    for (auto& p : xs) p.pack(t, test::gaussian(rng, n));
    check(t, w, rows, n, xs, 0);
  }
}

// Extreme bytes: Q4_0 nibbles all 0 or all 15 and Q8_0 values of -128/127 against activations of
// +-127, the largest int16 partial sums the kernels form (saturation would show as a large error).
TEST(GemmTiled, ExtremeValuesDoNotSaturate) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t rows = 4, n = 256;
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q6_K, DType::Q4_K, DType::Q5_K}) {
    if (!tiled(t)) GTEST_SKIP() << "no tiled kernel on this CPU";
    if (t == DType::Q4_K || t == DType::Q5_K) {
      // every value 15 (Q5_K: 31), scales and mins 63, or all zero, alternating per super-block:
      // the int16 pair sums reach 4 * 31 * 127 = 15748
      const int64_t sbytes = dtype_bytes(t, 256);
      std::vector<std::byte> w(static_cast<size_t>(rows * dtype_bytes(t, n)));
      for (size_t b = 0; b < w.size(); b += static_cast<size_t>(sbytes)) {
        const bool high = b / static_cast<size_t>(sbytes) % 2 == 0;
        for (size_t i = quant::Q4_K::scales; i < static_cast<size_t>(sbytes); ++i)
          w[b + i] = std::byte(high ? 0xFF : 0x00);
        test::put_u16(w, b + quant::Q4_K::d, f32_to_f16(0.01f));
        test::put_u16(w, b + quant::Q4_K::dmin, f32_to_f16(0.02f));
      }
      std::vector<PackedVector> xs(8);
      for (size_t v = 0; v < xs.size(); ++v) {
        std::vector<float> x(n);
        for (int64_t i = 0; i < n; ++i) x[i] = (v % 2 == 0 || i % 3 == 0) ? 1.0f : -1.0f;
        xs[v].pack(t, x);
      }
      check(t, w, rows, n, xs, 0);
      continue;
    }
    if (t == DType::Q6_K) {  // values 63 or 0 (q - 32 = 31 / -32), scales 127 or -128
      std::vector<std::byte> w(static_cast<size_t>(rows * dtype_bytes(t, n)));
      for (size_t b = 0; b < w.size(); b += quant::Q6_K::bytes) {
        const bool high = b / quant::Q6_K::bytes % 2 != 0;
        for (size_t i = 0; i < quant::Q6_K::scales; ++i) w[b + i] = std::byte(high ? 0xFF : 0x00);
        for (size_t i = quant::Q6_K::scales; i < quant::Q6_K::d; ++i)
          w[b + i] = std::byte(high ? 0x7F : 0x80);
        test::put_u16(w, b + quant::Q6_K::d, f32_to_f16(0.01f));
      }
      std::vector<PackedVector> xs(8);
      for (size_t v = 0; v < xs.size(); ++v)
        xs[v].pack(t, std::vector<float>(n, v % 2 ? 1.0f : -1.0f));
      check(t, w, rows, n, xs, 0);
      continue;
    }
    const int64_t bb = dtype_bytes(t, 32), rb = dtype_bytes(t, n);
    std::vector<std::byte> w(static_cast<size_t>(rows * rb));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < n / 32; ++b) {
        std::byte* blk = w.data() + r * rb + b * bb;
        test::put_u16(w, static_cast<size_t>(blk - w.data()), f32_to_f16(0.5f + 0.25f * r));
        const bool high = (r + b) % 2 == 0;
        for (int64_t i = 2; i < bb; ++i)
          blk[i] = t == DType::Q4_0 ? std::byte(high ? 0xFF : 0x00)
                                    : std::byte(high ? 0x80 : 0x7F);  // -128 / 127
      }
    std::vector<PackedVector> xs(8);
    for (size_t v = 0; v < xs.size(); ++v) {
      std::vector<float> x(n);
      for (int64_t i = 0; i < n; ++i) x[i] = (v % 2 == 0 || i % 3 == 0) ? 1.0f : -1.0f;
      xs[v].pack(t, x);  // every value +-127 at scale 1/127
    }
    check(t, w, rows, n, xs, 0);
  }
}

// Vectors given by address (the prompt's experts pick their tokens' packed rows out of the layer's
// without copying them): in any order and with repeats, each value equals, to the bit, the one of
// the call over a contiguous copy of the same vectors, on every level this CPU runs; for tiled
// types and for one without tiles (the multi-vector decode kernel path), several repack batches.
TEST(GemmTiled, VectorsByAddressEqualTheContiguousCall) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::Q5_0}) {
    const int64_t rows = 9, n = super_blocks(t) ? 1024 : 2048 + 96, nv = 23;
    const auto w = quantized(t, test::gaussian(rng, rows * n), rows, n);
    std::vector<PackedVector> pool(static_cast<size_t>(nv));
    for (auto& p : pool) p.pack(t, test::gaussian(rng, n, 3.0f));
    for (int64_t count : {1, 5, 16, 130}) {
      std::vector<const PackedVector*> by_address;
      std::vector<PackedVector> copies;
      for (int64_t i = 0; i < count; ++i) {
        by_address.push_back(&pool[static_cast<size_t>((7 * i + 3) % nv)]);
        copies.push_back(*by_address.back());
      }
      for (KernelIsa isa : test::runnable_isas()) {
        SCOPED_TRACE(std::string(dtype_name(t)) + " " + std::string(isa_name(isa)) +
                     " vectors=" + std::to_string(count));
        const int64_t rb = dtype_bytes(t, n), ld = rows + 1;
        std::vector<float> a(static_cast<size_t>(count * ld), -7.0f), b = a;
        vec_dot_rows_multi(w.data(), rb, std::span<const PackedVector* const>(by_address), 1, rows,
                           a.data(), ld, isa);
        vec_dot_rows_multi(w.data(), rb, std::span<const PackedVector>(copies), 1, rows, b.data(),
                           ld, isa);
        ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
        ASSERT_EQ(a[0], -7.0f);  // row 0 is outside the range
      }
    }
  }
}

// The AVX-512 VNNI level has two sets of Q4_0 tiles: weights unpacked by 128-bit inserts, or by
// the byte permutes of AVX-512 VBMI where the CPU has them (vec_dot_rows_multi takes those, so the
// tests above cover only one set on such a CPU). Each value of both equals the decode kernel's to
// the bit: 1-4 row tiles, 1-16 vectors a pass and several passes, a short last group of blocks.
TEST(GemmTiled, Q4_0TilesWithAndWithoutByteShufflesEqualTheDecodeKernel) {
  if (!isa_available(KernelIsa::Avx512Vnni) || !quant::gemm_avx512vnni(DType::Q4_0, false))
    GTEST_SKIP() << "no AVX-512 VNNI tiles on this CPU";
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const DType t = DType::Q4_0;
  for (bool vbmi : {false, true}) {
    if (vbmi && !cpu_features().avx512vbmi) continue;
    const quant::RowsMultiDot g = quant::gemm_avx512vnni(t, vbmi);
    for (int64_t n : {32, 288, 2048 + 96}) {
      const int64_t rows = 11, rb = dtype_bytes(t, n);
      const auto w = quantized(t, test::gaussian(rng, rows * n), rows, n);
      for (int64_t nv : {1, 5, 16, 37}) {
        SCOPED_TRACE(std::string(vbmi ? "VBMI" : "inserts") + " n=" + std::to_string(n) +
                     " vectors=" + std::to_string(nv));
        std::vector<PackedVector> xs(static_cast<size_t>(nv));
        std::vector<const PackedVector*> ptrs;
        for (auto& p : xs) {
          p.pack(t, test::gaussian(rng, n, 3.0f));
          ptrs.push_back(&p);
        }
        std::vector<float> out(static_cast<size_t>(nv * rows), -7.0f), one(rows);
        g(w.data(), rb, ptrs, 1, rows, out.data(), rows);
        for (int64_t v = 0; v < nv; ++v) {
          vec_dot_rows(w.data(), rb, xs[v], 1, rows, one.data(), KernelIsa::Avx2);
          ASSERT_EQ(out[v * rows], -7.0f) << "row 0 is outside the range";
          for (int64_t r = 1; r < rows; ++r)
            ASSERT_EQ(out[v * rows + r], one[r]) << "row " << r << " vector " << v;
        }
      }
    }
  }
}

// Vectors repacked once (TiledVectors) and used by several calls over row ranges give, to the bit,
// the values of the calls on the vectors themselves, on every level this CPU runs, for counts of
// one pass, several passes and several of run_tiles' repack batches; types without format tiles
// on a level (MXFP4, Q5_0) report tiled() false.
TEST(GemmTiled, VectorsRepackedOnceEqualTheCallsOnTheVectors) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::MXFP4,
                  DType::Q5_0}) {
    const int64_t rows = 13, n = super_blocks(t) ? 1024 : 2048 + 96, rb = dtype_bytes(t, n);
    const auto w = quantized(t, test::gaussian(rng, rows * n), rows, n);
    std::vector<PackedVector> pool(70);
    for (auto& p : pool) p.pack(t, test::gaussian(rng, n, 3.0f));
    for (KernelIsa isa : test::runnable_isas()) {
      for (int64_t count : {2, 16, 37, 70}) {
        SCOPED_TRACE(std::string(dtype_name(t)) + " " + std::string(isa_name(isa)) +
                     " vectors=" + std::to_string(count));
        std::vector<const PackedVector*> xs;
        for (int64_t i = 0; i < count; ++i) xs.push_back(&pool[static_cast<size_t>((5 * i) % 70)]);
        TiledVectors tv;
        tv.repack(xs, isa);
        const bool expect = isa != KernelIsa::Scalar && t != DType::MXFP4 && t != DType::Q5_0;
        ASSERT_EQ(tv.tiled(), expect);
        if (!expect) continue;
        ASSERT_EQ(tv.count(), count);
        const int64_t ld = rows + 2;
        std::vector<float> a(static_cast<size_t>(count * ld), -7.0f), b = a;
        for (auto [r0, r1] : {std::pair<int64_t, int64_t>{0, 5}, {5, 6}, {6, rows}}) {
          vec_dot_rows_multi(w.data(), rb, tv, r0, r1, a.data(), ld);
          vec_dot_rows_multi(w.data(), rb, std::span<const PackedVector* const>(xs), r0, r1,
                             b.data(), ld, isa);
        }
        ASSERT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
        ASSERT_EQ(a[rows], -7.0f);  // padding untouched
      }
    }
  }
}

TEST(GemmTiled, VectorsRepackedOnceRejectMixedTypesAndUnrepackedUse) {
  PackedVector a, b;
  a.pack(DType::Q4_0, std::vector<float>(64, 1.0f));
  b.pack(DType::Q8_0, std::vector<float>(64, 1.0f));
  const PackedVector* xs[2] = {&a, &b};
  TiledVectors tv;
  EXPECT_THROW(tv.repack(xs), Error);
  std::vector<std::byte> w(static_cast<size_t>(dtype_bytes(DType::Q4_0, 64)));
  float out[1];
  EXPECT_THROW(
      vec_dot_rows_multi(w.data(), dtype_bytes(DType::Q4_0, 64), TiledVectors{}, 0, 1, out, 1),
      Error);
}
