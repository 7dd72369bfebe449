// quantize_row: exact bytes where ggml's reference rounding fixes them, round-trip error bounds on
// fresh random data for every type, and errors for bad lengths.
#include <gtest/gtest.h>

#include <cmath>

#include "epwa/error.hpp"
#include "epwa/quant.hpp"
#include "quant_test_util.hpp"

using namespace epwa;

namespace {
uint8_t byte_at(const std::vector<std::byte>& b, size_t i) {
  return static_cast<uint8_t>(b[i]);
}
uint16_t u16_at(const std::vector<std::byte>& b, size_t i) {
  return static_cast<uint16_t>(byte_at(b, i) | (byte_at(b, i + 1) << 8));
}

std::vector<float> round_trip(DType t, const std::vector<float>& x) {
  const auto n = static_cast<int64_t>(x.size());
  auto b = test::bytes_for(t, n);
  quantize_row(t, x.data(), b.data(), n);
  std::vector<float> y(x.size());
  dequantize_row(t, b.data(), y.data(), n);
  return y;
}
}  // namespace

TEST(Quantize, Q8_0ExactBytes) {
  // amax 63.5 -> d = 0.5 exactly; every value a multiple of 0.5 -> q = 2x exactly.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = 0.5f * static_cast<float>(j * 8 - 127);
  x[5] = 63.5f;
  auto b = test::bytes_for(DType::Q8_0, 32);
  quantize_row(DType::Q8_0, x.data(), b.data(), 32);
  EXPECT_EQ(u16_at(b, 0), 0x3800);
  for (int j = 0; j < 32; ++j)
    EXPECT_EQ(static_cast<int8_t>(byte_at(b, 2 + j)), static_cast<int>(2 * x[j])) << j;
  // round half away from zero (roundf): 0.25 with d = 0.5 -> 1, -0.25 -> -1
  x[6] = 0.25f, x[7] = -0.25f;
  quantize_row(DType::Q8_0, x.data(), b.data(), 32);
  EXPECT_EQ(static_cast<int8_t>(byte_at(b, 2 + 6)), 1);
  EXPECT_EQ(static_cast<int8_t>(byte_at(b, 2 + 7)), -1);
}

TEST(Quantize, Q4_0FollowsGgmlRounding) {
  // Signed max -4 -> d = 0.5; values (q-8)*0.5 come back exactly.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16 - 8) * 0.5f;
  auto b = test::bytes_for(DType::Q4_0, 32);
  quantize_row(DType::Q4_0, x.data(), b.data(), 32);
  EXPECT_EQ(u16_at(b, 0), 0x3800);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(byte_at(b, 2 + j), j | (j << 4)) << j;
  EXPECT_EQ(round_trip(DType::Q4_0, x), x);

  // Signed max +4 -> d = -0.5: +4 maps to nibble 0, and -4 would need 16: clamped to 15 (-3.5).
  std::vector<float> z(32, 0.0f);
  z[0] = 4.0f, z[1] = -4.0f, z[2] = 1.0f;
  quantize_row(DType::Q4_0, z.data(), b.data(), 32);
  EXPECT_EQ(u16_at(b, 0), 0xB800);  // -0.5
  const auto y = round_trip(DType::Q4_0, z);
  EXPECT_EQ(y[0], 4.0f);
  EXPECT_EQ(y[1], -3.5f);
  EXPECT_EQ(y[2], 1.0f);
  EXPECT_EQ(y[3], 0.0f);
}

TEST(Quantize, Mxfp4FollowsGgmlRounding) {
  // amax 5 -> e = floor(log2 5) - 2 + 127 = 127, step 2^(e - 128) = 0.5 on the doubled codes, so
  // x / 0.5 takes the nearest of 0 1 2 3 4 6 8 12 (signed): 5 -> 10 is a tie of 8 and 12 and takes
  // the lower code (8 -> 4.0); 0.3 -> 0.5; -0.2 -> 0 (its tie of +0 and -0 goes to +0, code 0).
  std::vector<float> x(32, 0.0f);
  x[0] = 5.0f, x[1] = 0.3f, x[2] = -0.2f, x[3] = -2.6f, x[16] = 2.6f, x[31] = -1.8f;
  auto b = test::bytes_for(DType::MXFP4, 32);
  quantize_row(DType::MXFP4, x.data(), b.data(), 32);
  EXPECT_EQ(byte_at(b, 0), 127);
  EXPECT_EQ(byte_at(b, 1), 6 | (5 << 4));  // 5 -> code 6 (4.0); 2.6 -> code 5 (3.0)
  EXPECT_EQ(byte_at(b, 2), 1);             // 0.3 -> code 1 (0.5)
  EXPECT_EQ(byte_at(b, 3), 0);             // -0.2 -> code 0 (+0)
  EXPECT_EQ(byte_at(b, 4), 13);            // -2.6 -> code 13 (-3.0)
  EXPECT_EQ(byte_at(b, 16), 12 << 4);      // -1.8 -> code 12 (-2.0)
  // Every value an MXFP4 block holds comes back exactly (the scale may change, the values not).
  std::mt19937 rng(test::fresh_seed());
  std::vector<std::byte> r(17 * 64);
  for (auto& v : r) v = std::byte(static_cast<uint8_t>(rng()));
  for (size_t blk = 0; blk < 64; ++blk) r[17 * blk] = std::byte(static_cast<uint8_t>(blk * 3 + 20));
  std::vector<float> v(32 * 64);
  dequantize_row(DType::MXFP4, r.data(), v.data(), 32 * 64);
  const auto y = round_trip(DType::MXFP4, v);
  for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(y[i], v[i]) << i;
  // Magnitudes at the ends keep a valid scale: 1e-40 (below every scale: e clamps to 0) and 1e38
  // (floor(log2 1e38) = 126 -> e = 251).
  x.assign(32, 0.0f);
  x[0] = 1e-40f;
  quantize_row(DType::MXFP4, x.data(), b.data(), 32);
  EXPECT_EQ(byte_at(b, 0), 0);
  x[0] = 1e38f;
  quantize_row(DType::MXFP4, x.data(), b.data(), 32);
  EXPECT_EQ(byte_at(b, 0), 251);
}

TEST(Quantize, Q4_1AndQ5ExactGrids) {
  // Values on the grid min + d*q survive exactly.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = -1.0f + 0.25f * static_cast<float>(j % 16);
  EXPECT_EQ(round_trip(DType::Q4_1, x), x);
  for (int j = 0; j < 32; ++j) x[j] = 2.0f + 0.125f * static_cast<float>(j);  // q = 0..31
  EXPECT_EQ(round_trip(DType::Q5_1, x), x);
  for (int j = 0; j < 32; ++j) x[j] = 0.25f * static_cast<float>(j - 16);  // max -4 -> d = 0.25
  EXPECT_EQ(round_trip(DType::Q5_0, x), x);
}

TEST(Quantize, FloatTypesRoundToNearest) {
  const std::vector<float> x{1.0f, 1.0f + 1.0f / 4096.0f, -65504.0f, 3.0e-8f};
  const auto y = round_trip(DType::F16, x);
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[1], 1.0f);  // halfway between 1 and 1+2^-10 -> even
  EXPECT_EQ(y[2], -65504.0f);
  EXPECT_EQ(y[3], 5.9604644775390625e-8f);  // nearest subnormal
  EXPECT_EQ(round_trip(DType::BF16, {1.0f, -2.5f, 3.0f, 0.0f}),
            (std::vector<float>{1.0f, -2.5f, 3.0f, 0.0f}));
  const std::vector<float> f{1.1f, -7.25f, 1e-30f, 3.3f};
  EXPECT_EQ(round_trip(DType::F32, f), f);
}

// Relative RMS error bounds of quantize->dequantize on Gaussian data (docs/QUANT.md lists them with
// the measured values).
struct Bound {
  DType type;
  double rel_rms;
};
class QuantizeRoundTrip : public ::testing::TestWithParam<Bound> {};

TEST_P(QuantizeRoundTrip, ErrorWithinBound) {
  const auto [t, bound] = GetParam();
  const uint32_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  const auto x = test::gaussian(rng, 4096, 0.02f);
  const auto y = round_trip(t, x);
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) err += (y[i] - x[i]) * (y[i] - x[i]), ref += x[i] * x[i];
  const double rel = std::sqrt(err / ref);
  EXPECT_LT(rel, bound) << dtype_name(t);
  RecordProperty("rel_rms", std::to_string(rel));
  // every block: no element is off by more than a few quantisation steps of its block's range
  const int64_t qk = dtype_block_size(t);
  for (size_t b = 0; b < x.size() / qk; ++b) {
    float amax = 0;
    for (int64_t i = 0; i < qk; ++i) amax = std::max(amax, std::fabs(x[b * qk + i]));
    for (int64_t i = 0; i < qk; ++i)
      ASSERT_LE(std::fabs(y[b * qk + i] - x[b * qk + i]), 4 * bound * amax + 1e-6f);
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantizeRoundTrip,
                         ::testing::Values(Bound{DType::F16, 1e-3}, Bound{DType::BF16, 5e-3},
                                           Bound{DType::Q8_0, 0.01}, Bound{DType::Q4_0, 0.15},
                                           Bound{DType::Q4_1, 0.12}, Bound{DType::Q5_0, 0.075},
                                           Bound{DType::Q5_1, 0.06}, Bound{DType::Q4_K, 0.12},
                                           Bound{DType::Q5_K, 0.06}, Bound{DType::Q6_K, 0.03},
                                           Bound{DType::MXFP4, 0.25}),
                         [](const auto& info) { return std::string(dtype_name(info.param.type)); });

TEST(Quantize, ZerosAndConstantsAreExact) {
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1, DType::Q4_K,
                  DType::Q5_K, DType::Q6_K, DType::MXFP4}) {
    const std::vector<float> zero(512, 0.0f);
    EXPECT_EQ(round_trip(t, zero), zero) << dtype_name(t);
  }
  // a row of -1.5: exact in every format with a min or a signed scale
  const std::vector<float> c(512, -1.5f);
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q5_0, DType::Q4_K, DType::Q5_K, DType::Q6_K,
                  DType::MXFP4}) {
    const auto y = round_trip(t, c);
    for (float v : y) ASSERT_NEAR(v, -1.5f, 1e-3f) << dtype_name(t);
  }
}

TEST(Quantize, BadLengthsThrow) {
  std::vector<float> x(1024, 1.0f);
  std::vector<std::byte> b(4096);
  EXPECT_THROW(quantize_row(DType::Q4_0, x.data(), b.data(), 33), Error);
  EXPECT_THROW(quantize_row(DType::Q8_0, x.data(), b.data(), 31), Error);
  EXPECT_THROW(quantize_row(DType::Q5_K, x.data(), b.data(), 224), Error);
  EXPECT_THROW(quantize_row(DType::F16, x.data(), b.data(), -1), Error);
  try {
    quantize_row(DType::Q4_0, x.data(), b.data(), 100);
    FAIL() << "no throw";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("q4_0"), std::string::npos) << m;
    EXPECT_NE(m.find("100"), std::string::npos) << m;
    EXPECT_NE(m.find("32"), std::string::npos) << m;
  }
}
