// Model::load with a loading mode: quantized logits within documented tolerances of the stored
// precision (docs/LOADING.md), routers untouched (same IRSH-v1 hash), per-tensor fallback, the
// out-of-memory refusal, --load auto, and fast mode's cache.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/load_options.hpp"
#include "epwa/make_model.hpp"
#include "epwa/model.hpp"
#include "epwa/session.hpp"
#include "epwa/watermark.hpp"

namespace fs = std::filesystem;
using namespace epwa;

namespace {

const fs::path kBundled = fs::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
const fs::path kRef = fs::path(EPWA_TEST_DATA_DIR) / "ref";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() /
             (name + "-" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "-" +
              std::to_string(reinterpret_cast<uintptr_t>(this)))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

LoadOptions quiet(LoadMode m) {
  LoadOptions o;
  o.mode = m;
  o.warn = [](const std::string&) {};
  o.use_cache = false;
  return o;
}

std::vector<float> logits_of(Model& m, const std::vector<int32_t>& tokens) {
  auto cache = m.make_context();
  ForwardOptions fo;
  fo.all_logits = true;
  return m.forward(tokens, cache, fo);
}

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double{got[i]} - want[i]) * (double{got[i]} - want[i]);
    den += double{want[i]} * want[i];
  }
  return std::sqrt(num / den);
}

double top1_agreement(const std::vector<float>& a, const std::vector<float>& b, int64_t v) {
  const size_t n = a.size() / v;
  size_t same = 0;
  for (size_t i = 0; i < n; ++i) {
    auto arg = [&](const std::vector<float>& x) {
      return std::max_element(x.begin() + i * v, x.begin() + (i + 1) * v) - (x.begin() + i * v);
    };
    same += arg(a) == arg(b);
  }
  return static_cast<double>(same) / n;
}

std::vector<int32_t> some_tokens(int32_t vocab, int n) {
  std::vector<int32_t> t;
  for (int i = 0; i < n; ++i) t.push_back(static_cast<int32_t>((i * 2654435761u + 7) % vocab));
  return t;
}

// Tolerances (relative L2 error of all logits vs the stored precision), documented in
// docs/LOADING.md: the trained bundled model, and the random-weight reference checkpoints (tiny
// widths, small logits).
constexpr double kQ8Tol = 0.02, kQ4Tol = 0.15, kRefQ8Tol = 0.05, kRefQ4Tol = 0.6;

void check_modes(const fs::path& path, int n_tokens, double q8_tol, double q4_tol) {
  SCOPED_TRACE(path.string());
  auto ref = Model::load(path);
  const auto tokens = some_tokens(ref->config().vocab_size, n_tokens);
  const auto want = logits_of(*ref, tokens);
  const std::string hash = router_hash(*ref);
  for (auto [mode, tol, type] :
       {std::tuple{LoadMode::Bits8, q8_tol, "q8_0"}, {LoadMode::Bits4, q4_tol, "q4_0"}}) {
    LoadReport rep;
    auto m = Model::load(path, quiet(mode), &rep);
    EXPECT_GT(rep.bytes_by_type.count(type), 0u);
    EXPECT_EQ(m->weights().layers[0].router.dtype, ref->weights().layers[0].router.dtype);
    const TensorView& wq = m->weights().layers[0].wq;  // width 48 (tied) falls back to f32
    EXPECT_EQ(wq.dtype,
              wq.cols() % 32 == 0 ? dtype_from_name(type) : ref->weights().layers[0].wq.dtype);
    const auto got = logits_of(*m, tokens);
    const double err = rel_error(got, want);
    EXPECT_LE(err, tol) << type;
    EXPECT_GT(err, 0.0) << type << ": quantization changed nothing?";
    EXPECT_EQ(router_hash(*m), hash) << type;
    std::printf("[ logits ] %s %s: rel L2 error %.5f, top-1 agreement %.3f\n",
                path.filename().c_str(), type, err,
                top1_agreement(got, want, m->config().vocab_size));
  }
}

}  // namespace

TEST(QuantizedLoad, ReferenceCheckpointsWithinTolerance) {
  for (const char* name : {"gqa", "tied", "headdim"})
    check_modes(kRef / name, 12, kRefQ8Tol, kRefQ4Tol);
}

TEST(QuantizedLoad, BundledModelWithinToleranceAndSmaller) {
  check_modes(kBundled, 24, kQ8Tol, kQ4Tol);
  LoadReport r8, r4, rs;
  Model::load(kBundled, quiet(LoadMode::Bits8), &r8);
  Model::load(kBundled, quiet(LoadMode::Bits4), &r4);
  Model::load(kBundled, quiet(LoadMode::Standard), &rs);
  EXPECT_EQ(rs.effective, "stored");  // standard mode: 4-bit only for Mixtral-scale models
  EXPECT_LT(r4.weight_bytes, r8.weight_bytes);
  EXPECT_LT(r8.weight_bytes, rs.weight_bytes);
}

TEST(QuantizedLoad, KQuantGgufWithinTolerance) {
  TempDir dir("epwa-kquant");
  auto ref = Model::load(kBundled);
  const auto tokens = some_tokens(ref->config().vocab_size, 16);
  const auto want = logits_of(*ref, tokens);
  for (auto [type, tol] : {std::pair{DType::Q4_K, 0.12}, {DType::Q6_K, 0.03}}) {
    GgufExportOptions o;
    o.matrix_type = type;
    const fs::path out = dir.path / (std::string(dtype_name(type)) + ".gguf");
    save_model_gguf(*ref, o, out);
    auto m = Model::load(out);
    EXPECT_EQ(m->weights().layers[1].w1[0].dtype, type);  // 256 columns: one super-block
    // w2 has 384 columns: llama.cpp's fallback type.
    EXPECT_EQ(m->weights().layers[1].w2[0].dtype, type == DType::Q4_K ? DType::Q5_0 : DType::Q8_0);
    EXPECT_EQ(router_hash(*m), router_hash(*ref));
    const double err = rel_error(logits_of(*m, tokens), want);
    EXPECT_LE(err, tol) << dtype_name(type);
    std::printf("[ logits ] bundled %s gguf: rel L2 error %.5f\n",
                std::string(dtype_name(type)).c_str(), err);
  }
}

// A random model written straight as Q8_0 / Q4_0 (how a full-size benchmark file is made without
// an f16 copy) holds the bytes of the f32 random model quantized by the GGUF export.
TEST(QuantizedLoad, QuantizedRandomGgufIsTheF32ModelQuantized) {
  TempDir dir("epwa-randq");
  const ModelConfig c = shape_config("tiny");
  write_random_gguf(c, 11, DType::F32, dir.path / "f32.gguf");
  auto f32 = Model::load(dir.path / "f32.gguf");
  for (DType type : {DType::Q8_0, DType::Q4_0}) {
    const std::string name(dtype_name(type));
    int64_t last = 0, total = 0;
    write_random_gguf(c, 11, type, dir.path / (name + ".gguf"), [&](int64_t done, int64_t all) {
      EXPECT_EQ(done, last + 1);
      last = done, total = all;
    });
    EXPECT_EQ(last, total);
    GgufExportOptions o;
    o.matrix_type = type;
    save_model_gguf(*f32, o, dir.path / (name + "-export.gguf"));
    auto direct = Model::load(dir.path / (name + ".gguf"));
    auto exported = Model::load(dir.path / (name + "-export.gguf"));
    const auto& a = direct->weights().layers[1];
    const auto& b = exported->weights().layers[1];
    ASSERT_EQ(a.w1[0].dtype, type) << name;
    for (auto [x, y] : {std::pair{&a.w1[1], &b.w1[1]}, {&a.wq, &b.wq}, {&a.w2[0], &b.w2[0]}}) {
      ASSERT_EQ(x->data.size(), y->data.size()) << name;
      EXPECT_TRUE(std::equal(x->data.begin(), x->data.end(), y->data.begin())) << name;
    }
    EXPECT_EQ(router_hash(*direct), router_hash(*exported));
  }
}

TEST(QuantizedLoad, FallsBackPerTensorWhenRowsDoNotFitBlocks) {
  TempDir dir("epwa-odd");
  ModelConfig c;
  c.vocab_size = 64, c.hidden_size = 48, c.intermediate_size = 64, c.expert_intermediate_size = 64,
  c.num_layers = 2, c.num_heads = 2, c.num_kv_heads = 1, c.head_dim = 24, c.num_experts = 4,
  c.experts_per_token = 2;
  write_random_hf(c, 5, DType::F32, dir.path);
  std::vector<std::string> warnings;
  LoadOptions o = quiet(LoadMode::Bits4);
  o.warn = [&](const std::string& w) { warnings.push_back(w); };
  LoadReport rep;
  auto m = Model::load(dir.path, o, &rep);
  ASSERT_FALSE(warnings.empty());
  EXPECT_EQ(warnings[0],
            "Warning: 4-bit quantization failed: model.layers.0.self_attn.q_proj.weight: row "
            "length 48 is not a "
            "multiple of 32");
  EXPECT_EQ(warnings[1],
            "Warning: 8-bit quantization failed: model.layers.0.self_attn.q_proj.weight: row "
            "length 48 is not a "
            "multiple of 32");
  EXPECT_EQ(m->weights().layers[0].wq.dtype, DType::F32);      // stored precision kept
  EXPECT_EQ(m->weights().layers[0].w2[0].dtype, DType::Q4_0);  // 64 columns: quantized
  EXPECT_EQ(rep.warnings, warnings);
  auto ref = Model::load(dir.path);
  const auto tokens = some_tokens(c.vocab_size, 6);
  EXPECT_LE(rel_error(logits_of(*m, tokens), logits_of(*ref, tokens)), kRefQ4Tol);
}

TEST(QuantizedLoad, NonFiniteWeightsFallBackToStoredPrecision) {
  TempDir dir("epwa-nan");
  ModelConfig c = shape_config("tiny");
  write_random_hf(c, 3, DType::F32, dir.path);
  auto base = Model::load(dir.path);
  // Build a model whose first expert's gate holds a NaN (views into our own buffer).
  ModelWeights w = base->weights();
  auto buf = std::make_shared<std::vector<float>>(w.layers[0].w1[0].numel(), 0.5f);
  (*buf)[3 * w.layers[0].w1[0].cols() + 1] = std::nanf("");
  w.layers[0].w1[0].data = std::as_bytes(std::span<const float>(*buf));
  // Round-trip through a GGUF so that Model::load(path, options) sees it.
  Model poisoned(base->config(), w, buf, dir.path, "safetensors");
  save_model_gguf(poisoned, {}, dir.path / "nan.gguf");
  std::vector<std::string> warnings;
  LoadOptions o = quiet(LoadMode::Bits4);
  o.warn = [&](const std::string& s) { warnings.push_back(s); };
  auto m = Model::load(dir.path / "nan.gguf", o);
  ASSERT_EQ(warnings.size(), 2u);
  EXPECT_NE(warnings[0].find("4-bit quantization failed: blk.0.ffn_gate_exps.weight"),
            std::string::npos)
      << warnings[0];
  EXPECT_NE(warnings[0].find("non-finite value in row 3"), std::string::npos) << warnings[0];
  EXPECT_NE(warnings[1].find("8-bit quantization failed"), std::string::npos) << warnings[1];
  EXPECT_EQ(m->weights().layers[0].w1[0].dtype, DType::F32);
  EXPECT_EQ(m->weights().layers[0].w1[1].dtype, DType::Q4_0);
}

TEST(QuantizedLoad, RefusesBeforeAllocatingWhenMemoryIsShort) {
  LoadOptions o = quiet(LoadMode::Bits8);
  o.available_memory = 1000;
  try {
    Model::load(kRef / "gqa", o);
    FAIL() << "expected a refusal";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("not enough memory"), std::string::npos) << m;
    EXPECT_NE(m.find("1000 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("needs"), std::string::npos) << m;
    EXPECT_NE(m.find("4-bit"), std::string::npos) << m;
  }
  o.mode = LoadMode::Standard;
  EXPECT_THROW(Model::load(kRef / "gqa", o), Error);
}

TEST(QuantizedLoad, AutoPicksTheMostPreciseModeThatFits) {
  LoadReport stored, q8, q4;
  Model::load(kBundled, quiet(LoadMode::Standard), &stored);
  Model::load(kBundled, quiet(LoadMode::Bits8), &q8);
  Model::load(kBundled, quiet(LoadMode::Bits4), &q4);
  auto pick = [&](uint64_t avail) {
    LoadOptions o = quiet(LoadMode::Auto);
    o.available_memory = avail;
    LoadReport r;
    Model::load(kBundled, o, &r);
    EXPECT_NE(r.reason.find("auto"), std::string::npos);
    return r.effective;
  };
  EXPECT_EQ(pick(stored.weight_bytes), "stored");
  EXPECT_EQ(pick(stored.weight_bytes - 1), "8bit");
  EXPECT_EQ(pick(q8.weight_bytes - 1), "4bit");
  LoadOptions o = quiet(LoadMode::Auto);
  o.available_memory = q4.weight_bytes - 1;
  EXPECT_THROW(Model::load(kBundled, o), Error);
}

TEST(QuantizedLoad, FastModeCachesAndReusesTheQuantizedModel) {
  TempDir dir("epwa-cache");
  LoadOptions o = quiet(LoadMode::Fast);
  o.use_cache = true;
  o.cache_dir = dir.path;
  LoadReport first, second;
  auto a = Model::load(kRef / "gqa", o, &first);
  EXPECT_EQ(first.cache, "miss");
  ASSERT_TRUE(fs::exists(first.cache_path)) << first.cache_path;
  EXPECT_EQ(first.cache_path.parent_path(), dir.path);
  auto b = Model::load(kRef / "gqa", o, &second);
  EXPECT_EQ(second.cache, "hit");
  EXPECT_EQ(second.effective, "4bit");
  EXPECT_EQ(b->format(), "gguf");
  EXPECT_EQ(second.weight_bytes, first.weight_bytes);
  const auto tokens = some_tokens(a->config().vocab_size, 8);
  EXPECT_EQ(logits_of(*a, tokens), logits_of(*b, tokens));  // same blocks, bit for bit
  EXPECT_EQ(router_hash(*a), router_hash(*b));
  // The key follows the precision and the source: another source gets another file.
  EXPECT_NE(fast_cache_path(kRef / "gqa", "q4_0", dir.path),
            fast_cache_path(kRef / "gqa", "q8_0", dir.path));
  EXPECT_NE(fast_cache_path(kRef / "gqa", "q4_0", dir.path),
            fast_cache_path(kRef / "tied", "q4_0", dir.path));
  // A corrupt cache file is rebuilt, with a warning. The models that map the cache go first:
  // Windows refuses to truncate a mapped file (and on Linux their pages would vanish under them).
  a.reset();
  b.reset();
  {
    std::ofstream f(first.cache_path, std::ios::binary | std::ios::trunc);
    f << "garbage";
    f.close();
    ASSERT_TRUE(f) << "cannot overwrite " << first.cache_path;
  }
  ASSERT_EQ(fs::file_size(first.cache_path), 7u);
  std::vector<std::string> warnings;
  o.warn = [&](const std::string& s) { warnings.push_back(s); };
  LoadReport third;
  Model::load(kRef / "gqa", o, &third);
  EXPECT_EQ(third.cache, "miss");
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_NE(warnings[0].find("rebuilding"), std::string::npos);
}
