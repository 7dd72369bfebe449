// The architecture registry: one file per MoE family in src/arch/ says how its config.json and GGUF
// metadata read into ModelConfig and what its tensors are called; one tensor schema
// (for_each_tensor) lists every tensor of a model with its names and shape, and is what the
// loaders, export, quantization, random models, info and bench all walk.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "epwa/config.hpp"
#include "epwa/tensor.hpp"

namespace epwa {

class GgufFile;
class GgufWriter;
class HfFields;
class SafetensorsModel;

// Tensors a family derives from its checkpoint's own layout (GPT-OSS stacks each layer's experts
// in one fused tensor): views by schema HF name, into storage the model keeps.
struct DerivedTensors {
  std::vector<std::pair<std::string, TensorView>> views;
  std::shared_ptr<const void> storage;
};

// What a tensor is in the model, whatever it is called in a file.
enum class TensorKind : uint8_t {
  Embed,
  OutputNorm,
  Output,  // not in a layer
  AttnNorm,
  AttnQ,
  AttnK,
  AttnV,
  AttnOut,  // attention
  AttnQBias,
  AttnKBias,
  AttnVBias,
  AttnQNorm,
  AttnKNorm,  // optional attention parts
  AttnOutBias,
  AttnSinks,  // GPT-OSS: o bias, one sink logit per head
  AttnQA,
  AttnQANorm,
  AttnQB,
  AttnKvA,
  AttnKvANorm,
  AttnKvB,  // multi-head latent attention (AttnQ when there is no q_lora_rank; AttnOut)
  FfnNorm,
  Router,
  RouterBias,  // GPT-OSS's router bias, DeepSeek-V3's e_score_correction_bias
  ExpGate,
  ExpDown,
  ExpUp,  // routed experts (one tensor per expert)
  ExpGateBias,
  ExpDownBias,
  ExpUpBias,  // their biases (GPT-OSS)
  ShexpGateInp,
  ShexpGate,
  ShexpDown,
  ShexpUp,  // shared expert
  FfnGate,
  FfnDown,
  FfnUp,  // dense FFN
};

struct TensorSpec {
  TensorKind kind;
  int32_t layer = -1;  // transformer layer; -1 for the embedding, final norm and head
  int32_t expert =
      -1;            // routed expert (its own tensor in HF files, one stacked GGUF tensor for all)
  std::string hf;    // HuggingFace Hub name
  std::string gguf;  // llama.cpp GGUF name (for experts: the stack's name)
  std::vector<int64_t> shape;  // row-major, as the engine uses it (one expert's for experts)
  bool required = true;        // false only for the head of a tied model
  bool keep_f32 = false;       // norms, biases, routers and gates: never quantized, f32 in GGUF
  int32_t permute_heads = 0;   // > 0: GGUF rows interleaved per head (llama.cpp's LLaMA rope)
};

struct Architecture {
  std::string_view id;           // "mixtral": ModelConfig::family
  std::string_view hf_class;     // "MixtralForCausalLM"
  std::string_view model_type;   // "mixtral"
  std::string_view gguf;         // general.architecture in llama.cpp's GGUF ("llama")
  bool gguf_permute_qk = false;  // llama.cpp's converter permutes Q/K rows for its LLaMA rope
  // Reads the family's fields of config.json into `c` (the shared ones are read already).
  void (*read_hf)(const HfFields& f, ModelConfig& c);
  // Adds the family's fields to config.json (the shared ones are written already).
  void (*write_hf)(const ModelConfig& c, nlohmann::json& j);
  // The same for GGUF metadata ("<gguf>." keys).
  void (*read_gguf)(const GgufFile& f, ModelConfig& c);
  void (*write_gguf)(const ModelConfig& c, GgufWriter& w);
  // HuggingFace name of a layer tensor (experts: of `expert`).
  std::string (*hf_name)(TensorKind kind, int32_t layer, int32_t expert);
  // nullptr: the schema's tensors are in the checkpoint under their HF names. Otherwise the
  // tensors the family cuts from its checkpoint's layout (the rest are read by name).
  DerivedTensors (*derive_hf)(const ModelConfig& c, const SafetensorsModel& st) = nullptr;
};

// Every family epwa runs, in registry order.
std::span<const Architecture* const> architectures();
// Throws Error naming the family and the known ones.
const Architecture& architecture(std::string_view id);
// By HF class name or model_type; nullptr when unknown.
const Architecture* find_hf_architecture(std::string_view hf_class_or_model_type);
// By GGUF general.architecture (and, for "llama", experts present); nullptr when unknown.
const Architecture* find_gguf_architecture(std::string_view gguf_arch);
std::string known_architectures();  // "MixtralForCausalLM, Qwen2MoeForCausalLM, ..."

// Hyper-parameters from GGUF metadata (general.architecture picks the family); throws Error.
ModelConfig gguf_model_config(const GgufFile& f);
// Writes general.architecture and the hyper-parameter keys of `c` in llama.cpp's conventions.
void write_gguf_config(const ModelConfig& c, GgufWriter& w);

// The tensors of layer `layer` (-1: the embedding, final norm and head), in file order.
void for_each_tensor(const ModelConfig& c, int32_t layer,
                     const std::function<void(const TensorSpec&)>& fn);
// Every tensor of the model: the embedding, the layers in order, the final norm and the head.
void for_each_tensor(const ModelConfig& c, const std::function<void(const TensorSpec&)>& fn);

// Hub names shared by the Llama-style families ("model.layers.L.self_attn.q_proj.weight", experts
// under mlp.experts.E, the shared expert under mlp.shared_expert); a family overrides what differs.
std::string hf_standard_name(TensorKind kind, int32_t layer, int32_t expert);

}  // namespace epwa
