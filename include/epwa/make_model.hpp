// Random-weight models of named shapes: the project's test fixtures and benchmark models.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/config.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

// Known shapes (shape_names()): Mixtral "tiny", "tiny-gqa", "small", "mixtral-8x7b", "mixtral-l4",
// "olmoe-l4" (Mixtral with OLMoE's sizes); one tiny shape per other family ("tiny-qwen2moe",
// "tiny-olmoe", "tiny-qwen3moe", "tiny-deepseek"); and 4-layer benchmark shapes of released models
// ("olmoe-1b-7b-l4", "qwen1.5-moe-a2.7b-l4", "qwen3-30b-a3b-l4", "deepseek-moe-16b-l4").
// layers > 0 overrides the layer count. Throws Error on an unknown name.
ModelConfig shape_config(std::string_view name, int32_t layers = 0);
std::vector<std::string> shape_names();

// Writes a HuggingFace folder (config.json + model.safetensors, Hub tensor names) with random
// weights of type `dtype` (F32, F16 or BF16), deterministic in `seed`.
void write_random_hf(const ModelConfig& c, uint64_t seed, DType dtype,
                     const std::filesystem::path& dir);
// Writes a GGUF file in llama.cpp's conventions, streaming tensor by tensor (any size fits):
// weights of type F32, F16 or BF16, or matrices quantized to any type the engine writes (the same
// values drawn in f32; norms stay f32). `progress` (if set) hears (tensors done, total).
void write_random_gguf(const ModelConfig& c, uint64_t seed, DType dtype,
                       const std::filesystem::path& file,
                       const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace epwa
