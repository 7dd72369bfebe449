// HF -> GGUF: names, keys, Q/K row permutation and merged expert tensors as llama.cpp writes them.
#include <cstring>

#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/quant.hpp"
#include "gguf_names.hpp"
#include "hf_names.hpp"

namespace epwa {

uint32_t llama_file_type(DType t) {
  switch (t) {
    case DType::F32: return 0;
    case DType::F16: return 1;
    case DType::Q4_0: return 2;
    case DType::Q4_1: return 3;
    case DType::Q8_0: return 7;
    case DType::Q5_0: return 8;
    case DType::Q5_1: return 9;
    case DType::Q4_K: return 15;  // MOSTLY_Q4_K_M
    case DType::Q5_K: return 17;  // MOSTLY_Q5_K_M
    case DType::Q6_K: return 18;
    case DType::BF16: return 32;
  }
  return 0;
}

namespace {

// Converts rows of `cols` values from one stored type to another through f32.
void convert_rows(DType from, const std::byte* src, DType to, std::byte* dst, int64_t rows, int64_t cols) {
  const int64_t sb = dtype_bytes(from, cols), db = dtype_bytes(to, cols);
  if (from == to) {
    std::memcpy(dst, src, rows * sb);
    return;
  }
  std::vector<float> tmp(cols);
  for (int64_t r = 0; r < rows; ++r) {
    dequantize_row(from, src + r * sb, tmp.data(), cols);
    quantize_row(to, tmp.data(), dst + r * db, cols);
  }
}

struct Part {
  std::string hf_name;
  bool permute = false;
  int64_t heads = 0;
};

}  // namespace

void write_model_gguf(const ModelConfig& c, const HfTensorReader& read, const GgufExportOptions& o,
                      const std::filesystem::path& out) {
  c.validate();
  GgufWriter w;
  const std::string a = "llama.";
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", o.name);
  w.set_u32(a + "vocab_size", c.vocab_size);
  w.set_u32(a + "context_length", c.max_position_embeddings);
  w.set_u32(a + "embedding_length", c.hidden_size);
  w.set_u32(a + "block_count", c.num_layers);
  w.set_u32(a + "feed_forward_length", c.intermediate_size);
  w.set_u32(a + "attention.head_count", c.num_heads);
  w.set_u32(a + "attention.head_count_kv", c.num_kv_heads);
  w.set_f32(a + "rope.freq_base", c.rope_theta);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  w.set_u32(a + "expert_count", c.num_experts);
  w.set_u32(a + "expert_used_count", c.experts_per_token);
  w.set_u32(a + "rope.dimension_count", c.head_dim);
  if (c.head_dim * c.num_heads != c.hidden_size) {
    w.set_u32(a + "attention.key_length", c.head_dim);
    w.set_u32(a + "attention.value_length", c.head_dim);
  }
  w.set_u32("general.file_type", llama_file_type(o.matrix_type.value_or(DType::F32)));
  w.set_u32("tokenizer.ggml.bos_token_id", c.bos_token_id);
  w.set_u32("tokenizer.ggml.eos_token_id", c.eos_token_id);
  for (const GgufKV& kv : o.extra_metadata) w.set(kv.key, kv.value);

  // One GGUF tensor from one or more HF tensors (experts are stacked along a new first axis).
  auto add = [&](const std::string& name, std::vector<Part> parts, std::vector<int64_t> shape, bool keep_f32) {
    const DType to = keep_f32 ? DType::F32 : o.matrix_type.value_or(read.type(parts[0].hf_name));
    const int64_t cols = shape.back();
    std::string gname = name + ".weight";
    w.add_tensor(gname, to, std::move(shape), [=, &read](const GgufWriter::Emit& emit) {
      std::vector<std::byte> src, dst;
      for (const Part& p : parts) {
        const DType t = read.type(p.hf_name);
        read.read(p.hf_name, src);
        const int64_t sb = dtype_bytes(t, cols);
        check(sb > 0 && static_cast<int64_t>(src.size()) % sb == 0,
              "tensor " + p.hf_name + ": size does not match the model's shape");
        const int64_t rows = static_cast<int64_t>(src.size()) / sb;
        if (p.permute) src = permute_qk_rows(src, p.heads, c.head_dim, sb);
        dst.resize(dtype_bytes(to, rows * cols));
        convert_rows(t, src.data(), to, dst.data(), rows, cols);
        emit(dst);
      }
    });
  };

  const int64_t d = c.hidden_size, hd = c.head_dim, in = c.intermediate_size, e = c.num_experts;
  using namespace hf_name;
  add("token_embd", {{std::string(kEmbed)}}, {c.vocab_size, d}, false);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    auto g = [&](const char* what) { return gguf_layer_name(l, what); };
    add(g("attn_norm"), {{layer(l, kAttnNorm)}}, {d}, true);
    add(g("attn_q"), {{layer(l, kQ), true, c.num_heads}}, {c.num_heads * hd, d}, false);
    add(g("attn_k"), {{layer(l, kK), true, c.num_kv_heads}}, {c.num_kv_heads * hd, d}, false);
    add(g("attn_v"), {{layer(l, kV)}}, {c.num_kv_heads * hd, d}, false);
    add(g("attn_output"), {{layer(l, kO)}}, {d, c.num_heads * hd}, false);
    add(g("ffn_norm"), {{layer(l, kFfnNorm)}}, {d}, true);
    add(g("ffn_gate_inp"), {{layer(l, kRouter)}}, {e, d}, true);
    for (const auto& [gg, hf, rows, cols] :
         {std::tuple{"ffn_gate_exps", kW1, in, d}, {"ffn_down_exps", kW2, d, in}, {"ffn_up_exps", kW3, in, d}}) {
      std::vector<Part> parts;
      for (int32_t x = 0; x < e; ++x) parts.push_back({expert(l, x, hf)});
      add(g(gg), std::move(parts), {e, rows, cols}, false);
    }
  }
  add("output_norm", {{std::string(kFinalNorm)}}, {d}, true);
  if (!c.tie_word_embeddings) add("output", {{std::string(kHead)}}, {c.vocab_size, d}, false);
  w.write(out);
}

}  // namespace epwa
