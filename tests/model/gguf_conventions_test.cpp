// GGUF in llama.cpp's conventions for the new families: a converted folder without a tokenizer
// says so the way llama.cpp's converter does, and files whose writer dropped outer dimensions of 1
// (llama-quantize stores the shared expert's gate {1, D} as {D}) load to the same model.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "epwa/export.hpp"
#include "epwa/gguf.hpp"
#include "epwa/make_model.hpp"
#include "epwa/model.hpp"

namespace fs = std::filesystem;

namespace {

const fs::path kRef = fs::path(EPWA_TEST_DATA_DIR) / "ref";

TEST(GgufConventions, NoTokenizerIsNone) {
  const fs::path out = fs::temp_directory_path() / "epwa-conv-olmoe.gguf";
  epwa::convert_hf_to_gguf(kRef / "olmoe", out, {});
  const epwa::GgufFile f(out);
  EXPECT_EQ(f.get_string("general.architecture"), "olmoe");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "none");
  EXPECT_EQ(f.get_u32("olmoe.expert_count"), 8u);
  EXPECT_EQ(f.get_f32("olmoe.attention.clamp_kqv"), 2.5f);
  fs::remove(out);
}

// A folder converted without --type keeps its stored types; general.file_type says which
// (llama.cpp and ik_llama.cpp describe the file by it).
TEST(GgufConventions, FileTypeOfAKeptType) {
  const fs::path dir = fs::temp_directory_path() / "epwa-conv-kept";
  const fs::path out = fs::temp_directory_path() / "epwa-conv-kept.gguf";
  // LLAMA_FTYPE_MOSTLY_F16 and _BF16 (a bf16 model was once written as 0, all f32).
  for (const auto& [type, file_type] :
       {std::pair{epwa::DType::F16, 1u}, {epwa::DType::BF16, 32u}}) {
    epwa::write_random_hf(epwa::shape_config("tiny-olmoe"), 1, type, dir);
    epwa::convert_hf_to_gguf(dir, out, {});
    EXPECT_EQ(epwa::GgufFile(out).get_u32("general.file_type"), file_type);
    fs::remove_all(dir);
    fs::remove(out);
  }
}

TEST(GgufConventions, OneDimensionalSharedExpertGate) {
  const fs::path conv = fs::temp_directory_path() / "epwa-conv-qwen2moe.gguf";
  const fs::path flat = fs::temp_directory_path() / "epwa-flat-qwen2moe.gguf";
  epwa::convert_hf_to_gguf(kRef / "qwen2moe", conv, {});
  {
    const epwa::GgufFile f(conv);
    EXPECT_EQ(f.get_string("general.architecture"), "qwen2moe");
    epwa::GgufWriter w;
    for (const epwa::GgufKV& kv : f.metadata())
      if (kv.key != "general.alignment") w.set(kv.key, kv.value);
    int flattened = 0;
    for (const epwa::TensorView& t : f.tensors()) {
      std::vector<int64_t> shape = t.shape;
      if (t.name.find("ffn_gate_inp_shexp") != std::string::npos) {
        ASSERT_EQ(shape.size(), 2u);
        EXPECT_EQ(shape[0], 1);
        shape.erase(shape.begin());
        ++flattened;
      }
      w.add_tensor_copy(t.name, t.dtype, shape, t.data);
    }
    EXPECT_EQ(flattened, 2);  // the two MoE layers
    w.write(flat);
  }
  auto a = epwa::Model::load(conv);
  auto b = epwa::Model::load(flat);
  const std::vector<int32_t> tokens{1, 40, 41, 300, 7};
  auto ca = a->make_context(), cb = b->make_context();
  epwa::ForwardOptions fo;
  fo.all_logits = true;
  EXPECT_EQ(a->forward(tokens, ca, fo), b->forward(tokens, cb, fo));
  fs::remove(conv);
  fs::remove(flat);
}

}  // namespace

namespace {

// Rewrites `in` without the keys in `drop` and with `set` applied (a header-only edit).
void rewrite(const fs::path& in, const fs::path& out, std::initializer_list<std::string> drop,
             const std::function<void(epwa::GgufWriter&)>& set = {}) {
  const epwa::GgufFile f(in);
  epwa::GgufWriter w;
  for (const epwa::GgufKV& kv : f.metadata())
    if (kv.key != "general.alignment" && std::find(drop.begin(), drop.end(), kv.key) == drop.end())
      w.set(kv.key, kv.value);
  if (set) set(w);
  for (const epwa::TensorView& t : f.tensors()) w.add_tensor_copy(t.name, t.dtype, t.shape, t.data);
  w.write(out);
}

// DeepSeek-MoE V1 in llama.cpp's `deepseek` keys; a file as llama.cpp's converter writes it (no
// epwa.dense_layers, no expert_weights_norm) takes its dense layers from leading_dense_block_count
// and gives the same model.
TEST(GgufConventions, DeepseekKeys) {
  const fs::path conv = fs::temp_directory_path() / "epwa-conv-deepseek.gguf";
  const fs::path bare = fs::temp_directory_path() / "epwa-bare-deepseek.gguf";
  const fs::path scaled = fs::temp_directory_path() / "epwa-scaled-deepseek.gguf";
  epwa::convert_hf_to_gguf(kRef / "deepseek", conv, {});
  {
    const epwa::GgufFile f(conv);
    EXPECT_EQ(f.get_string("general.architecture"), "deepseek");
    EXPECT_EQ(f.get_u32("deepseek.leading_dense_block_count"), 1u);
    EXPECT_EQ(f.get_u32("deepseek.expert_count"), 8u);
    EXPECT_EQ(f.get_u32("deepseek.expert_feed_forward_length"), 24u);
    EXPECT_EQ(f.get_u32("deepseek.expert_shared_count"), 2u);
    EXPECT_EQ(f.get_u32("deepseek.feed_forward_length"), 96u);
    EXPECT_EQ(f.get_f32("deepseek.expert_weights_scale"), 1.0f);
    EXPECT_EQ(f.tensor("blk.1.ffn_down_shexp.weight").shape, (std::vector<int64_t>{64, 48}));
    EXPECT_EQ(f.find_tensor("blk.1.ffn_gate_inp_shexp.weight"), nullptr);
    EXPECT_EQ(f.find_tensor("blk.0.ffn_gate_inp.weight"), nullptr);  // the dense layer
  }
  rewrite(conv, bare, {"epwa.dense_layers", "deepseek.expert_weights_norm"});
  auto a = epwa::Model::load(conv);
  auto b = epwa::Model::load(bare);
  EXPECT_EQ(b->config().dense_layers, std::vector<int32_t>{0});
  EXPECT_FALSE(b->config().norm_topk_prob);
  const std::vector<int32_t> tokens{1, 40, 41, 300, 7};
  auto ca = a->make_context(), cb = b->make_context();
  epwa::ForwardOptions fo;
  fo.all_logits = true;
  EXPECT_EQ(a->forward(tokens, ca, fo), b->forward(tokens, cb, fo));
  rewrite(conv, scaled, {"deepseek.expert_weights_scale"},
          [](epwa::GgufWriter& w) { w.set_f32("deepseek.expert_weights_scale", 2.0f); });
  try {
    epwa::Model::load(scaled);
    ADD_FAILURE() << "a scale of 2 loaded";
  } catch (const epwa::Error& e) {
    EXPECT_NE(std::string(e.what()).find("deepseek.expert_weights_scale"), std::string::npos)
        << e.what();
  }
  for (const fs::path& p : {conv, bare, scaled}) fs::remove(p);
}

}  // namespace
