#include <algorithm>
#include <cmath>

#include "epwa/error.hpp"
#include "test_util.hpp"

namespace epwa {
namespace {
using test::kU;

const DType kTypes[] = {DType::F32, DType::F16, DType::BF16};
const int64_t kCols[] = {1, 7, 8, 15, 16, 33, 100, 257, 1030};
const int64_t kRows[] = {1, 3, 17, 64};

// Error bound of an f32 dot product of n terms summed in up to 32 lanes then combined pairwise:
// at most n/8 + 8 roundings on the sum of |w x| (a rigorous worst case, so the test cannot flake).
double dot_bound(int64_t n, double abs_sum) {
  return (static_cast<double>(n) / 8 + 8) * kU * abs_sum;
}

// matmul sums each block of 256 columns in column order (one rounding per term), then adds the
// blocks: at most min(n, 256) + n/256 + 2 roundings on the sum of |w x|.
double matmul_bound(int64_t n, double abs_sum) {
  return static_cast<double>(std::min<int64_t>(n, 256) + n / 256 + 2) * kU * abs_sum;
}

struct Ref {
  std::vector<double> y, abs;
};
Ref reference(const test::StoredMatrix& m, int64_t rows, int64_t cols, const float* x) {
  Ref r{std::vector<double>(rows), std::vector<double>(rows)};
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      r.y[i] += m.values[i * cols + j] * x[j];
      r.abs[i] += std::abs(m.values[i * cols + j] * x[j]);
    }
  return r;
}

TEST(Matvec, EveryIsaAndTypeMatchesDoubleReference) {
  ThreadPool pool(2);
  for (ops::Isa isa : ops::available_isas()) {
    test::IsaGuard g(isa);
    for (DType t : kTypes)
      for (int64_t rows : kRows)
        for (int64_t cols : kCols) {
          const uint64_t seed = test::fresh_seed();
          SCOPED_TRACE(std::string(ops::isa_name(isa)) + " " + std::string(dtype_name(t)) + " " +
                       std::to_string(rows) + "x" + std::to_string(cols) +
                       " seed=" + std::to_string(seed));
          std::mt19937_64 rng(seed);
          const auto m = test::random_matrix(t, rows, cols, rng, /*offset=*/cols % 3);
          const auto x = test::random_vector(cols, rng);
          std::vector<float> y(rows, NAN);
          matvec(m.view, x, y, pool);
          const Ref ref = reference(m, rows, cols, x.data());
          for (int64_t i = 0; i < rows; ++i)
            ASSERT_LE(std::abs(y[i] - ref.y[i]), dot_bound(cols, ref.abs[i])) << "row " << i;
        }
  }
}

TEST(Matvec, SimdAgreesWithScalar) {
  if (ops::best_isa() == ops::Isa::Scalar) GTEST_SKIP() << "no SIMD kernels on this CPU";
  ThreadPool pool(1);
  for (DType t : kTypes)
    for (int64_t cols : kCols) {
      const uint64_t seed = test::fresh_seed();
      SCOPED_TRACE(std::string(dtype_name(t)) + " cols=" + std::to_string(cols) +
                   " seed=" + std::to_string(seed));
      std::mt19937_64 rng(seed);
      const int64_t rows = 9;
      const auto m = test::random_matrix(t, rows, cols, rng, 1);
      const auto x = test::random_vector(cols, rng);
      std::vector<float> ys(rows), yv(rows);
      {
        test::IsaGuard g(ops::Isa::Scalar);
        matvec(m.view, x, ys, pool);
      }
      {
        test::IsaGuard g(ops::best_isa());
        matvec(m.view, x, yv, pool);
      }
      const Ref ref = reference(m, rows, cols, x.data());
      for (int64_t i = 0; i < rows; ++i)
        ASSERT_LE(std::abs(ys[i] - yv[i]), 2 * dot_bound(cols, ref.abs[i])) << "row " << i;
    }
}

TEST(Matvec, RowRangeAndExpertViewSelectTheRightRows) {
  std::mt19937_64 rng(test::fresh_seed());
  const int64_t E = 3, rows = 5, cols = 19;
  auto m = test::random_matrix(DType::F16, E * rows, cols, rng);
  TensorView merged = m.view;
  merged.name = "blk.0.ffn_up_exps";
  merged.shape = {E, rows, cols};
  const auto x = test::random_vector(cols, rng);
  std::vector<float> all(E * rows);
  matvec(m.view, x, all);
  for (int64_t e = 0; e < E; ++e) {
    const TensorView ev = expert_view(merged, e);
    EXPECT_EQ(ev.shape, (std::vector<int64_t>{rows, cols}));
    EXPECT_EQ(ev.name, "blk.0.ffn_up_exps[" + std::to_string(e) + "]");
    std::vector<float> y(rows);
    matvec(ev, x, y);
    for (int64_t i = 0; i < rows; ++i) EXPECT_EQ(y[i], all[e * rows + i]);
    std::vector<float> y2(2);
    matvec(ev, 1, 3, x, y2);
    EXPECT_EQ(y2[0], all[e * rows + 1]);
    EXPECT_EQ(y2[1], all[e * rows + 2]);
  }
  const TensorView rr = row_range(m.view, 4, 11);
  std::vector<float> y(7);
  matvec(rr, x, y);
  for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(y[i], all[4 + i]);
  EXPECT_THROW(expert_view(merged, 3), Error);
  // A {E, cols} stack (the experts' biases) gives rows of cols; a 1-D tensor is no stack.
  const TensorView bias = expert_view(m.view, 2);
  EXPECT_EQ(bias.shape, (std::vector<int64_t>{cols}));
  EXPECT_EQ(bias.data.data(), m.view.data.data() + 2 * cols * 2);
  TensorView flat = m.view;
  flat.shape = {E * rows * cols};
  EXPECT_THROW(expert_view(flat, 0), Error);
  EXPECT_THROW(row_range(m.view, 3, 16), Error);
}

TEST(Matvec, BadInputThrowsNamingTheTensor) {
  std::mt19937_64 rng(test::fresh_seed());
  auto m = test::random_matrix(DType::F32, 4, 8, rng);
  std::vector<float> x(8), y(4), small(3);
  EXPECT_THROW(matvec(m.view, small, y), Error);
  EXPECT_THROW(matvec(m.view, x, small), Error);
  EXPECT_THROW(matvec(m.view, 2, 5, x, small), Error);
  TensorView bad = m.view;
  bad.shape = {4, 9};
  try {
    matvec(bad, std::vector<float>(9), y);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  bad = m.view;
  bad.dtype = DType::Q8_0;
  EXPECT_THROW(matvec(bad, x, y), Error);
  EXPECT_THROW(matmul(bad, x.data(), 1, y.data()), Error);
}

TEST(Matmul, EqualsMatvecPerToken) {
  ThreadPool pool(2);
  // Up to 8 (a batched decode's expert products) each token gets matvec's values to the bit; 131:
  // two blocks of 128 tokens.
  const int64_t kTokens[] = {2, 3, 5, 8, 9, 64, 70, 131};
  const int64_t kShapes[][2] = {{1, 7}, {5, 33}, {17, 257}, {70, 1030}, {130, 16}};
  for (ops::Isa isa : ops::available_isas()) {
    test::IsaGuard g(isa);
    for (DType t : kTypes)
      for (const auto& s : kShapes)
        for (int64_t n : kTokens) {
          const int64_t rows = s[0], cols = s[1];
          const uint64_t seed = test::fresh_seed();
          SCOPED_TRACE(std::string(ops::isa_name(isa)) + " " + std::string(dtype_name(t)) + " " +
                       std::to_string(rows) + "x" + std::to_string(cols) +
                       " n=" + std::to_string(n) + " seed=" + std::to_string(seed));
          std::mt19937_64 rng(seed);
          const auto m = test::random_matrix(t, rows, cols, rng, 2);
          const auto x = test::random_vector(n * cols, rng);
          std::vector<float> y(n * rows, NAN), yv(rows);
          matmul(m.view, x.data(), n, y.data(), pool);
          for (int64_t tok = 0; tok < n; ++tok) {
            const float* xt = x.data() + tok * cols;
            matvec(m.view, std::span<const float>(xt, cols), yv, pool);
            const Ref ref = reference(m, rows, cols, xt);
            for (int64_t i = 0; i < rows; ++i) {
              const double bound = matmul_bound(cols, ref.abs[i]);
              ASSERT_LE(std::abs(y[tok * rows + i] - ref.y[i]), bound) << "token " << tok;
              ASSERT_LE(std::abs(y[tok * rows + i] - yv[i]), bound + dot_bound(cols, ref.abs[i]))
                  << "token " << tok;
              if (n <= 8) {
                ASSERT_EQ(y[tok * rows + i], yv[i]) << "token " << tok << " row " << i;
              }
            }
          }
        }
  }
}

// Every 16-bit pattern converts exactly as the portable converters of half.hpp do.
TEST(Convert, AllHalfAndBfloatPatternsAreExact) {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
  const auto* src = reinterpret_cast<const std::byte*>(all.data());
  std::vector<float> out(65536);
  for (ops::Isa isa : ops::available_isas()) {
    test::IsaGuard g(isa);
    SCOPED_TRACE(std::string(ops::isa_name(isa)));
    to_f32(DType::F16, src, out.data(), 65536);
    for (uint32_t i = 0; i < 65536; ++i) {
      const float ref = f16_to_f32(all[i]);
      if (std::isnan(ref))  // F16C quiets signalling NaNs: only NaN-ness is kept everywhere
        ASSERT_TRUE(std::isnan(out[i])) << "f16 " << i;
      else
        ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(ref)) << "f16 " << i;
    }
    to_f32(DType::BF16, src, out.data(), 65535);  // odd length: the tail path too
    for (uint32_t i = 0; i < 65535; ++i)
      ASSERT_EQ(std::bit_cast<uint32_t>(out[i]), std::bit_cast<uint32_t>(bf16_to_f32(all[i])))
          << "bf16 " << i;
  }
}

TEST(Convert, EmbeddingRowAndDot) {
  std::mt19937_64 rng(test::fresh_seed());
  for (ops::Isa isa : ops::available_isas()) {
    test::IsaGuard g(isa);
    for (DType t : kTypes) {
      const int64_t rows = 6, cols = 21;
      const auto m = test::random_matrix(t, rows, cols, rng, 1);
      std::vector<float> out(cols);
      embedding_row(m.view, 4, out);
      for (int64_t j = 0; j < cols; ++j) ASSERT_EQ(out[j], m.values[4 * cols + j]);
      EXPECT_THROW(embedding_row(m.view, 6, out), Error);
      EXPECT_THROW(embedding_row(m.view, -1, out), Error);
      const auto x = test::random_vector(cols, rng);
      const int64_t eb = t == DType::F32 ? 4 : 2;
      const float d = dot(t, m.view.data.data() + 2 * cols * eb, x.data(), cols);
      const Ref ref = reference(m, rows, cols, x.data());
      EXPECT_LE(std::abs(d - ref.y[2]), dot_bound(cols, ref.abs[2]));
    }
  }
}

}  // namespace
}  // namespace epwa
