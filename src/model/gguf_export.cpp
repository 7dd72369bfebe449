// HF -> GGUF for every family: names, keys, Q/K row permutation and merged expert tensors as
// llama.cpp writes them.
#include <cstring>
#include <memory>

#include "epwa/arch.hpp"
#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/quant.hpp"
#include "epwa/thread_pool.hpp"
#include "qk_permute.hpp"

namespace epwa {

uint32_t llama_file_type(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::Q4_0:
      return 2;
    case DType::Q4_1:
      return 3;
    case DType::Q8_0:
      return 7;
    case DType::Q5_0:
      return 8;
    case DType::Q5_1:
      return 9;
    case DType::Q4_K:
      return 15;  // MOSTLY_Q4_K_M
    case DType::Q5_K:
      return 17;  // MOSTLY_Q5_K_M
    case DType::Q6_K:
      return 18;
    case DType::BF16:
      return 32;
    case DType::MXFP4:
      return 38;  // LLAMA_FTYPE_MOSTLY_MXFP4
  }
  return 0;
}

namespace {

// Converts rows of `cols` values from one stored type to another through f32.
void convert_rows(DType from, const std::byte* src, DType to, std::byte* dst, int64_t rows,
                  int64_t cols) {
  const int64_t sb = dtype_bytes(from, cols), db = dtype_bytes(to, cols);
  if (from == to) {
    std::memcpy(dst, src, rows * sb);
    return;
  }
  // Rows in parallel: a quantized full-size Mixtral is 47 billion weights.
  ThreadPool::global().parallel_for(rows, [&](int64_t r0, int64_t r1) {
    std::vector<float> tmp(cols);
    for (int64_t r = r0; r < r1; ++r) {
      dequantize_row(from, src + r * sb, tmp.data(), cols);
      quantize_row(to, tmp.data(), dst + r * db, cols);
    }
  });
}

}  // namespace

void write_model_gguf(const ModelConfig& c, const HfTensorReader& read, const GgufExportOptions& o,
                      const std::filesystem::path& out) {
  c.validate();
  GgufWriter w;
  write_gguf_config(c, w);
  w.set_string("general.name", o.name);
  // The file's main type: the matrices' (as written), else the first query projection's as stored.
  std::optional<DType> main_type = o.matrix_type;
  for_each_tensor(c, 0, [&](const TensorSpec& s) {
    if (!main_type && s.kind == TensorKind::AttnQ) main_type = read.type(s.hf);
  });
  w.set_u32("general.file_type", llama_file_type(main_type.value_or(DType::F32)));
  w.set_u32("tokenizer.ggml.bos_token_id", c.bos_token_id);
  w.set_u32("tokenizer.ggml.eos_token_id", c.eos_token_id);
  // llama.cpp needs tokenizer.ggml.model even without a vocabulary: "none", as its converter
  // writes for such a model (then it makes placeholder tokens from <arch>.vocab_size).
  w.set_string("tokenizer.ggml.model", "none");
  for (const GgufKV& kv : o.extra_metadata) w.set(kv.key, kv.value);

  // The schema's tensors, the experts of one stack gathered into one GGUF tensor (along a new
  // first axis), in schema order.
  std::vector<std::vector<TensorSpec>> groups;
  for_each_tensor(c, [&](const TensorSpec& s) {
    if (!s.required) return;  // a tied head is not written
    if (s.expert > 0 && !groups.empty() && groups.back().front().gguf == s.gguf)
      groups.back().push_back(s);
    else
      groups.push_back({s});
  });
  const auto total = static_cast<int64_t>(groups.size());
  auto done = std::make_shared<int64_t>(0);
  for (std::vector<TensorSpec>& parts : groups) {
    const TensorSpec& first = parts.front();
    const DType to = first.keep_f32 ? DType::F32 : o.matrix_type.value_or(read.type(first.hf));
    std::vector<int64_t> shape = first.shape;
    if (first.expert >= 0) shape.insert(shape.begin(), static_cast<int64_t>(parts.size()));
    const int64_t cols = shape.back();
    w.add_tensor(first.gguf, to, std::move(shape),
                 [&c, &read, &o, to, cols, total, done,
                  parts = std::move(parts)](const GgufWriter::Emit& emit) {
                   std::vector<std::byte> src, dst;
                   for (const TensorSpec& p : parts) {
                     const DType t = read.type(p.hf);
                     read.read(p.hf, src);
                     const int64_t sb = dtype_bytes(t, cols);
                     check(sb > 0 && static_cast<int64_t>(src.size()) % sb == 0,
                           "tensor " + p.hf + ": size does not match the model's shape");
                     const int64_t rows = static_cast<int64_t>(src.size()) / sb;
                     if (p.permute_heads > 0)
                       src = permute_qk_rows(src, p.permute_heads, c.head_dim, sb);
                     dst.resize(dtype_bytes(to, rows * cols));
                     convert_rows(t, src.data(), to, dst.data(), rows, cols);
                     emit(dst);
                   }
                   if (o.progress) o.progress(++*done, total);
                 });
  }
  w.write(out);
}

}  // namespace epwa
