// Decode (matrix-vector) kernels on shapes the other quant tests do not reach: every row length in
// blocks modulo the kernels' group of 8 blocks (the tail path), unaligned row starts, padded row
// strides, and results that must not depend on how rows are grouped or split across threads.
// Bounds as in dot_test.cpp (docs/KERNELS.md): against the dequantised row times the packed
// activations, |fast - ref_q| <= 2e-5 * sum |w_i xq_i|; float types 1e-4 * sum |w_i x_i|.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <numeric>

#include "epwa/quant.hpp"
#include "quant_test_util.hpp"

using namespace epwa;

namespace {
// |got - exact| within the documented bound for one row.
void expect_close(DType t, const std::byte* row, const PackedVector& p, const std::vector<float>& x,
                  float got) {
  const int64_t n = p.size();
  std::vector<float> wd(static_cast<size_t>(n));
  dequantize_row(t, row, wd.data(), n);
  double ref = 0, mag = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double xi = p.format() == ActFormat::F32 ? x[i] : test::packed_value(p, i);
    ref += wd[i] * xi;
    mag += std::fabs(wd[i] * xi);
  }
  const double bound = (p.format() == ActFormat::F32 ? 1e-4 : 2e-5) * mag + 1e-30;
  EXPECT_LE(std::fabs(got - ref), bound) << "got " << got << " ref " << ref;
}

// A {rows, n} matrix of quantized Gaussians with row stride `stride` >= the row's bytes, starting
// `skew` bytes into its buffer (mapped tensors need not be aligned).
struct Matrix {
  std::vector<std::byte> buf;
  int64_t stride = 0, skew = 0;
  const std::byte* row(int64_t r) const { return buf.data() + skew + r * stride; }
};
Matrix make_matrix(std::mt19937& rng, DType t, int64_t rows, int64_t n, int64_t pad, int64_t skew) {
  Matrix m;
  m.stride = dtype_bytes(t, n) + pad;
  m.skew = skew;
  m.buf.assign(static_cast<size_t>(skew + rows * m.stride), std::byte{0x5A});
  const auto w = test::gaussian(rng, rows * n, 0.02f);
  for (int64_t r = 0; r < rows; ++r)
    quantize_row(t, w.data() + r * n, m.buf.data() + skew + r * m.stride, n);
  return m;
}
}  // namespace

TEST(DecodeKernels, EveryBlockCountModuloTheGroup) {
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (DType t : test::kAllTypes) {
    const int64_t bs = dtype_block_size(t);
    // 1..17 blocks, and a long row with a partial last group
    std::vector<int64_t> counts(17);
    std::iota(counts.begin(), counts.end(), 1);
    counts.push_back(4096 / bs + 5);
    for (int64_t nb : counts) {
      const int64_t n = nb * bs, rows = 9;
      const Matrix m = make_matrix(rng, t, rows, n, 0, 0);
      auto x = test::gaussian(rng, n);
      x[rng() % n] *= 40.0f;
      PackedVector p;
      p.pack(t, x);
      for (KernelIsa isa : test::runnable_isas()) {
        SCOPED_TRACE(std::string(dtype_name(t)) + " " + std::string(isa_name(isa)) + " blocks " +
                     std::to_string(nb));
        std::vector<float> out(rows);
        vec_dot_rows(m.row(0), m.stride, p, 0, rows, out.data(), isa);
        for (int64_t r = 0; r < rows; ++r) {
          expect_close(t, m.row(r), p, x, out[r]);
          EXPECT_EQ(out[r], vec_dot_packed(m.row(r), p, isa)) << "row " << r;
        }
      }
    }
  }
}

TEST(DecodeKernels, ResultsDoNotDependOnTheRowSplit) {
  // Threads split rows at arbitrary points and the kernels group rows; each row's result must be
  // bit-identical whatever the split (also with unaligned rows and padded strides).
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t rows = 23;
  for (DType t : test::kAllTypes) {
    const int64_t bs = dtype_block_size(t);
    const int64_t n = bs * (bs == 32 ? 13 : 3);
    for (auto [pad, skew] : {std::pair<int64_t, int64_t>{0, 0}, {6, 3}, {64, 1}}) {
      const Matrix m = make_matrix(rng, t, rows, n, pad, skew);
      const auto x = test::gaussian(rng, n);
      PackedVector p;
      p.pack(t, x);
      for (KernelIsa isa : test::runnable_isas()) {
        SCOPED_TRACE(std::string(dtype_name(t)) + " " + std::string(isa_name(isa)) + " pad " +
                     std::to_string(pad) + " skew " + std::to_string(skew));
        std::vector<float> whole(rows);
        vec_dot_rows(m.row(0), m.stride, p, 0, rows, whole.data(), isa);
        for (int trial = 0; trial < 6; ++trial) {
          std::vector<float> split(rows, -1.0f);
          int64_t r0 = 0;
          while (r0 < rows) {
            const int64_t r1 = std::min<int64_t>(rows, r0 + 1 + static_cast<int64_t>(rng() % 9));
            vec_dot_rows(m.row(0), m.stride, p, r0, r1, split.data(), isa);
            r0 = r1;
          }
          ASSERT_EQ(split, whole) << "trial " << trial;
        }
        for (int64_t r = 0; r < rows; ++r) expect_close(t, m.row(r), p, x, whole[r]);
      }
    }
  }
}

TEST(DecodeKernels, OffsetCorrectionIsExactForConstantNibbles) {
  // Q4_0 with every nibble 8 stores zeros: the kernels' unsigned products minus 8 * sum(y) must
  // give exactly 0, whatever the activations.
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const int64_t n = 32 * 21;
  std::vector<std::byte> row(static_cast<size_t>(dtype_bytes(DType::Q4_0, n)), std::byte{0x88});
  for (int64_t b = 0; b < n / 32; ++b) test::put_u16(row, static_cast<size_t>(b * 18), 0x3C00);
  PackedVector p;
  p.pack(DType::Q4_0, test::gaussian(rng, n, 3.0f));
  for (KernelIsa isa : test::runnable_isas()) EXPECT_EQ(vec_dot_packed(row.data(), p, isa), 0.0f);
}

TEST(DecodeKernels, Q4_0VnniDecodeEqualsTheAvx2KernelToTheBit) {
  // The AVX-512 decode of Q4_0 (gemm_avx512.cpp, rows_q4_0_vnni) transposes each group of eight
  // blocks with byte permutes (block 7 from a third load) and sums with vpdpbusd: every qs byte
  // pattern, saturating activations, Mixtral's row width, partial last groups, unaligned rows and
  // padded strides must give the AVX2 kernel's floats bit for bit.
  if (!isa_available(KernelIsa::Avx512Vnni)) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  for (int64_t nb : {1, 7, 8, 9, 15, 16, 17, 128, 133}) {
    for (auto [pad, skew] : {std::pair<int64_t, int64_t>{0, 0}, {6, 3}}) {
      SCOPED_TRACE("blocks " + std::to_string(nb) + " pad " + std::to_string(pad));
      const int64_t n = 32 * nb, rows = 37;
      Matrix m = make_matrix(rng, DType::Q4_0, rows, n, pad, skew);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t b = 0; b < nb; ++b)
          for (int64_t i = 0; i < 16; ++i)
            m.buf[static_cast<size_t>(skew + r * m.stride + 18 * b + 2 + i)] =
                static_cast<std::byte>(rng());
      auto x = test::gaussian(rng, n);
      for (int64_t b = 0; b < nb; b += 3) x[32 * b + rng() % 32] = (rng() % 2 ? 1e3f : -1e3f);
      PackedVector p;
      p.pack(DType::Q4_0, x);
      std::vector<float> vnni(rows), avx2(rows);
      vec_dot_rows(m.row(0), m.stride, p, 0, rows, vnni.data(), KernelIsa::Avx512Vnni);
      vec_dot_rows(m.row(0), m.stride, p, 0, rows, avx2.data(), KernelIsa::Avx2);
      for (int64_t r = 0; r < rows; ++r)
        ASSERT_EQ(std::bit_cast<uint32_t>(vnni[r]), std::bit_cast<uint32_t>(avx2[r]))
            << "row " << r << ": " << vnni[r] << " vs " << avx2[r];
    }
  }
}
