// The whole model on the GPU backend against the same model on the CPU, where a GPU is usable
// (skipped otherwise): quantized weights against their f32 widening, a prompt longer than the
// context's first capacity (its cache grows), several sequences decoded in one batch, forked
// contexts, and the router hash (which reads the weights on the host, so the watermark keys are the
// same).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "epwa/export.hpp"
#include "epwa/load_options.hpp"
#include "epwa/make_model.hpp"
#include "epwa/model.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"

namespace fs = std::filesystem;

namespace {

// max |a - b| / max |b| over each row of v values, sorted.
std::vector<double> row_rel(const std::vector<float>& a, const std::vector<float>& b, int64_t v) {
  EXPECT_EQ(a.size(), b.size());
  std::vector<double> rel;
  for (size_t r = 0; r * v < b.size(); ++r) {
    double num = 0, den = 0;
    for (int64_t j = 0; j < v; ++j) {
      num = std::max(num, std::fabs(double{a[r * v + j]} - b[r * v + j]));
      den = std::max(den, std::fabs(double{b[r * v + j]}));
    }
    rel.push_back(num / den);
  }
  std::sort(rel.begin(), rel.end());
  return rel;
}
// The worst row.
double worst_rel(const std::vector<float>& a, const std::vector<float>& b, int64_t v) {
  return row_rel(a, b, v).back();
}

std::vector<int32_t> prompt(int64_t n, int32_t vocab) {
  std::vector<int32_t> t{1};
  for (int64_t i = 1; i < n; ++i) t.push_back(static_cast<int32_t>(3 + (i * 7919) % (vocab - 3)));
  return t;
}

// Feeds `tokens` to both models one at a time (contexts of 8 positions: they grow); the worst
// row's relative difference. Each step must pick the same greedy token on both.
double token_by_token(const epwa::Model& gpu, const epwa::Model& cpu,
                      const std::vector<int32_t>& tokens) {
  const int64_t v = cpu.config().vocab_size;
  auto gc = gpu.make_context(8), cc = cpu.make_context(8);
  double worst = 0;
  for (int32_t token : tokens) {
    const int32_t one[] = {token};
    const auto a = gpu.forward(one, gc), b = cpu.forward(one, cc);
    worst = std::max(worst, worst_rel(a, b, v));
    EXPECT_EQ(std::max_element(a.begin(), a.end()) - a.begin(),
              std::max_element(b.begin(), b.end()) - b.begin());
  }
  return worst;
}

class Gpu : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (!epwa::gpu_backend(&why)) GTEST_SKIP() << why;
  }
  static std::unique_ptr<epwa::Model> load(const std::string& name, epwa::LoadMode mode, bool cpu) {
    epwa::LoadOptions o;
    o.mode = mode;
    o.cpu = cpu;
    o.use_cache = false;
    auto m = epwa::Model::load(fs::path(EPWA_TEST_DATA_DIR) / "ref" / name, o);
    EXPECT_EQ(m->backend().name(), cpu ? "cpu" : "cuda");
    return m;
  }
  static std::vector<float> logits(const epwa::Model& m, const std::vector<int32_t>& tokens) {
    auto ctx = m.make_context(16);  // smaller than the prompts: the caches grow
    epwa::ForwardOptions fo;
    fo.all_logits = true;
    return m.forward(tokens, ctx, fo);
  }
};

// Quantized weights: the GPU multiplies the stored blocks with f32 activations, so it must equal
// the CPU running the same blocks widened to f32 (the CPU's own quantized path rounds its
// activations to 8 bits, which flips near-tied routings of these tiny random models). A prompt's
// products do so with EPWA_CUDA_GEMM=f32; on tensor cores (the default) they round weights and
// activations to f16: most rows stay within a few 1e-4, a routing flipped by the rounding moves
// its row more.
TEST_F(Gpu, QuantizedWeightsEqualTheirF32WideningOnTheCpu) {
  for (const char* name : {"gqa", "qwen3moe"})
    for (epwa::DType type : {epwa::DType::Q8_0, epwa::DType::Q4_0, epwa::DType::Q4_K}) {
      SCOPED_TRACE(std::string(name) + " " + std::string(epwa::dtype_name(type)));
      const fs::path q = fs::temp_directory_path() / (std::string("epwa-gpu-") + name + ".gguf");
      const fs::path f =
          fs::temp_directory_path() / (std::string("epwa-gpu-") + name + "-f32.gguf");
      epwa::GgufExportOptions o;
      o.matrix_type = type;
      epwa::save_model_gguf(*epwa::Model::load(fs::path(EPWA_TEST_DATA_DIR) / "ref" / name), o, q);
      o.matrix_type = epwa::DType::F32;
      epwa::save_model_gguf(*epwa::Model::load(q), o, f);
      const epwa::LoadOptions gpu_opt;
      epwa::set_env("EPWA_CUDA_GEMM", "f32");  // the platform layer's: Windows has no setenv
      auto gpu = epwa::Model::load(q, gpu_opt);
      epwa::set_env("EPWA_CUDA_GEMM", "");  // empty reads as unset
      auto tensor_cores = epwa::Model::load(q, gpu_opt);
      ASSERT_EQ(tensor_cores->backend().name(), "cuda");
      ASSERT_EQ(gpu->backend().name(), "cuda");
      auto cpu = epwa::Model::load(f);
      // 130 tokens: the prompt path (cuBLAS) for the dense and the expert products.
      const int64_t v = cpu->config().vocab_size;
      const auto t = prompt(130, static_cast<int32_t>(v));
      const auto want = logits(*cpu, t);
      EXPECT_LE(worst_rel(logits(*gpu, t), want, v), 1e-4);
      const auto rel = row_rel(logits(*tensor_cores, t), want, v);
      std::cout << "f16 prompt products, relative error per row: median " << rel[rel.size() / 2]
                << ", 90% " << rel[rel.size() * 9 / 10] << ", worst " << rel.back() << "\n";
      EXPECT_LE(rel[rel.size() / 2], 2e-3);
      EXPECT_LE(rel[rel.size() * 9 / 10], 1e-2);
      EXPECT_EQ(epwa::router_hash(*gpu), epwa::router_hash(*epwa::Model::load(q)));
      fs::remove(q);
      fs::remove(f);
    }
}

// Decoding Q8_0 and Q4_0 weights, the GPU rounds activations to 8 bits exactly as the CPU's own
// quantized path does: token by token (every product decode-sized), the two engines then differ
// only in the order of their f32 sums, far below the rounding's 1 %, and pick the same tokens.
TEST_F(Gpu, EightBitDecodeFollowsTheCpu) {
  for (const char* name : {"gqa", "qwen3moe"})
    for (epwa::DType type : {epwa::DType::Q8_0, epwa::DType::Q4_0}) {
      SCOPED_TRACE(std::string(name) + " " + std::string(epwa::dtype_name(type)));
      const fs::path q = fs::temp_directory_path() / (std::string("epwa-gpu8-") + name + ".gguf");
      epwa::GgufExportOptions o;
      o.matrix_type = type;
      epwa::save_model_gguf(*epwa::Model::load(fs::path(EPWA_TEST_DATA_DIR) / "ref" / name), o, q);
      auto gpu = epwa::Model::load(q, epwa::LoadOptions{});
      ASSERT_EQ(gpu->backend().name(), "cuda");
      auto cpu = epwa::Model::load(q);
      const int64_t v = cpu->config().vocab_size;
      const double worst = token_by_token(*gpu, *cpu, prompt(24, static_cast<int32_t>(v)));
      std::cout << name << " " << epwa::dtype_name(type) << ": worst row " << worst << "\n";
      EXPECT_LE(worst, 1e-4);
      fs::remove(q);
    }
}

// A prompt's products of Q8_0 and Q4_0 weights whose rows are a multiple of 256 values wide (every
// matrix of the real models) run on the int8 tensor cores, with activations rounded to 8 bits as
// the CPU's quantized path rounds them (the op test EightBitProductsRoundAsTheCpu: the same
// products to 2e-6). Whole models cannot agree row by row: a last-bit difference elsewhere (the
// attention's sum order) flips an 8-bit rounding now and then, and a random model carries the
// flip on. So the GPU's prompt must be as close to the exact product of the stored weights (the
// CPU on their f32 widening) as the CPU's own 8-bit path is: the "small" shape (widths 256 and
// 512, 8 experts), 300 tokens at once (75 slots per expert: the experts' prompt path too).
TEST_F(Gpu, EightBitPromptIsAsCloseAsTheCpus) {
  for (epwa::DType type : {epwa::DType::Q8_0, epwa::DType::Q4_0}) {
    SCOPED_TRACE(epwa::dtype_name(type));
    const fs::path q = fs::temp_directory_path() / "epwa-gpu8-small.gguf";
    const fs::path f = fs::temp_directory_path() / "epwa-gpu8-small-f32.gguf";
    epwa::write_random_gguf(epwa::shape_config("small"), 7, type, q);
    epwa::GgufExportOptions o;
    o.matrix_type = epwa::DType::F32;
    epwa::save_model_gguf(*epwa::Model::load(q), o, f);
    auto gpu = epwa::Model::load(q, epwa::LoadOptions{});
    ASSERT_EQ(gpu->backend().name(), "cuda");
    auto cpu = epwa::Model::load(q);
    const int64_t v = cpu->config().vocab_size;
    const auto t = prompt(300, static_cast<int32_t>(v));
    const auto exact = logits(*epwa::Model::load(f), t);
    const auto g = row_rel(logits(*gpu, t), exact, v), c = row_rel(logits(*cpu, t), exact, v);
    const size_t mid = g.size() / 2, p90 = g.size() * 9 / 10;
    std::cout << epwa::dtype_name(type)
              << " against the exact product, relative error per row: GPU "
              << "median " << g[mid] << ", 90% " << g[p90] << "; CPU median " << c[mid] << ", 90% "
              << c[p90] << "\n";
    EXPECT_LE(g[mid], 1.5 * c[mid]);
    EXPECT_LE(g[p90], 1.5 * c[p90]);
    fs::remove(q);
    fs::remove(f);
  }
}

// The loading modes' quantized weights run on the GPU (the router hash, read on the host, is the
// CPU's).
TEST_F(Gpu, LoadingModesRun) {
  for (epwa::LoadMode mode :
       {epwa::LoadMode::Standard, epwa::LoadMode::Bits8, epwa::LoadMode::Bits4}) {
    auto cpu = load("olmoe", mode, true), gpu = load("olmoe", mode, false);
    const auto t = prompt(20, static_cast<int32_t>(cpu->config().vocab_size));
    const auto l = logits(*gpu, t);
    for (float v : l) ASSERT_TRUE(std::isfinite(v));
    if (mode == epwa::LoadMode::Standard) {
      EXPECT_LE(worst_rel(l, logits(*cpu, t), cpu->config().vocab_size), 1e-4);
    }
    EXPECT_EQ(epwa::router_hash(*gpu), epwa::router_hash(*cpu));
  }
}

// GPT-OSS (window 8, sinks, biased experts, YaRN) on the GPU against the CPU: a prompt of 130
// tokens (the prompt path: cuBLAS for the dense and the expert products, in f32 here), then token
// by token far past the window, so that the sliding layer's ring wraps several times.
TEST_F(Gpu, GptOssFollowsTheCpuPastTheWindow) {
  const fs::path dir = fs::path(EPWA_TEST_DATA_DIR) / "ref" / "gptoss";
  epwa::set_env("EPWA_CUDA_GEMM", "f32");
  auto gpu = epwa::Model::load(dir, epwa::LoadOptions{});
  epwa::set_env("EPWA_CUDA_GEMM", "");
  ASSERT_EQ(gpu->backend().name(), "cuda");
  auto cpu = epwa::Model::load(dir);
  const int64_t v = cpu->config().vocab_size;
  const auto t = prompt(130, static_cast<int32_t>(v));
  EXPECT_LE(worst_rel(logits(*gpu, t), logits(*cpu, t), v), 1e-4);
  const double worst = token_by_token(*gpu, *cpu, prompt(40, static_cast<int32_t>(v)));
  std::cout << "gptoss token by token: worst row " << worst << "\n";
  EXPECT_LE(worst, 1e-4);
}

// The batch-and-fork check of BatchedSequencesAndForksMatchSingleRuns on one model.
void batched_and_forked(const epwa::Model& m) {
  const int64_t v = m.config().vocab_size;
  const auto vocab = static_cast<int32_t>(v);
  const std::vector<std::vector<int32_t>> prompts = {prompt(5, vocab), prompt(23, vocab),
                                                     prompt(2, vocab)};
  epwa::Context ctx(m, 4, 3);
  std::vector<epwa::BatchToken> batch;
  for (int32_t s = 0; s < 3; ++s)
    for (size_t i = 0; i < prompts[s].size(); ++i)
      batch.push_back({prompts[s][i], static_cast<int64_t>(i), s});
  const auto last = m.decode(batch, ctx);  // the last position of each sequence
  for (int32_t s = 0; s < 3; ++s) {
    auto alone = m.make_context(4);
    const auto want = m.forward(prompts[s], alone);
    EXPECT_LE(worst_rel({last.begin() + s * v, last.begin() + (s + 1) * v}, want, v), 1e-5) << s;
  }
  epwa::Context fork(ctx);
  std::vector<epwa::BatchToken> step;
  for (int32_t s = 0; s < 3; ++s) step.push_back({7, static_cast<int64_t>(prompts[s].size()), s});
  const auto a = m.decode(step, ctx), b = m.decode(step, fork);
  EXPECT_LE(worst_rel(b, a, v), 1e-6);
  for (int32_t s = 0; s < 3; ++s) {
    auto alone = m.make_context(4);
    auto t = prompts[s];
    t.push_back(7);
    const auto want = m.forward(t, alone);
    EXPECT_LE(worst_rel({a.begin() + s * v, a.begin() + (s + 1) * v}, want, v), 1e-5) << s;
  }
}

// Three sequences in one batch (prompts of different lengths, then a decode step each) against
// each sequence alone; then a fork continues from a copied cache the GPU has not seen. Qwen3-MoE's
// attention (attention_batch) and DeepSeek-V2 / V3's latent attention (latent_attention_batch).
TEST_F(Gpu, BatchedSequencesAndForksMatchSingleRuns) {
  for (const char* name : {"qwen3moe", "deepseek2", "deepseek3"}) {
    SCOPED_TRACE(name);
    batched_and_forked(*load(name, epwa::LoadMode::Standard, false));
  }
}

}  // namespace
