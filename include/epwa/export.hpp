// Writing models: HuggingFace folder -> GGUF (llama.cpp's conventions), streaming tensor by tensor.
#pragma once
#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "epwa/config.hpp"
#include "epwa/gguf.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

// Where the HF-named tensors (Hub naming, row-major) come from: their stored type, and their bytes.
struct HfTensorReader {
  std::function<DType(const std::string& name)> type;
  std::function<void(const std::string& name, std::vector<std::byte>& out)> read;
};

struct GgufExportOptions {
  // Type of the weight matrices; nullopt keeps each tensor's stored type. Norms and routers are
  // always written as f32 (llama.cpp does the same: the router decides the experts the watermark
  // reads).
  std::optional<DType> matrix_type;
  std::string name = "epwa";
  std::vector<GgufKV> extra_metadata;  // e.g. the tokenizer
  // Called after each tensor is written, with (tensors written, tensors in all); may be empty.
  std::function<void(int64_t done, int64_t total)> progress;
};

void write_model_gguf(const ModelConfig& c, const HfTensorReader& read, const GgufExportOptions& o,
                      const std::filesystem::path& out);

// llama.cpp's general.file_type for a model whose matrices are of type t.
uint32_t llama_file_type(DType t);

}  // namespace epwa

namespace epwa {

// Converts a HuggingFace Mixtral folder to GGUF. Tensors keep their bytes exactly when the target
// type equals the stored type (and widening bf16/f16 -> f32 is exact too).
void convert_hf_to_gguf(const std::filesystem::path& hf_dir, const std::filesystem::path& out,
                        GgufExportOptions o);

}  // namespace epwa
