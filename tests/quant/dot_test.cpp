// Every packed kernel on every ISA this CPU has, against the scalar f32 reference vec_dot, on fresh
// random data. Bounds (docs/QUANT.md):
//  - against the dot of the dequantised row with the *packed* activations (what the integer kernel
//    computes exactly): |fast - ref_q| <= 2e-5 * sum|w_i xq_i| (float rounding only);
//  - against vec_dot on the real x: additionally <= ||w||_2 * ||x - xq||_2 (Cauchy-Schwarz on the
//    activation rounding);
//  - float weight types: |fast - ref| <= 1e-4 * sum|w_i x_i|.
#include <gtest/gtest.h>

#include <cmath>

#include "epwa/error.hpp"
#include "epwa/quant.hpp"
#include "quant/kernels.hpp"
#include "quant_test_util.hpp"

using namespace epwa;

namespace {
// The activations as the packed kernels see them.
std::vector<double> unpacked(const PackedVector& p) {
  std::vector<double> v(static_cast<size_t>(p.size()));
  for (int64_t i = 0; i < p.size(); ++i) v[i] = test::packed_value(p, i);
  return v;
}

// Checks vec_dot_packed(isa) on every row of a {rows, n} matrix against both references.
void check_rows(DType t, KernelIsa isa, const std::vector<std::byte>& w, int64_t rows, int64_t n,
                const std::vector<float>& x) {
  PackedVector p;
  p.pack(t, x);
  const auto xq = unpacked(p);
  const int64_t rb = dtype_bytes(t, n);
  std::vector<float> wd(static_cast<size_t>(n));
  for (int64_t r = 0; r < rows; ++r) {
    const std::byte* row = w.data() + r * rb;
    dequantize_row(t, row, wd.data(), n);
    double ref_q = 0, mag_q = 0, mag = 0, w2 = 0, dx2 = 0;
    for (int64_t i = 0; i < n; ++i) {
      ref_q += wd[i] * xq[i];
      mag_q += std::fabs(wd[i] * xq[i]);
      mag += std::fabs(wd[i] * x[i]);
      w2 += static_cast<double>(wd[i]) * wd[i];
      dx2 += (x[i] - xq[i]) * (x[i] - xq[i]);
    }
    const double ref = vec_dot(t, row, x.data(), n);
    const double fast = vec_dot_packed(row, p, isa);
    SCOPED_TRACE(std::string(dtype_name(t)) + " on " + std::string(isa_name(isa)) + " row " +
                 std::to_string(r));
    if (p.format() == ActFormat::F32) {
      ASSERT_LE(std::fabs(fast - ref), 1e-4 * mag + 1e-30);
    } else {
      ASSERT_LE(std::fabs(fast - ref_q), 2e-5 * mag_q + 1e-30)
          << "fast " << fast << " ref_q " << ref_q;
      ASSERT_LE(std::fabs(fast - ref), std::sqrt(w2 * dx2) + 2e-5 * mag_q + 1e-30);
    }
  }
}

// Offsets of the f16 fields inside a block of t.
std::vector<size_t> half_offsets(DType t) {
  switch (t) {
    case DType::Q4_1:
    case DType::Q5_1:
    case DType::Q4_K:
    case DType::Q5_K:
      return {0, 2};
    case DType::Q6_K:
      return {208};
    case DType::MXFP4:
      return {};  // an e8m0 byte, set by the callers
    default:
      return {0};
  }
}

std::vector<std::byte> quantized_matrix(DType t, const std::vector<float>& w, int64_t rows,
                                        int64_t n) {
  std::vector<std::byte> b(static_cast<size_t>(dtype_bytes(t, n) * rows));
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(t, w.data() + r * n, b.data() + r * dtype_bytes(t, n), n);
  return b;
}
}  // namespace

TEST(VecDot, EveryTypeEveryIsaOnQuantizedGaussians) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t rows = 6, n = 4096;
  for (DType t : test::kAllTypes) {
    const auto w = test::gaussian(rng, rows * n, 0.02f);
    auto x = test::gaussian(rng, n, 1.0f);
    for (int i = 0; i < 8; ++i) x[rng() % n] *= 30.0f;  // outliers, as real activations have
    const auto b = quantized_matrix(t, w, rows, n);
    for (KernelIsa isa : test::runnable_isas()) check_rows(t, isa, b, rows, n, x);
  }
}

TEST(VecDot, RandomBlockBytesCoverEveryBitPattern) {
  // Random bytes as weights (so q8 -128, q6_k negative scales, all nibbles and fifth bits occur),
  // with the f16 scale fields set to finite values.
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.05f, 0.05f);
  const int64_t rows = 4, n = 1024;
  for (DType t : test::kAllTypes) {
    if (t == DType::F32 || t == DType::F16 || t == DType::BF16) continue;
    std::vector<std::byte> b(static_cast<size_t>(dtype_bytes(t, n) * rows));
    for (auto& v : b) v = std::byte(static_cast<uint8_t>(rng()));
    const auto halves = half_offsets(t);
    const int64_t bb = dtype_block_bytes(t);
    for (size_t blk = 0; blk < b.size() / bb; ++blk) {
      for (size_t o : halves) test::put_u16(b, blk * bb + o, f32_to_f16(u(rng)));
      if (t == DType::MXFP4)  // e8m0 scales 2^-128 .. 2^-121: the subnormal ones included
        b[blk * bb] = std::byte(static_cast<uint8_t>(blk % 2 ? rng() % 8 : 118 + rng() % 8));
    }
    auto x = test::gaussian(rng, n, 1.0f);
    for (KernelIsa isa : test::runnable_isas()) check_rows(t, isa, b, rows, n, x);
  }
}

TEST(VecDot, SaturatingExtremes) {
  // Largest magnitudes each format allows, against activations at +-127: the 16-bit pair sums of
  // maddubs must not saturate.
  const int64_t n = 256;
  std::vector<float> plus(n, 1.0f), alt(n);
  for (int64_t i = 0; i < n; ++i) alt[i] = i % 2 ? 1.0f : -1.0f;
  for (DType t : test::kAllTypes) {
    std::vector<std::byte> b(static_cast<size_t>(dtype_bytes(t, n)), std::byte{0xFF});
    if (t == DType::Q8_0)
      for (size_t blk = 0; blk < b.size() / 34; ++blk)
        for (int j = 0; j < 32; ++j) b[blk * 34 + 2 + j] = std::byte{0x80};  // -128
    const size_t bb = static_cast<size_t>(dtype_block_bytes(t));
    if (t != DType::F32 && t != DType::F16 && t != DType::BF16)
      for (size_t blk = 0; blk < b.size() / bb; ++blk) {
        for (size_t o : half_offsets(t)) test::put_u16(b, blk * bb + o, 0x3800);
        if (t == DType::Q6_K) b[blk * bb + 192] = std::byte{0x80};  // scale -128 for the first 16
        if (t == DType::MXFP4) b[blk * bb] = std::byte{127};        // codes 15 = -12, scale 2^-1
      }
    if (t == DType::F32 || t == DType::F16 || t == DType::BF16)
      for (size_t i = 0; i < b.size(); i += t == DType::F32 ? 4 : 2)
        t == DType::F32 ? (void)std::memcpy(&b[i], &plus[0], 4)
                        : test::put_u16(b, i, t == DType::F16 ? 0x3C00 : 0x3F80);
    for (KernelIsa isa : test::runnable_isas()) {
      check_rows(t, isa, b, 1, n, plus);
      check_rows(t, isa, b, 1, n, alt);
    }
  }
}

TEST(VecDot, FloatTypesHandleTails) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (int64_t n : {1, 7, 33, 4103})
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
      const auto w = test::gaussian(rng, 3 * n);
      const auto x = test::gaussian(rng, n);
      const auto b = quantized_matrix(t, w, 3, n);
      for (KernelIsa isa : test::runnable_isas()) check_rows(t, isa, b, 3, n, x);
    }
}

TEST(VecDot, AvxMatchesScalarPackedPath) {
  if (!isa_available(KernelIsa::Avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t n = 2048;
  for (DType t : test::kAllTypes) {
    const auto w = test::gaussian(rng, n);
    const auto x = test::gaussian(rng, n);
    const auto b = quantized_matrix(t, w, 1, n);
    PackedVector p;
    p.pack(t, x);
    const float s = vec_dot_packed(b.data(), p, KernelIsa::Scalar);
    const float a = vec_dot_packed(b.data(), p, KernelIsa::Avx2);
    EXPECT_NEAR(a, s, 2e-5 * (std::fabs(s) + std::sqrt(static_cast<double>(n)))) << dtype_name(t);
  }
}

TEST(VecDotRows, RangeWritesOnlyItsRows) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t rows = 16, n = 512;
  for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K, DType::F16}) {
    const auto w = test::gaussian(rng, rows * n);
    const auto x = test::gaussian(rng, n);
    const auto b = quantized_matrix(t, w, rows, n);
    const int64_t rb = dtype_bytes(t, n);
    PackedVector p;
    p.pack(t, x);
    for (KernelIsa isa : test::runnable_isas()) {
      std::vector<float> out(rows, -7.0f);
      vec_dot_rows(b.data(), rb, p, 3, 11, out.data(), isa);
      for (int64_t r = 0; r < rows; ++r) {
        if (r < 3 || r >= 11) {
          EXPECT_EQ(out[r], -7.0f) << r;
        } else {
          EXPECT_EQ(out[r], vec_dot_packed(b.data() + r * rb, p, isa)) << r;
        }
      }
    }
    std::vector<float> y(rows), y2(rows);
    matvec(t, b.data(), rows, n, x.data(), y.data());
    vec_dot_rows(b.data(), rb, p, 0, rows, y2.data());
    EXPECT_EQ(y, y2) << dtype_name(t);
  }
}

TEST(VecDotRows, BadArgumentsThrow) {
  std::vector<std::byte> b(4096);
  std::vector<float> out(8), x(64, 1.0f);
  PackedVector p;
  p.pack(DType::Q4_0, x);
  EXPECT_THROW(vec_dot_rows(b.data(), 36, p, 2, 1, out.data()), Error);
  EXPECT_THROW(vec_dot_rows(b.data(), 35, p, 0, 1, out.data()),
               Error);  // a q4_0 row of 64 is 36 bytes
  EXPECT_THROW(p.pack(DType::Q4_0, std::vector<float>(40, 1.0f)), Error);
  EXPECT_THROW(p.pack(DType::Q6_K, std::vector<float>(64, 1.0f)), Error);
  EXPECT_THROW(vec_dot(DType::Q5_K, b.data(), x.data(), 64), Error);
  std::vector<float> y(4);
  EXPECT_THROW(matvec(DType::Q8_0, b.data(), 4, 48, x.data(), y.data()), Error);
}

TEST(PackedVector, PacksBlocksWithSums) {
  std::vector<float> x(256);
  for (int i = 0; i < 256; ++i) x[i] = static_cast<float>(i % 32) - 10.0f;  // block amax 21
  PackedVector p;
  p.pack(DType::Q4_0, x);
  EXPECT_EQ(p.format(), ActFormat::Q8Block32);
  EXPECT_FLOAT_EQ(p.scales()[0], 21.0f / 127.0f);
  EXPECT_EQ(p.qs()[31], 127);
  int32_t s = 0;
  for (int i = 0; i < 32; ++i) s += p.qs()[i];
  EXPECT_EQ(p.sums()[0], s);
  p.pack(DType::Q6_K, x);
  EXPECT_EQ(p.format(), ActFormat::Q8Block256);
  EXPECT_EQ(p.size(), 256);
  s = 0;
  for (int i = 16; i < 32; ++i) s += p.qs()[i];
  EXPECT_EQ(p.sums()[1], s);
  p.pack(DType::BF16, x);
  EXPECT_EQ(p.format(), ActFormat::F32);
  EXPECT_EQ(p.f32()[5], x[5]);
}

TEST(PackedVector, Avx2PackingMatchesScalarBytes) {
  if (!isa_available(KernelIsa::Avx2)) GTEST_SKIP() << "no AVX2 on this CPU";
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t n = 1024;
  auto x = test::gaussian(rng, n);
  x[0] = 127.0f;  // block amax 127 -> d = 1: the halves below are exact ties
  x[1] = 2.5f, x[2] = -3.5f, x[3] = 0.5f;
  std::fill(x.begin() + 256, x.begin() + 288, 0.0f);  // an all-zero block
  for (auto [block, group] : {std::pair{32, 32}, std::pair{256, 16}}) {
    std::vector<int8_t> q1(n), q2(n);
    std::vector<float> d1(n / block), d2(n / block);
    std::vector<int32_t> s1(n / group), s2(n / group);
    quant::pack_q8_scalar(x.data(), n, block, group, q1.data(), d1.data(), s1.data());
    ASSERT_TRUE(quant::pack_q8_avx2(x.data(), n, block, group, q2.data(), d2.data(), s2.data()));
    EXPECT_EQ(q1, q2) << block;
    EXPECT_EQ(d1, d2) << block;
    EXPECT_EQ(s1, s2) << block;
    if (block == 32) {
      EXPECT_EQ(q1[1], 2) << "ties round to even";
      EXPECT_EQ(q1[2], -4);
      EXPECT_EQ(q1[3], 0);
    }
  }
}

TEST(VecDotRows, MultiVectorMatchesOneByOne) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t rows = 8, n = 512, nv = 11;
  for (DType t : test::kAllTypes) {
    const auto b = quantized_matrix(t, test::gaussian(rng, rows * n), rows, n);
    const int64_t rb = dtype_bytes(t, n);
    std::vector<PackedVector> xs(nv);
    for (auto& p : xs) p.pack(t, test::gaussian(rng, n));
    for (KernelIsa isa : test::runnable_isas()) {
      std::vector<float> out(nv * rows, -7.0f), one(rows);
      vec_dot_rows_multi(b.data(), rb, xs, 2, rows, out.data(), rows, isa);
      for (int64_t v = 0; v < nv; ++v) {
        vec_dot_rows(b.data(), rb, xs[v], 2, rows, one.data(), isa);
        for (int64_t r = 0; r < rows; ++r)
          EXPECT_EQ(out[v * rows + r], r < 2 ? -7.0f : one[r]) << v << " " << r;
      }
    }
  }
  std::vector<PackedVector> mixed(2);
  mixed[0].pack(DType::Q4_0, std::vector<float>(64, 1.0f));
  mixed[1].pack(DType::Q8_0, std::vector<float>(64, 1.0f));
  std::vector<std::byte> b(1024);
  std::vector<float> out(16);
  EXPECT_THROW(vec_dot_rows_multi(b.data(), 36, mixed, 0, 1, out.data(), 1), Error);
}
