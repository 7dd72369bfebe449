// The engine against reference numbers: HuggingFace transformers for Mixtral
// (tools/ref/make_refs.py and tools/train/train.py), an independent numpy forward written from
// transformers' modeling code for Qwen2-MoE, OLMoE and Qwen3-MoE and from DeepSeek-MoE V1's remote
// modeling code and GPT-OSS (tools/ref/make_family_refs.py):
// logits, router logits, top-k experts and weights, greedy tokens; from safetensors and from the
// GGUF that `epwa convert` writes; on the GPU backend too where one is usable.
#include <fmt/core.h>
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "epwa/export.hpp"
#include "epwa/generate.hpp"
#include "epwa/load_options.hpp"
#include "epwa/model.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const fs::path& p) {
  std::ifstream in(p);
  EXPECT_TRUE(in.good()) << p;
  return json::parse(in);
}

double rel_error(std::span<const float> got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double{got[i]} - want[i]) * (double{got[i]} - want[i]);
    den += double{want[i]} * want[i];
  }
  return std::sqrt(num / den);
}

struct Recorder : epwa::RouterObserver {
  // [layer][position] -> logits / topk / weights
  std::vector<std::vector<std::vector<float>>> logits, weights;
  std::vector<std::vector<std::vector<int32_t>>> topk;
  void observe(const epwa::RouterObservation& o) override {
    if (logits.size() <= static_cast<size_t>(o.layer)) {
      logits.resize(o.layer + 1), weights.resize(o.layer + 1), topk.resize(o.layer + 1);
    }
    logits[o.layer].emplace_back(o.logits.begin(), o.logits.end());
    topk[o.layer].emplace_back(o.topk.begin(), o.topk.end());
    weights[o.layer].emplace_back(o.weights.begin(), o.weights.end());
  }
};

// Checks one model file against tests/data/ref/<name>/ref.json, on the CPU or (gpu) on the GPU.
void check_reference(const fs::path& model_path, const json& ref, bool gpu = false) {
  auto model =
      gpu ? epwa::Model::load(model_path, epwa::LoadOptions{}) : epwa::Model::load(model_path);
  ASSERT_EQ(model->backend().name(), gpu ? "cuda" : "cpu");
  const int64_t v = model->config().vocab_size;
  for (const json& c : ref["cases"]) {
    const auto tokens = c["tokens"].get<std::vector<int32_t>>();
    SCOPED_TRACE(model_path.string() + " with " + std::to_string(tokens.size()) + " tokens");
    Recorder rec;
    auto cache = model->make_context();
    epwa::ForwardOptions fo;
    fo.observer = &rec;
    fo.all_logits = true;
    const auto logits = model->forward(tokens, cache, fo);
    for (size_t i = 0; i < tokens.size(); ++i) {
      const auto want = c["logits"][i].get<std::vector<float>>();
      EXPECT_LE(rel_error({logits.data() + i * v, static_cast<size_t>(v)}, want), 1e-4)
          << "position " << i;
    }
    for (const json& layer : c["router"]) {
      // Observations carry the MoE-layer index ("layer" is the transformer layer).
      const int l = layer.value("moe_layer", layer["layer"].get<int>());
      for (size_t i = 0; i < tokens.size(); ++i) {
        EXPECT_LE(rel_error(rec.logits[l][i], layer["logits"][i].get<std::vector<float>>()), 1e-4);
        EXPECT_EQ(rec.topk[l][i], layer["topk"][i].get<std::vector<int32_t>>())
            << "layer " << l << " pos " << i;
        const auto w = layer["weights"][i].get<std::vector<float>>();
        for (size_t j = 0; j < w.size(); ++j) EXPECT_NEAR(rec.weights[l][i][j], w[j], 1e-5);
      }
    }
    epwa::GenerateOptions go;
    go.max_new_tokens = static_cast<int32_t>(c["greedy"].size());
    EXPECT_EQ(epwa::generate(*model, tokens, go), c["greedy"].get<std::vector<int32_t>>());
  }
}

class Reference : public ::testing::TestWithParam<std::string> {};

TEST_P(Reference, SafetensorsMatchesTransformers) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  check_reference(dir, read_json(dir / "ref.json"));
}

TEST_P(Reference, ConvertedGgufMatchesTransformers) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  const fs::path gguf = fs::temp_directory_path() / ("epwa-parity-" + GetParam() + ".gguf");
  epwa::convert_hf_to_gguf(dir, gguf, {});
  check_reference(gguf, read_json(dir / "ref.json"));
  fs::remove(gguf);
}

TEST_P(Reference, GpuMatchesTransformers) {
  std::string why;
  if (!epwa::gpu_backend(&why)) GTEST_SKIP() << why;
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  check_reference(dir, read_json(dir / "ref.json"), true);
}

// transformers itself (tools/ref/hf_family_refs.py on the GPU machine) on the family checkpoints
// whose ref.json comes from the numpy forward.
class TransformersReference : public ::testing::TestWithParam<std::string> {};

TEST_P(TransformersReference, SafetensorsMatchesTransformers) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  const json hf = read_json(dir / "hf.json");
  EXPECT_EQ(hf["meta"]["model_class"].get<std::string>().find("ForCausalLM") != std::string::npos,
            true);
  check_reference(dir, hf);
}

INSTANTIATE_TEST_SUITE_P(Families, TransformersReference,
                         ::testing::Values("qwen2moe", "olmoe", "qwen3moe"));

// DeepSeek-V2 (q_lora_rank, group_limited_greedy, YaRN), V2-Lite (no q_lora_rank, greedy) and V3
// (sigmoid router with correction bias, noaux_tc groups, YaRN with its softmax scale): numpy
// forward written from transformers' modeling_deepseek_v2.py / modeling_deepseek_v3.py.
class LatentReference : public ::testing::TestWithParam<std::string> {};

TEST_P(LatentReference, SafetensorsMatchesTransformers) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  check_reference(dir, read_json(dir / "ref.json"));
}

// On the GPU (latent attention and the grouped routers as CUDA kernels), where one is usable.
TEST_P(LatentReference, GpuMatchesTransformers) {
  std::string why;
  if (!epwa::gpu_backend(&why)) GTEST_SKIP() << why;
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  check_reference(dir, read_json(dir / "ref.json"), true);
}

// The GGUF `epwa convert` writes (llama.cpp's deepseek2 keys, docs/GGUF.md) runs the same.
TEST_P(LatentReference, ConvertedGgufMatchesTransformers) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  const fs::path gguf = fs::temp_directory_path() / ("epwa-parity-" + GetParam() + ".gguf");
  epwa::convert_hf_to_gguf(dir, gguf, {});
  check_reference(gguf, read_json(dir / "ref.json"));
  const auto from_gguf = epwa::Model::load(gguf);
  const auto from_hf = epwa::Model::load(dir);
  EXPECT_EQ(from_gguf->config().router_rule(), from_hf->config().router_rule());
  EXPECT_EQ(from_gguf->config().architecture, from_hf->config().architecture);
  EXPECT_EQ(from_gguf->config().rope_attention_factor(), from_hf->config().rope_attention_factor());
  EXPECT_EQ(from_gguf->config().attention_scale(), from_hf->config().attention_scale());
  fs::remove(gguf);
}

// The cache keeps the normed latent and the roped key part, nothing per head: (kv_lora_rank +
// qk_rope_head_dim) floats per token and layer, as allocated; and decoding one token at a time over
// it gives the prompt's logits.
TEST_P(LatentReference, KvCacheHoldsTheLatent) {
  auto model = epwa::Model::load(fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam());
  const epwa::ModelConfig& c = model->config();
  ASSERT_TRUE(c.mla());
  const std::vector<int32_t> tokens{1, 17, 4, 300, 42, 42, 9, 250, 77, 5};
  auto batched_ctx = model->make_context();
  epwa::ForwardOptions all;
  all.all_logits = true;
  const auto batched = model->forward(tokens, batched_ctx, all);
  auto ctx = model->make_context(2);  // grows while decoding
  const int64_t v = c.vocab_size;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto one = model->forward(std::span(tokens).subspan(i, 1), ctx);
    std::vector<float> want(batched.begin() + i * v, batched.begin() + (i + 1) * v);
    EXPECT_LE(rel_error(one, want), 1e-5) << "position " << i;
  }
  const int64_t latent = int64_t{c.kv_lora_rank} + c.qk_rope_head_dim;
  EXPECT_EQ(ctx.kv_bytes_per_position(), c.num_layers * latent * int64_t{sizeof(float)});
  EXPECT_EQ(batched_ctx.kv_bytes_per_position(), ctx.kv_bytes_per_position());
  // What a per-head K/V cache would take: heads x (qk_head_dim + v_head_dim) per layer.
  EXPECT_LT(latent, int64_t{c.num_heads} * (c.head_dim + c.v_head_dim));
}

// 8-bit and 4-bit loading quantize the latent projections too (kv_b is read row by row by the
// latent attention): the logits stay as near the reference as the other families' do on these
// tiny random checkpoints (measured: DeepSeek-MoE V1 2.8% / 30%, Qwen2-MoE 4.0% / 49%; these
// three 3.0-3.5% / 25-61%).
TEST_P(LatentReference, QuantizedLoadsStayClose) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  const json ref = read_json(dir / "ref.json");
  const json& c = ref["cases"][2];
  const auto tokens = c["tokens"].get<std::vector<int32_t>>();
  for (auto [mode, limit] :
       {std::pair{epwa::LoadMode::Bits8, 0.06}, {epwa::LoadMode::Bits4, 0.8}}) {
    epwa::LoadOptions o;
    o.mode = mode;
    o.use_cache = false;
    o.cpu = true;
    o.warn = [](const std::string&) {};
    auto model = epwa::Model::load(dir, o);
    EXPECT_EQ(model->weights().layers[1].wkv_b.dtype,
              mode == epwa::LoadMode::Bits8 ? epwa::DType::Q8_0 : epwa::DType::Q4_0);
    auto ctx = model->make_context();
    const auto logits = model->forward(tokens, ctx);  // the last position's
    EXPECT_LE(rel_error(logits, c["logits"].back().get<std::vector<float>>()), limit)
        << (mode == epwa::LoadMode::Bits8 ? "8-bit" : "4-bit");
  }
}

INSTANTIATE_TEST_SUITE_P(DeepSeek, LatentReference,
                         ::testing::Values("deepseek2", "deepseek2-lite", "deepseek3"));

INSTANTIATE_TEST_SUITE_P(Checkpoints, Reference,
                         ::testing::Values("gqa", "tied", "headdim", "qwen2moe", "olmoe",
                                           "qwen3moe", "deepseek"));

// GPT-OSS: f32, bf16, and the release's layout with MXFP4 experts (run as MXFP4 on f32
// activations, whose values they hold exactly).
class SafetensorsReference : public ::testing::TestWithParam<std::string> {};

TEST_P(SafetensorsReference, MatchesTransformers) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  check_reference(dir, read_json(dir / "ref.json"));
}

// On the GPU (sinks, the sliding window's ring, YaRN, the biased experts and MXFP4 as CUDA
// kernels), where one is usable.
TEST_P(SafetensorsReference, GpuMatchesTransformers) {
  std::string why;
  if (!epwa::gpu_backend(&why)) GTEST_SKIP() << why;
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  check_reference(dir, read_json(dir / "ref.json"), true);
}

// The GGUF `epwa convert` writes (llama.cpp's gpt-oss, docs/GGUF.md) runs the same.
TEST_P(SafetensorsReference, ConvertedGgufMatchesTransformers) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / GetParam();
  const fs::path gguf = fs::temp_directory_path() / ("epwa-parity-" + GetParam() + ".gguf");
  epwa::convert_hf_to_gguf(dir, gguf, {});
  check_reference(gguf, read_json(dir / "ref.json"));
  fs::remove(gguf);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, SafetensorsReference,
                         ::testing::Values("gptoss", "gptoss_bf16", "gptoss_mxfp4"));

// Batched prompt processing and one-token decoding give the same logits and routing.
TEST(Engine, BatchedPrefillEqualsTokenByToken) {
  // gqa: Mixtral's attention; deepseek2 / deepseek3: multi-head latent attention.
  for (const char* name : {"gqa", "deepseek2", "deepseek3"}) {
    SCOPED_TRACE(name);
    auto model = epwa::Model::load(fs::path(EPWA_TEST_DATA_DIR) / "ref" / name);
    const std::vector<int32_t> tokens{1, 17, 4, 300, 42, 42, 9, 250};
    auto c1 = model->make_context();
    epwa::ForwardOptions all;
    all.all_logits = true;
    const auto batched = model->forward(tokens, c1, all);
    auto c2 = model->make_context(2);  // also exercises cache growth
    const int64_t v = model->config().vocab_size;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const auto one = model->forward(std::span(tokens).subspan(i, 1), c2);
      std::vector<float> want(batched.begin() + i * v, batched.begin() + (i + 1) * v);
      EXPECT_LE(rel_error(one, want), 1e-5) << "position " << i;
    }
    EXPECT_EQ(c2.size(), static_cast<int64_t>(tokens.size()));
  }
}

// The bundled model (bf16 weights) against transformers run in f32 on the same weights.
TEST(Bundle, MatchesTransformers) {
  const fs::path dir = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  const json ref = read_json(fs::path(EPWA_TEST_DATA_DIR) / "bundle_ref.json");
  auto model = epwa::Model::load(dir);
  const int64_t v = model->config().vocab_size;
  for (const json& s : ref["sequences"]) {
    const auto ids = s["ids"].get<std::vector<int32_t>>();
    SCOPED_TRACE("sequence of " + std::to_string(ids.size()) + " tokens");
    Recorder rec;
    auto cache = model->make_context();
    epwa::ForwardOptions fo;
    fo.observer = &rec;
    fo.all_logits = true;
    const auto logits = model->forward(ids, cache, fo);
    const auto positions = s["logits_positions"].get<std::vector<int64_t>>();
    for (size_t j = 0; j < positions.size(); ++j)
      EXPECT_LE(rel_error({logits.data() + positions[j] * v, static_cast<size_t>(v)},
                          s["logits"][j].get<std::vector<float>>()),
                1e-4);
    const auto argmax = s["argmax"].get<std::vector<int32_t>>();
    for (size_t i = 0; i < ids.size(); ++i) {
      const float* row = logits.data() + i * v;
      EXPECT_EQ(std::max_element(row, row + v) - row, argmax[i]) << "position " << i;
    }
    for (size_t l = 0; l < s["layers"].size(); ++l)
      for (size_t i = 0; i < ids.size(); ++i)
        EXPECT_EQ(rec.topk[l][i], s["layers"][l]["top2_experts"][i].get<std::vector<int32_t>>());
    epwa::GenerateOptions go;
    go.max_new_tokens = 16;
    EXPECT_EQ(epwa::generate(*model, ids, go), s["greedy16"].get<std::vector<int32_t>>());
  }
}

}  // namespace

#include "watermark/sha256.hpp"

namespace {

// The committed bundle is exactly the trained one: every file matches
// models/epwa-tiny-moe/SHA256SUMS.
TEST(Bundle, FilesMatchTheirHashes) {
  const fs::path dir = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
  std::ifstream sums(dir / "SHA256SUMS");
  ASSERT_TRUE(sums.good());
  std::string hex, name;
  int files = 0;
  while (sums >> hex >> name) {
    std::ifstream in(dir / name, std::ios::binary);
    ASSERT_TRUE(in.good()) << name;
    const std::string bytes((std::istreambuf_iterator<char>(in)), {});
    epwa::detail::Sha256 h;
    h.update(bytes.data(), bytes.size());
    std::string got;
    for (uint8_t b : h.finish()) got += fmt::format("{:02x}", b);
    EXPECT_EQ(got, hex) << name;
    ++files;
  }
  EXPECT_GE(files, 3);
}

}  // namespace
