// Each dequantizer against blocks built by hand from the format definitions, with the expected
// floats written from those definitions (not from our decoder).
#include <gtest/gtest.h>

#include <array>

#include "epwa/error.hpp"
#include "epwa/quant.hpp"
#include "quant_test_util.hpp"

using namespace epwa;
using epwa::test::put_u16;

namespace {
constexpr uint16_t kHalf = 0x3800, kQuarter = 0x3400, kEighth = 0x3000, kMinusOne = 0xBC00,
                   kTwo = 0x4000;

std::vector<float> deq(DType t, const std::vector<std::byte>& b, int64_t n) {
  std::vector<float> y(static_cast<size_t>(n), -999.0f);
  dequantize_row(t, b.data(), y.data(), n);
  return y;
}
uint8_t byte_at(const std::vector<std::byte>& b, size_t i) {
  return static_cast<uint8_t>(b[i]);
}
}  // namespace

TEST(Dequantize, FloatTypes) {
  std::vector<std::byte> h(8);
  put_u16(h, 0, 0x3C00);  // 1
  put_u16(h, 2, 0xC000);  // -2
  put_u16(h, 4, 0x3555);  // 0.333251953125
  put_u16(h, 6, 0x0001);  // smallest subnormal, 2^-24
  auto y = deq(DType::F16, h, 4);
  EXPECT_EQ(y, (std::vector<float>{1.0f, -2.0f, 0.333251953125f, 5.9604644775390625e-8f}));

  put_u16(h, 0, 0x3F80);  // 1
  put_u16(h, 2, 0xC040);  // -3
  put_u16(h, 4, 0x4049);  // 3.140625
  put_u16(h, 6, 0x0000);
  y = deq(DType::BF16, h, 4);
  EXPECT_EQ(y, (std::vector<float>{1.0f, -3.0f, 3.140625f, 0.0f}));

  const std::array<float, 3> f{1.5f, -0.25f, 1e30f};
  std::vector<std::byte> fb(12);
  std::memcpy(fb.data(), f.data(), 12);
  EXPECT_EQ(deq(DType::F32, fb, 3), (std::vector<float>{1.5f, -0.25f, 1e30f}));
}

TEST(Dequantize, Q8_0) {
  std::vector<std::byte> b(34);
  put_u16(b, 0, kHalf);
  for (int j = 0; j < 32; ++j)
    b[2 + j] = std::byte(static_cast<uint8_t>(static_cast<int8_t>(j * 8 - 128)));
  const auto y = deq(DType::Q8_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], 0.5f * static_cast<float>(j * 8 - 128)) << j;
}

TEST(Dequantize, Q4_0) {
  // d = 0.5, byte j holds nibble j (element j) and nibble 15-j (element j+16): x = (q-8)*0.5
  std::vector<std::byte> b(18);
  put_u16(b, 0, kHalf);
  for (int j = 0; j < 16; ++j) b[2 + j] = std::byte(static_cast<uint8_t>(j | ((15 - j) << 4)));
  const auto y = deq(DType::Q4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(y[j + 16], (7 - j) * 0.5f) << j;
  }
  EXPECT_EQ(y[0], -4.0f);
  EXPECT_EQ(y[15], 3.5f);
}

TEST(Dequantize, Q4_1) {
  // d = 0.25, m = -1: x = 0.25*q - 1
  std::vector<std::byte> b(2 * 20);
  for (int blk = 0; blk < 2; ++blk) {
    put_u16(b, 20 * blk + 0, kQuarter);
    put_u16(b, 20 * blk + 2, blk == 0 ? kMinusOne : kTwo);
    for (int j = 0; j < 16; ++j)
      b[20 * blk + 4 + j] = std::byte(static_cast<uint8_t>(j | ((15 - j) << 4)));
  }
  const auto y = deq(DType::Q4_1, b, 64);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], 0.25f * j - 1.0f);
    EXPECT_EQ(y[j + 16], 0.25f * (15 - j) - 1.0f);
    EXPECT_EQ(y[32 + j], 0.25f * j + 2.0f);
  }
}

TEST(Dequantize, Q5_0AndQ5_1) {
  // qh = 0xA5A5F00F little-endian: bit j is the fifth bit of element j.
  const uint32_t qh = 0xA5A5F00Fu;
  for (DType t : {DType::Q5_0, DType::Q5_1}) {
    const bool affine = t == DType::Q5_1;
    const size_t qh_off = affine ? 4 : 2, qs_off = qh_off + 4;
    std::vector<std::byte> b(affine ? 24 : 22);
    put_u16(b, 0, kHalf);
    if (affine) put_u16(b, 2, kMinusOne);
    for (int k = 0; k < 4; ++k) b[qh_off + k] = std::byte(static_cast<uint8_t>(qh >> (8 * k)));
    for (int j = 0; j < 16; ++j)
      b[qs_off + j] = std::byte(static_cast<uint8_t>((j * 3 % 16) | ((j * 5 % 16) << 4)));
    const auto y = deq(t, b, 32);
    for (int e = 0; e < 32; ++e) {
      const int nib = e < 16 ? e * 3 % 16 : (e - 16) * 5 % 16;
      const int q = nib + 16 * static_cast<int>((qh >> e) & 1u);
      const float want = affine ? 0.5f * q - 1.0f : 0.5f * (q - 16);
      EXPECT_EQ(y[e], want) << dtype_name(t) << " element " << e;
    }
  }
}

namespace {
// Sub-block scales and mins chosen to exercise both packings of get_scale_min_k4 (j < 4, j >= 4).
constexpr std::array<int, 8> kSc{1, 2, 3, 4, 33, 40, 50, 63};
constexpr std::array<int, 8> kMin{0, 5, 10, 63, 17, 20, 30, 1};
// The same values packed by hand into the 12 bytes (see docs/QUANT.md).
constexpr std::array<uint8_t, 12> kPacked{0x81, 0x82, 0xC3, 0xC4, 0x40, 0x45,
                                          0x4A, 0x3F, 0x11, 0x48, 0xE2, 0x1F};
}  // namespace

TEST(Dequantize, Q4_K) {
  std::vector<std::byte> b(144);
  put_u16(b, 0, kHalf);     // d
  put_u16(b, 2, kQuarter);  // dmin
  for (int i = 0; i < 12; ++i) b[4 + i] = std::byte(kPacked[i]);
  for (int i = 0; i < 128; ++i)
    b[16 + i] = std::byte(static_cast<uint8_t>((i % 16) | ((15 - i % 16) << 4)));
  const auto y = deq(DType::Q4_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, r = e % 64;
    const int sub = r < 32 ? 2 * c : 2 * c + 1;
    const int q = r < 32 ? r % 16 : 15 - (r - 32) % 16;
    EXPECT_EQ(y[e], 0.5f * kSc[sub] * q - 0.25f * kMin[sub]) << "element " << e;
  }
}

TEST(Dequantize, Q5_K) {
  std::vector<std::byte> b(176);
  put_u16(b, 0, kHalf);
  put_u16(b, 2, kQuarter);
  for (int i = 0; i < 12; ++i) b[4 + i] = std::byte(kPacked[i]);
  for (int l = 0; l < 32; ++l) b[16 + l] = std::byte(static_cast<uint8_t>(l * 37 + 11));
  for (int i = 0; i < 128; ++i)
    b[48 + i] = std::byte(static_cast<uint8_t>((i * 7 % 16) | ((i % 16) << 4)));
  const auto y = deq(DType::Q5_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int c = e / 64, r = e % 64, l = r % 32;
    const bool high = r >= 32;
    const int sub = 2 * c + (high ? 1 : 0);
    const uint8_t qs = byte_at(b, 48 + 32 * c + l), qh = byte_at(b, 16 + l);
    const int q = (high ? qs >> 4 : qs & 0xF) + 16 * ((qh >> sub) & 1);
    EXPECT_EQ(y[e], 0.5f * kSc[sub] * q - 0.25f * kMin[sub]) << "element " << e;
  }
}

TEST(Dequantize, Q6_K) {
  std::vector<std::byte> b(2 * 210);
  for (int blk = 0; blk < 2; ++blk) {
    const size_t o = 210 * blk;
    for (int i = 0; i < 128; ++i) b[o + i] = std::byte(static_cast<uint8_t>(i * 7 + 3 + blk));
    for (int i = 0; i < 64; ++i) b[o + 128 + i] = std::byte(static_cast<uint8_t>(i * 13 + 5));
    for (int g = 0; g < 16; ++g)
      b[o + 192 + g] =
          std::byte(static_cast<uint8_t>(static_cast<int8_t>((g % 2 ? -1 : 1) * (g + 1) * 8)));
    put_u16(b, o + 208, blk == 0 ? kEighth : kHalf);
  }
  const auto y = deq(DType::Q6_K, b, 512);
  for (int e = 0; e < 512; ++e) {
    const int blk = e / 256, h = e % 256 / 128, r = e % 128, k = r / 32, l = r % 32;
    const size_t o = 210 * blk;
    const uint8_t lo_byte = byte_at(b, o + 64 * h + l + (k % 2 ? 32 : 0));
    const int low = k < 2 ? lo_byte & 0xF : lo_byte >> 4;
    const int high = (byte_at(b, o + 128 + 32 * h + l) >> (2 * k)) & 3;
    const int g = 8 * h + r / 16;
    const int sc = (g % 2 ? -1 : 1) * (g + 1) * 8;
    const float d = blk == 0 ? 0.125f : 0.5f;
    EXPECT_EQ(y[e], d * static_cast<float>(sc * ((low | (high << 4)) - 32))) << "element " << e;
  }
}

TEST(Dequantize, Mxfp4) {
  // ggml's block_mxfp4: e8m0 byte, then qs[16]; element j < 16 is the low nibble of qs[j], j >= 16
  // the high nibble of qs[j - 16]; value = e2m1(code) * 2^(e - 127). The e2m1 codes written out:
  // sign bit 3, exponent bits 2-1, mantissa bit 0 (0 0.5 1 1.5 2 3 4 6).
  const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  for (int e : {0, 1, 2, 120, 127, 130, 254}) {
    std::vector<std::byte> b(17);
    b[0] = std::byte(static_cast<uint8_t>(e));
    for (int j = 0; j < 16; ++j) b[1 + j] = std::byte(static_cast<uint8_t>(j | ((15 - j) << 4)));
    const auto y = deq(DType::MXFP4, b, 32);
    const double scale = std::ldexp(1.0, e - 127);
    for (int j = 0; j < 16; ++j) {
      EXPECT_EQ(y[j], static_cast<float>(e2m1[j] * scale)) << "e " << e << " element " << j;
      EXPECT_EQ(y[j + 16], static_cast<float>(e2m1[15 - j] * scale))
          << "e " << e << " element " << j + 16;
    }
  }
  EXPECT_EQ(dtype_block_bytes(DType::MXFP4), 1 + 16);
  EXPECT_EQ(dtype_block_size(DType::MXFP4), 32);
  EXPECT_EQ(dtype_from_name("mxfp4"), DType::MXFP4);
}

TEST(Dequantize, BadLengthsThrow) {
  std::vector<std::byte> b(1024);
  std::vector<float> y(1024);
  EXPECT_THROW(dequantize_row(DType::Q4_0, b.data(), y.data(), 33), Error);
  EXPECT_THROW(dequantize_row(DType::Q6_K, b.data(), y.data(), 128), Error);
  EXPECT_THROW(dequantize_row(DType::Q8_0, b.data(), y.data(), -32), Error);
  try {
    dequantize_row(DType::Q4_K, b.data(), y.data(), 300);
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q4_k"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("300"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(dequantize_row(DType::Q4_0, b.data(), y.data(), 0));
}

TEST(Dequantize, BlockSizesMatchGguf) {
  // bytes = scales + packed values, from ggml-common.h's struct definitions
  EXPECT_EQ(dtype_block_bytes(DType::Q8_0), 2 + 32);
  EXPECT_EQ(dtype_block_bytes(DType::Q4_0), 2 + 16);
  EXPECT_EQ(dtype_block_bytes(DType::Q4_1), 2 + 2 + 16);
  EXPECT_EQ(dtype_block_bytes(DType::Q5_0), 2 + 4 + 16);
  EXPECT_EQ(dtype_block_bytes(DType::Q5_1), 2 + 2 + 4 + 16);
  EXPECT_EQ(dtype_block_bytes(DType::Q4_K), 2 + 2 + 12 + 128);
  EXPECT_EQ(dtype_block_bytes(DType::Q5_K), 2 + 2 + 12 + 32 + 128);
  EXPECT_EQ(dtype_block_bytes(DType::Q6_K), 128 + 64 + 16 + 2);
  for (DType t : {DType::Q4_K, DType::Q5_K, DType::Q6_K}) EXPECT_EQ(dtype_block_size(t), 256);
}
