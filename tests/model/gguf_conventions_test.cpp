// GGUF in llama.cpp's conventions for the new families: a converted folder without a tokenizer
// says so the way llama.cpp's converter does, and files whose writer dropped outer dimensions of 1
// (llama-quantize stores the shared expert's gate {1, D} as {D}) load to the same model.
#include <gtest/gtest.h>

#include <filesystem>

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
