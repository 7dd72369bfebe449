// Format-specific loaders behind Model::load.
#pragma once
#include <filesystem>
#include <memory>

#include "epwa/arch.hpp"
#include "epwa/model.hpp"
#include "epwa/safetensors.hpp"

namespace epwa {

std::unique_ptr<Model> load_hf(const std::filesystem::path& path);
std::unique_ptr<Model> load_gguf(const std::filesystem::path& path);

// The value of a float8 e4m3 byte (the "fn" variant: no infinities, NaN at 0x7f and 0xff).
float e4m3_to_f32(uint8_t b);
// The F8_E4M3 weights of an FP8 checkpoint that model c reads (quantization_config in
// config_json), dequantized to bf16 with their block scales, by name; nothing when it has none.
DerivedTensors dequantize_fp8(const SafetensorsModel& st, const std::filesystem::path& config_json,
                              const ModelConfig& c);
// a's tensors and b's, owning both.
DerivedTensors merged(DerivedTensors a, DerivedTensors b);

}  // namespace epwa
