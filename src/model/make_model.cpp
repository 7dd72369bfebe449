// Random models: each tensor is filled from its own stream, seeded by (seed, tensor name), so the
// HF and GGUF writers produce the same numbers for the same model.
#include "epwa/make_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

#include "epwa/arch.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/half.hpp"
#include "epwa/safetensors.hpp"
#include "epwa/thread_pool.hpp"

namespace epwa {

namespace {
// Named shapes as the config.json of their family (read through the registry, so each family's
// rules apply as for a downloaded checkpoint). The "-l4" shapes keep a real model's layer shape
// with 4 layers (benchmarks); "olmoe-l4" is Mixtral's architecture with OLMoE-1B-7B's sizes (the
// benchmark shape of the earlier measurements, docs/history/).
struct Shape {
  const char* name;
  const char* config;
};
constexpr Shape kShapes[] = {
    {"tiny", R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 256, "hidden_size": 64,
      "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
      "num_local_experts": 4, "num_experts_per_tok": 2, "rope_theta": 10000.0})"},
    {"tiny-gqa", R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "num_local_experts": 8, "num_experts_per_tok": 2, "rope_theta": 1e6})"},
    {"tiny-qwen2moe",
     R"({"architectures": ["Qwen2MoeForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 96, "moe_intermediate_size": 32, "shared_expert_intermediate_size": 64,
      "num_hidden_layers": 3, "mlp_only_layers": [1], "num_attention_heads": 4, "num_key_value_heads": 2,
      "num_experts": 8, "num_experts_per_tok": 2, "rope_theta": 1e6, "rms_norm_eps": 1e-6})"},
    {"tiny-olmoe", R"({"architectures": ["OlmoeForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
      "num_experts": 16, "num_experts_per_tok": 4, "rope_theta": 10000.0})"},
    {"tiny-qwen3moe",
     R"({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 96, "moe_intermediate_size": 32, "num_hidden_layers": 3, "mlp_only_layers": [0],
      "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "num_experts": 8,
      "num_experts_per_tok": 2, "rope_theta": 1e6, "rms_norm_eps": 1e-6})"},
    {"tiny-deepseek",
     R"({"architectures": ["DeepseekForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 96, "moe_intermediate_size": 32, "n_shared_experts": 2, "num_hidden_layers": 3,
      "first_k_dense_replace": 1, "num_attention_heads": 4, "num_key_value_heads": 2, "n_routed_experts": 8,
      "num_experts_per_tok": 3, "rope_theta": 10000.0, "rms_norm_eps": 1e-6})"},
    {"tiny-deepseek2",
     R"({"architectures": ["DeepseekV2ForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 96, "moe_intermediate_size": 32, "n_shared_experts": 2, "num_hidden_layers": 3,
      "first_k_dense_replace": 1, "num_attention_heads": 4, "q_lora_rank": 48, "kv_lora_rank": 32,
      "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 8,
      "num_experts_per_tok": 3, "topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2,
      "routed_scaling_factor": 1.5, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
      "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
      "mscale": 0.707, "mscale_all_dim": 0.707}})"},
    {"tiny-deepseek3",
     R"({"architectures": ["DeepseekV3ForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 96, "moe_intermediate_size": 32, "n_shared_experts": 1, "num_hidden_layers": 3,
      "first_k_dense_replace": 1, "num_attention_heads": 4, "q_lora_rank": 48, "kv_lora_rank": 32,
      "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 8,
      "num_experts_per_tok": 3, "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5,
      "norm_topk_prob": true, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
      "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024,
      "mscale": 1.0, "mscale_all_dim": 1.0}})"},
    {"small", R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 2048, "hidden_size": 256,
      "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 2,
      "num_local_experts": 8, "num_experts_per_tok": 2, "rope_theta": 1e6})"},
    {"mixtral-8x7b",
     R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
      "num_local_experts": 8, "num_experts_per_tok": 2, "rope_theta": 1e6})"},
    {"mixtral-l4",
     R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 32000, "hidden_size": 4096,
      "intermediate_size": 14336, "num_hidden_layers": 4, "num_attention_heads": 32, "num_key_value_heads": 8,
      "num_local_experts": 8, "num_experts_per_tok": 2, "rope_theta": 1e6})"},
    {"olmoe-l4",
     R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 50304, "hidden_size": 2048,
      "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 16,
      "num_local_experts": 64, "num_experts_per_tok": 8, "rope_theta": 10000.0})"},
    {"olmoe-1b-7b-l4",
     R"({"architectures": ["OlmoeForCausalLM"], "vocab_size": 50304, "hidden_size": 2048,
      "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 16, "num_key_value_heads": 16,
      "num_experts": 64, "num_experts_per_tok": 8, "rope_theta": 10000.0, "max_position_embeddings": 4096})"},
    {"qwen1.5-moe-a2.7b-l4", R"({"architectures": ["Qwen2MoeForCausalLM"], "vocab_size": 151936,
      "hidden_size": 2048, "intermediate_size": 5632, "moe_intermediate_size": 1408,
      "shared_expert_intermediate_size": 5632, "num_hidden_layers": 4, "num_attention_heads": 16,
      "num_key_value_heads": 16, "num_experts": 60, "num_experts_per_tok": 4, "rope_theta": 1e6,
      "rms_norm_eps": 1e-6, "max_position_embeddings": 8192})"},
    {"qwen3-30b-a3b-l4", R"({"architectures": ["Qwen3MoeForCausalLM"], "vocab_size": 151936,
      "hidden_size": 2048, "intermediate_size": 6144, "moe_intermediate_size": 768, "num_hidden_layers": 4,
      "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128,
      "num_experts_per_tok": 8, "rope_theta": 1e6, "rms_norm_eps": 1e-6, "max_position_embeddings": 40960})"},
    {"deepseek-moe-16b-l4", R"({"architectures": ["DeepseekForCausalLM"], "vocab_size": 102400,
      "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408, "n_shared_experts": 2,
      "num_hidden_layers": 4, "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_attention_heads": 16,
      "num_key_value_heads": 16, "n_routed_experts": 64, "num_experts_per_tok": 6, "rope_theta": 10000.0,
      "rms_norm_eps": 1e-6, "max_position_embeddings": 4096, "bos_token_id": 100000, "eos_token_id": 100001})"},
    // GPT-OSS: even layers slide (GptOssConfig's default layer_types), YaRN as released.
    {"tiny-gptoss",
     R"({"architectures": ["GptOssForCausalLM"], "vocab_size": 320, "hidden_size": 64,
      "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": 16, "num_local_experts": 8, "num_experts_per_tok": 2, "sliding_window": 8,
      "rope_theta": 150000.0, "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0,
      "beta_slow": 1.0, "original_max_position_embeddings": 4096, "truncate": false}})"},
    {"gpt-oss-20b-l4",
     R"({"architectures": ["GptOssForCausalLM"], "vocab_size": 201088, "hidden_size": 2880,
      "intermediate_size": 2880, "num_hidden_layers": 4, "num_attention_heads": 64, "num_key_value_heads": 8,
      "head_dim": 64, "num_local_experts": 32, "num_experts_per_tok": 4, "sliding_window": 128,
      "swiglu_limit": 7.0, "rope_theta": 150000.0, "max_position_embeddings": 131072,
      "rope_scaling": {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
      "original_max_position_embeddings": 4096, "truncate": false}, "eos_token_id": 200002})"},
    {"deepseek-v2-lite-l4", R"({"architectures": ["DeepseekV2ForCausalLM"], "vocab_size": 102400,
      "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408, "n_shared_experts": 2,
      "num_hidden_layers": 4, "first_k_dense_replace": 1, "num_attention_heads": 16,
      "num_key_value_heads": 16, "q_lora_rank": null, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
      "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 64, "num_experts_per_tok": 6,
      "topk_method": "greedy", "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0,
      "norm_topk_prob": false, "scoring_func": "softmax", "rope_theta": 10000, "rms_norm_eps": 1e-6,
      "max_position_embeddings": 163840, "rope_scaling": {"type": "yarn", "factor": 40,
      "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 0.707,
      "mscale_all_dim": 0.707}, "bos_token_id": 100000, "eos_token_id": 100001})"},
    // V2-Lite's widths with V2's query compression: llama.cpp and ik_llama.cpp take a deepseek2
    // model without q_lora_rank only at V2-Lite's 26-27 layers, so this is the side-by-side shape.
    {"deepseek-v2-lite-qlora-l4",
     R"({"architectures": ["DeepseekV2ForCausalLM"], "vocab_size": 102400,
      "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408, "n_shared_experts": 2,
      "num_hidden_layers": 4, "first_k_dense_replace": 1, "num_attention_heads": 16,
      "num_key_value_heads": 16, "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128,
      "qk_rope_head_dim": 64, "v_head_dim": 128, "n_routed_experts": 64, "num_experts_per_tok": 6,
      "topk_method": "greedy", "n_group": 1, "topk_group": 1, "routed_scaling_factor": 1.0,
      "norm_topk_prob": false, "scoring_func": "softmax", "rope_theta": 10000, "rms_norm_eps": 1e-6,
      "max_position_embeddings": 163840, "rope_scaling": {"type": "yarn", "factor": 40,
      "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 0.707,
      "mscale_all_dim": 0.707}, "bos_token_id": 100000, "eos_token_id": 100001})"},
};

uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Normal(0, 1) numbers from a splitmix64 stream (Box-Muller), platform-independent.
class Normal {
 public:
  Normal(uint64_t seed, const std::string& name) : s_(seed) {
    for (char ch : name) s_ = mix(s_ ^ static_cast<uint8_t>(ch));
  }
  // The stream from element i on (i even): each pair of elements advances the state by two steps,
  // so any even element's state is known without drawing the ones before it.
  Normal at(int64_t i) const {
    Normal n = *this;
    n.s_ += static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull;
    n.has_ = false;
    return n;
  }
  float next() {
    if (has_) {
      has_ = false;
      return spare_;
    }
    const double u1 =
        (static_cast<double>(mix(s_ += 0x9e3779b97f4a7c15ull) >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(mix(s_ += 0x9e3779b97f4a7c15ull) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2 * M_PI * u2));
    has_ = true;
    return static_cast<float>(r * std::cos(2 * M_PI * u2));
  }

 private:
  uint64_t s_;
  float spare_ = 0;
  bool has_ = false;
};
}  // namespace

ModelConfig shape_config(std::string_view name, int32_t layers) {
  for (const Shape& s : kShapes) {
    if (name != s.name) continue;
    nlohmann::json j = nlohmann::json::parse(s.config);
    if (layers > 0) {
      j["num_hidden_layers"] = layers;
      if (j.contains("mlp_only_layers")) {  // keep only the dense layers that still exist
        nlohmann::json kept = nlohmann::json::array();
        for (const auto& l : j["mlp_only_layers"])
          if (l.get<int32_t>() < layers) kept.push_back(l);
        j["mlp_only_layers"] = kept;
      }
    }
    return hf_config_from_json(j);
  }
  std::string known;
  for (const Shape& s : kShapes) known += std::string(known.empty() ? "" : ", ") + s.name;
  throw Error("unknown model shape '" + std::string(name) + "' (known: " + known + ")");
}

std::vector<std::string> shape_names() {
  std::vector<std::string> out;
  for (const Shape& s : kShapes) out.emplace_back(s.name);
  return out;
}

// Norm weights near 1, biases small; routers with a larger spread so that routing is decisive;
// the rest scaled by 1/sqrt(fan-in) so that activations stay O(1) through the layers.
void fill_random(const TensorSpec& t, uint64_t seed, DType dtype, std::byte* out) {
  Normal rng(seed, t.hf);
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  const bool bias = t.kind == TensorKind::AttnQBias || t.kind == TensorKind::AttnKBias ||
                    t.kind == TensorKind::AttnVBias || t.kind == TensorKind::AttnOutBias ||
                    t.kind == TensorKind::AttnSinks || t.kind == TensorKind::RouterBias ||
                    t.kind == TensorKind::ExpGateBias || t.kind == TensorKind::ExpDownBias ||
                    t.kind == TensorKind::ExpUpBias;
  const bool norm = t.shape.size() == 1 && !bias;
  const bool router = t.kind == TensorKind::Router;
  const float std =
      norm || bias ? 0.1f : (router ? 2.0f : 1.0f) / std::sqrt(static_cast<float>(t.shape.back()));
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw Error("random models are written as f32, f16 or bf16, not " +
                std::string(dtype_name(dtype)));
  // Chunks of an even number of elements in parallel, each from its place in the stream: the same
  // values as one pass (a Mixtral-shaped file took minutes on one core).
  constexpr int64_t kChunk = int64_t{1} << 16;
  ThreadPool::global().parallel_for((n + kChunk - 1) / kChunk, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      Normal r = rng.at(c * kChunk);
      for (int64_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i) {
        const float v = (norm ? 1.0f : 0.0f) + std * r.next();
        if (dtype == DType::F32) {
          std::memcpy(out + i * 4, &v, 4);
        } else {
          const uint16_t h = dtype == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
          std::memcpy(out + i * 2, &h, 2);
        }
      }
    }
  });
}

void write_random_hf(const ModelConfig& c, uint64_t seed, DType dtype,
                     const std::filesystem::path& dir) {
  c.validate();
  std::filesystem::create_directories(dir);
  std::vector<TensorSpec> tensors;
  for_each_tensor(c, [&](const TensorSpec& s) {
    if (s.required) tensors.push_back(s);
  });
  std::vector<std::vector<std::byte>> storage;
  std::vector<TensorToWrite> out;
  storage.reserve(tensors.size());
  for (const TensorSpec& t : tensors) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    storage.emplace_back(dtype_bytes(dtype, n));
    fill_random(t, seed, dtype, storage.back().data());
    out.push_back({t.hf, dtype, t.shape, storage.back()});
  }
  write_safetensors(dir / "model.safetensors", out, {{"format", "pt"}});
  nlohmann::json j = hf_config_to_json(c);
  j["torch_dtype"] = dtype == DType::F32 ? "float32" : dtype == DType::F16 ? "float16" : "bfloat16";
  std::ofstream(dir / "config.json") << j.dump(2) << "\n";
}

void write_random_gguf(const ModelConfig& c, uint64_t seed, DType dtype,
                       const std::filesystem::path& file,
                       const std::function<void(int64_t, int64_t)>& progress) {
  c.validate();
  std::map<std::string, TensorSpec> by_name;
  for_each_tensor(c, [&](const TensorSpec& s) { by_name.emplace(s.hf, s); });
  // Quantized files: the same random values drawn in f32, each matrix quantized as it is written
  // (a full-size Mixtral never exists in f16: 93 GB).
  const bool quantized = dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16;
  const DType drawn = quantized ? DType::F32 : dtype;
  HfTensorReader reader;
  reader.type = [drawn](const std::string&) { return drawn; };
  reader.read = [&](const std::string& name, std::vector<std::byte>& out) {
    const TensorSpec& t = by_name.at(name);
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    out.resize(dtype_bytes(drawn, n));
    fill_random(t, seed, drawn, out.data());
  };
  GgufExportOptions o;
  o.name = "epwa-random";
  if (quantized) o.matrix_type = dtype;
  o.progress = progress;
  write_model_gguf(c, reader, o, file);
}

}  // namespace epwa
