// FP8 checkpoints in DeepSeek-V3's released layout (e4m3 weights, f32 scale_inv per block, the
// block size in quantization_config): they load as the bf16 that DeepSeek's own conversion makes.
// The data: tools/ref/make_fp8_ref.py from the tiny V3 reference checkpoint.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "epwa/arch.hpp"
#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "model/loaders.hpp"

namespace fs = std::filesystem;
using ::testing::HasSubstr;

namespace {

const fs::path kFp8 = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "deepseek3_fp8";

TEST(Fp8, E4m3Values) {
  EXPECT_EQ(epwa::e4m3_to_f32(0x00), 0.0f);
  EXPECT_EQ(epwa::e4m3_to_f32(0x38), 1.0f);  // exponent 7 = the bias
  EXPECT_EQ(epwa::e4m3_to_f32(0xb8), -1.0f);
  EXPECT_EQ(epwa::e4m3_to_f32(0x7e), 448.0f);                // the largest finite value
  EXPECT_EQ(epwa::e4m3_to_f32(0x08), std::ldexp(1.0f, -6));  // the smallest normal
  EXPECT_EQ(epwa::e4m3_to_f32(0x01), std::ldexp(1.0f, -9));  // the smallest subnormal
  EXPECT_EQ(epwa::e4m3_to_f32(0x3d), 1.625f);                // mantissa 5/8
  EXPECT_TRUE(std::isnan(epwa::e4m3_to_f32(0x7f)));
  EXPECT_TRUE(std::isnan(epwa::e4m3_to_f32(0xff)));
  EXPECT_EQ(epwa::e4m3_to_f32(0x78), 256.0f);  // exponent 15 is finite (no infinities)
}

// Every weight the model reads equals the bf16 conversion's to the bit, and the two give the same
// logits; the linear layers are bf16 (dequantized), the rest as stored.
TEST(Fp8, LoadsAsDeepSeeksBf16Conversion) {
  const auto fp8 = epwa::Model::load(kFp8);
  const auto bf16 = epwa::Model::load(kFp8 / "bf16");
  int converted = 0;
  epwa::for_each_tensor(fp8->config(), [&](const epwa::TensorSpec& s) {
    const epwa::TensorView& a = epwa::weight_slot(fp8->weights(), s);
    const epwa::TensorView& b = epwa::weight_slot(bf16->weights(), s);
    ASSERT_EQ(a.dtype, b.dtype) << s.hf;
    ASSERT_EQ(a.shape, b.shape) << s.hf;
    EXPECT_TRUE(std::equal(a.data.begin(), a.data.end(), b.data.begin(), b.data.end())) << s.hf;
    converted += a.dtype == epwa::DType::BF16;
  });
  EXPECT_EQ(converted, 72);  // 3 layers' attention, the dense MLP, 2 x 9 experts' projections
  const std::vector<int32_t> tokens{1, 17, 4, 300, 42, 9};
  auto ca = fp8->make_context(), cb = bf16->make_context();
  EXPECT_EQ(fp8->forward(tokens, ca), bf16->forward(tokens, cb));
}

// What is wrong with an FP8 checkpoint is named in one line.
TEST(Fp8, MalformedCheckpointsAreRefused) {
  const fs::path dir = fs::temp_directory_path() / ("epwa-fp8-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  fs::copy_file(kFp8 / "model.safetensors", dir / "model.safetensors");
  std::ifstream in(kFp8 / "config.json");
  const nlohmann::json config = nlohmann::json::parse(in);
  const auto error_with = [&](const nlohmann::json& c) {
    std::ofstream(dir / "config.json") << c.dump();
    try {
      epwa::Model::load(dir);
    } catch (const epwa::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  nlohmann::json c = config;
  c.erase("quantization_config");
  EXPECT_THAT(error_with(c), HasSubstr("F8_E4M3 weights but no quantization_config"));
  c = config;
  c["quantization_config"]["weight_block_size"] = {128};
  EXPECT_THAT(error_with(c), HasSubstr("weight_block_size must be two positive integers"));
  c = config;
  c["quantization_config"]["weight_block_size"] = {32, 32};  // the scales are per 16 x 16
  EXPECT_THAT(error_with(c), HasSubstr("_scale_inv' is not f32 ["));
  c = config;
  c["quantization_config"]["fmt"] = "e5m2";
  EXPECT_THAT(error_with(c), HasSubstr("quantization_config.fmt 'e5m2'"));
  fs::remove_all(dir);
}

}  // namespace
