// Random models: each tensor is filled from its own stream, seeded by (seed, tensor name), so the
// HF and GGUF writers produce the same numbers for the same model.
#include "epwa/make_model.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "epwa/arch.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/half.hpp"
#include "epwa/safetensors.hpp"

namespace epwa {

namespace {
struct Shape {
  const char* name;
  int32_t vocab, hidden, inter, layers, heads, kv_heads, experts, top_k;
  float theta;
};
constexpr Shape kShapes[] = {
    {"tiny", 256, 64, 128, 2, 4, 4, 4, 2, 10000.0f},
    {"tiny-gqa", 320, 64, 96, 2, 4, 2, 8, 2, 1e6f},
    {"small", 2048, 256, 512, 4, 8, 2, 8, 2, 1e6f},
    {"mixtral-8x7b", 32000, 4096, 14336, 32, 32, 8, 8, 2, 1e6f},
    {"mixtral-l4", 32000, 4096, 14336, 4, 32, 8, 8, 2, 1e6f},
    {"olmoe-l4", 50304, 2048, 1024, 4, 16, 16, 64, 8, 10000.0f},
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
    ModelConfig c;
    c.vocab_size = s.vocab;
    c.hidden_size = s.hidden;
    c.intermediate_size = s.inter;
    c.expert_intermediate_size = s.inter;
    c.num_layers = layers > 0 ? layers : s.layers;
    c.num_heads = s.heads;
    c.num_kv_heads = s.kv_heads;
    c.head_dim = s.hidden / s.heads;
    c.num_experts = s.experts;
    c.experts_per_token = s.top_k;
    c.rope_theta = s.theta;
    c.validate();
    return c;
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
                    t.kind == TensorKind::AttnVBias;
  const bool norm = t.shape.size() == 1 && !bias;
  const bool router = t.kind == TensorKind::Router;
  const float std =
      norm || bias ? 0.1f : (router ? 2.0f : 1.0f) / std::sqrt(static_cast<float>(t.shape.back()));
  for (int64_t i = 0; i < n; ++i) {
    const float v = (norm ? 1.0f : 0.0f) + std * rng.next();
    switch (dtype) {
      case DType::F32:
        std::memcpy(out + i * 4, &v, 4);
        break;
      case DType::F16: {
        const uint16_t h = f32_to_f16(v);
        std::memcpy(out + i * 2, &h, 2);
        break;
      }
      case DType::BF16: {
        const uint16_t h = f32_to_bf16(v);
        std::memcpy(out + i * 2, &h, 2);
        break;
      }
      default:
        throw Error("random models are written as f32, f16 or bf16, not " +
                    std::string(dtype_name(dtype)));
    }
  }
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
                       const std::filesystem::path& file) {
  c.validate();
  std::map<std::string, TensorSpec> by_name;
  for_each_tensor(c, [&](const TensorSpec& s) { by_name.emplace(s.hf, s); });
  HfTensorReader reader;
  reader.type = [dtype](const std::string&) { return dtype; };
  reader.read = [&](const std::string& name, std::vector<std::byte>& out) {
    const TensorSpec& t = by_name.at(name);
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    out.resize(dtype_bytes(dtype, n));
    fill_random(t, seed, dtype, out.data());
  };
  GgufExportOptions o;
  o.name = "epwa-random";
  write_model_gguf(c, reader, o, file);
}

}  // namespace epwa
