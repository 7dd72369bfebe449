// FP8 checkpoints (DeepSeek-V3's release; transformers' "fp8" quantization_config): each weight in
// float8 e4m3 (no infinities, 0x7f / 0xff NaN, max 448) with an f32 `<name>_scale_inv` of one value
// per weight_block_size block. They are dequantized at load to bf16 as DeepSeek's own conversion
// (fp8_cast_bf16.py) does: the e4m3 value times its block's scale in f32, rounded to bf16 (nearest
// even). The loading modes then quantize them like any bf16 weight.
#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "epwa/error.hpp"
#include "epwa/half.hpp"
#include "epwa/platform.hpp"
#include "loaders.hpp"

namespace epwa {

float e4m3_to_f32(uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::numeric_limits<float>::quiet_NaN();
  const float v = e == 0 ? std::ldexp(static_cast<float>(m) / 8.0f, -6)
                         : std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
  return (b & 0x80) ? -v : v;
}

namespace {

// quantization_config.weight_block_size of config.json: {rows, cols} of one scale.
std::pair<int64_t, int64_t> fp8_block(const std::filesystem::path& config_json) {
  std::ifstream in(config_json, std::ios::binary);
  check(in.good(), "cannot open " + path_to_utf8(config_json));
  const auto j = nlohmann::json::parse(in, nullptr, false);
  const std::string where = path_to_utf8(config_json) + ": ";
  check(!j.is_discarded(), where + "not valid JSON");
  check(j.contains("quantization_config") && j["quantization_config"].is_object(),
        where +
            "F8_E4M3 weights but no quantization_config (FP8 checkpoints name their block size "
            "there)");
  const auto& q = j["quantization_config"];
  check(q.value("quant_method", "") == "fp8",
        where + "F8_E4M3 weights but quantization_config.quant_method is not \"fp8\"");
  check(q.value("fmt", "e4m3") == "e4m3",
        where + "quantization_config.fmt '" + q.value("fmt", "") + "' (epwa reads e4m3)");
  const auto& b = q.contains("weight_block_size") ? q["weight_block_size"] : nlohmann::json();
  check(b.is_array() && b.size() == 2 && b[0].is_number_integer() && b[1].is_number_integer() &&
            b[0].get<int64_t>() > 0 && b[1].get<int64_t>() > 0,
        where +
            "quantization_config.weight_block_size must be two positive integers (per-tensor "
            "FP8 scales are not supported)");
  return {b[0].get<int64_t>(), b[1].get<int64_t>()};
}

}  // namespace

DerivedTensors dequantize_fp8(const SafetensorsModel& st, const std::filesystem::path& config_json,
                              const ModelConfig& c) {
  DerivedTensors out;
  std::vector<const ByteTensor*> fp8;  // only the model's (not, e.g., V3's next-token layer)
  for_each_tensor(c, [&](const TensorSpec& s) {
    if (const ByteTensor* t = st.find_bytes(s.hf); t && t->dtype == "F8_E4M3") fp8.push_back(t);
  });
  if (fp8.empty()) return out;
  const auto [br, bc] = fp8_block(config_json);
  float table[256];
  for (int b = 0; b < 256; ++b) table[b] = e4m3_to_f32(static_cast<uint8_t>(b));
  auto store = std::make_shared<std::vector<std::vector<uint16_t>>>();
  store->reserve(fp8.size());
  for (const ByteTensor* t : fp8) {
    check(t->shape.size() == 2,
          "FP8 tensor '" + t->name + "' is not a matrix (block scales need rows and columns)");
    const int64_t rows = t->shape[0], cols = t->shape[1];
    const std::string sname = t->name + "_scale_inv";
    const TensorView* s = st.find(sname);
    check(s != nullptr, "FP8 tensor '" + t->name + "' has no '" + sname + "' in the checkpoint");
    const int64_t sr = (rows + br - 1) / br, sc = (cols + bc - 1) / bc;
    check(s->dtype == DType::F32 && s->shape == std::vector<int64_t>{sr, sc},
          "tensor '" + sname + "' is not f32 [" + std::to_string(sr) + ", " + std::to_string(sc) +
              "] (one scale per " + std::to_string(br) + " x " + std::to_string(bc) + " block)");
    const auto* q = reinterpret_cast<const uint8_t*>(t->data.data());
    const auto* scale = reinterpret_cast<const float*>(s->data.data());
    std::vector<uint16_t>& w = store->emplace_back(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        w[r * cols + c] = f32_to_bf16(table[q[r * cols + c]] * scale[(r / br) * sc + c / bc]);
    out.views.emplace_back(t->name,
                           TensorView{t->name, DType::BF16, t->shape, std::as_bytes(std::span(w))});
  }
  out.storage = store;
  return out;
}

DerivedTensors merged(DerivedTensors a, DerivedTensors b) {
  if (b.views.empty()) return a;
  for (auto& v : b.views) a.views.push_back(std::move(v));
  a.storage = std::make_shared<std::pair<std::shared_ptr<const void>, std::shared_ptr<const void>>>(
      std::move(a.storage), std::move(b.storage));
  return a;
}

}  // namespace epwa
