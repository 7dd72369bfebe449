// llama.cpp-style quantization mixes: one type per tensor, chosen by the tensor's role and layer
// (docs/QUANT.md, section "q4_k_m"). `epwa quantize --type q4_k_m` writes them.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/config.hpp"
#include "epwa/export.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

class Model;

// What a weight matrix does; norms and routers have no role (always f32).
enum class TensorRole : uint8_t {
  Embedding,
  Output,
  AttnQ,
  AttnK,
  AttnV,
  AttnOutput,
  FfnGate,
  FfnDown,
  FfnUp
};

// The presets `epwa quantize --type` accepts besides plain types: "q4_k_m", and "mxfp4_moe"
// (llama.cpp's MXFP4_MOE: the routed experts MXFP4, the other matrices Q8_0; file type 38).
bool is_quant_preset(std::string_view name);

// llama.cpp's Q4_K_M rule (LLAMA_FTYPE_MOSTLY_Q4_K_M) for a tensor of `role` in `layer` (ignored
// for Embedding/Output) of a model shaped `c`: Q4_K by default; Q6_K for the output head (and for
// a tied embedding, which is the head); for attn_v and ffn_down, Q6_K on the layers where
// more_bits_layer(layer, num_layers); with exactly 8 experts (Mixtral), attn_v and attn_k Q8_0 and
// attn_output Q5_K. `tied` = the embedding is also the output head.
DType q4_k_m_type(const ModelConfig& c, TensorRole role, int32_t layer, bool tied = false);
// llama.cpp's use_more_bits: the first and last eighth of the layers and every third in between.
bool more_bits_layer(int32_t layer, int32_t num_layers);

// Writes `m` as a GGUF (as save_model_gguf, include/epwa/load_options.hpp) with each matrix of the
// type the preset gives it, llama.cpp's fallback where its rows do not fit the blocks (one note
// each, returned), and the preset's general.file_type (15 for q4_k_m, 38 for mxfp4_moe).
// o.matrix_type must be unset. Throws Error on an unknown preset.
std::vector<std::string> save_model_gguf_preset(const Model& m, std::string_view preset,
                                                const GgufExportOptions& o,
                                                const std::filesystem::path& out);

}  // namespace epwa
