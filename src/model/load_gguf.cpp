// Loads a llama.cpp-convention GGUF (architecture "llama" with experts): memory-mapped; Q and K are
// copied to undo the converter's row permutation (their mapped pages are then given back), and the
// weights move to huge-page memory when that pays (see copy_to_huge_pages).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string_view>

#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/memory.hpp"
#include "epwa/ops.hpp"
#include "epwa/platform.hpp"
#include "epwa/thread_pool.hpp"
#include "gguf_names.hpp"
#include "loaders.hpp"
#include "weights_check.hpp"

namespace epwa {

namespace {
struct GgufStorage {
  explicit GgufStorage(const std::filesystem::path& p) : file(p) {}
  GgufFile file;
  std::vector<std::vector<std::byte>> owned;  // un-permuted Q and K
  LargeBuffer data;                           // the tensor data in huge pages, when copied
};

// Mapped files stay on 4 KB pages here (the page cache's large folios are rarely mapped whole, and
// MADV_COLLAPSE refuses file mappings), and the page walks over hundreds of MB of weights per token
// cost about 10% of a decode step (docs/PERF.md, "Engine"). So the weights are copied into
// anonymous huge-page memory: EPWA_HUGE_WEIGHTS=0 keeps the mapping, =1 always copies; by default
// the copy is made when huge pages exist and the data takes at most half the available memory.
bool copy_to_huge_pages(uint64_t bytes) {
  if (const char* env = std::getenv("EPWA_HUGE_WEIGHTS")) {
    const std::string_view v(env);
    if (v == "0") return false;
    if (v == "1") return true;
  }
  return huge_pages_available() && bytes <= available_memory_bytes() / 2;
}

// Copies [lo, hi) of the mapping into `buf` slice by slice, giving each mapped slice back once
// copied, so that resident memory holds the data once (plus a slice per thread) at any time. The
// threads of the pool copy slices side by side: most of the time is the kernel zeroing the fresh
// huge pages at their first touch, which runs in each faulting thread.
void copy_mapped(const std::byte* lo, const std::byte* hi, LargeBuffer& buf) {
  buf = LargeBuffer(static_cast<size_t>(hi - lo));
  constexpr size_t kSlice = size_t{16} << 20;
  auto* dst = static_cast<std::byte*>(buf.data());
  const auto slices = static_cast<int64_t>((buf.size() + kSlice - 1) / kSlice);
  auto copy = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const size_t off = static_cast<size_t>(i) * kSlice;
      const size_t len = std::min(kSlice, buf.size() - off);
      std::memcpy(dst + off, lo + off, len);
      advise_dont_need(lo + off, len);
    }
  };
  ThreadPool::global().parallel_for(slices, copy, 1);
}

ModelConfig gguf_config(const GgufFile& f) {
  const std::string& arch = f.get_string("general.architecture");
  check(arch == "llama",
        f.name() + ": architecture '" + arch + "' is not supported (expected llama)");
  const std::string a = arch + ".";
  ModelConfig c;
  c.hidden_size = static_cast<int32_t>(f.get_u32(a + "embedding_length"));
  c.num_layers = static_cast<int32_t>(f.get_u32(a + "block_count"));
  c.intermediate_size = static_cast<int32_t>(f.get_u32(a + "feed_forward_length"));
  c.num_heads = static_cast<int32_t>(f.get_u32(a + "attention.head_count"));
  c.num_kv_heads =
      static_cast<int32_t>(f.find_u32(a + "attention.head_count_kv").value_or(c.num_heads));
  c.head_dim = static_cast<int32_t>(
      f.find_u32(a + "attention.key_length")
          .value_or(f.find_u32(a + "rope.dimension_count")
                        .value_or(c.num_heads ? c.hidden_size / c.num_heads : 0)));
  c.num_experts = static_cast<int32_t>(f.get_u32(a + "expert_count"));
  c.experts_per_token = static_cast<int32_t>(f.get_u32(a + "expert_used_count"));
  c.rope_theta = f.find_f32(a + "rope.freq_base").value_or(10000.0f);
  c.rms_norm_eps = f.get_f32(a + "attention.layer_norm_rms_epsilon");
  c.max_position_embeddings = static_cast<int32_t>(f.find_u32(a + "context_length").value_or(4096));
  c.vocab_size = static_cast<int32_t>(f.tensor("token_embd.weight").rows());
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
  c.bos_token_id = static_cast<int32_t>(f.find_u32("tokenizer.ggml.bos_token_id").value_or(1));
  c.eos_token_id = static_cast<int32_t>(f.find_u32("tokenizer.ggml.eos_token_id").value_or(2));
  c.validate();
  return c;
}
}  // namespace

std::unique_ptr<Model> load_gguf(const std::filesystem::path& path) {
  auto st = std::make_shared<GgufStorage>(path);
  const GgufFile& f = st->file;
  ModelConfig c = gguf_config(f);
  auto get = [&](const std::string& name) { return f.tensor(name); };
  auto unpermute = [&](const TensorView& t, int64_t heads) {
    const int64_t row_bytes = dtype_bytes(t.dtype, t.cols());
    check(t.rows() == heads * c.head_dim, "tensor " + t.name + " has " + std::to_string(t.rows()) +
                                              " rows, expected " +
                                              std::to_string(heads * c.head_dim));
    st->owned.push_back(unpermute_qk_rows(t.data, heads, c.head_dim, row_bytes));
    // The mapped original is never read again: drop its pages, so that the copy does not count
    // twice in the resident memory (the file is mapped, see GgufStorage).
    advise_dont_need(t.data.data(), t.data.size());
    TensorView out = t;
    out.data = st->owned.back();
    return out;
  };

  ModelWeights w;
  w.embed = get("token_embd.weight");
  w.final_norm = get("output_norm.weight");
  const TensorView* head = f.find_tensor("output.weight");
  w.head = head ? *head : w.embed;
  for (int32_t l = 0; l < c.num_layers; ++l) {
    auto name = [&](const char* what) { return gguf_layer_name(l, what) + ".weight"; };
    LayerWeights L;
    L.attn_norm = get(name("attn_norm"));
    L.wq = unpermute(get(name("attn_q")), c.num_heads);
    L.wk = unpermute(get(name("attn_k")), c.num_kv_heads);
    L.wv = get(name("attn_v"));
    L.wo = get(name("attn_output"));
    L.ffn_norm = get(name("ffn_norm"));
    L.router = get(name("ffn_gate_inp"));
    if (f.find_tensor(name("ffn_gate_exps"))) {
      const TensorView& g = get(name("ffn_gate_exps"));
      const TensorView& d = get(name("ffn_down_exps"));
      const TensorView& u = get(name("ffn_up_exps"));
      for (const TensorView* t : {&g, &d, &u})
        check(t->shape.size() == 3 && t->shape[0] == c.num_experts,
              "tensor " + t->name + " is not a stack of " + std::to_string(c.num_experts) +
                  " experts");
      for (int32_t e = 0; e < c.num_experts; ++e) {
        L.w1.push_back(expert_view(g, e));
        L.w2.push_back(expert_view(d, e));
        L.w3.push_back(expert_view(u, e));
      }
    } else {  // older files: one tensor per expert
      for (int32_t e = 0; e < c.num_experts; ++e) {
        const std::string es = "." + std::to_string(e) + ".weight";
        L.w1.push_back(get(gguf_layer_name(l, "ffn_gate") + es));
        L.w2.push_back(get(gguf_layer_name(l, "ffn_down") + es));
        L.w3.push_back(get(gguf_layer_name(l, "ffn_up") + es));
      }
    }
    w.layers.push_back(std::move(L));
  }
  check_weights(c, w);
  if (!f.tensors().empty()) {
    const std::byte* lo = f.tensors().front().data.data();
    const std::byte* hi = lo;
    for (const TensorView& t : f.tensors()) {
      lo = std::min(lo, t.data.data());
      hi = std::max(hi, t.data.data() + t.data.size());
    }
    // Start reading the weights in now (a no-op when the file is in the page cache already).
    advise_will_need(lo, static_cast<size_t>(hi - lo));
    if (copy_to_huge_pages(static_cast<uint64_t>(hi - lo))) {
      copy_mapped(lo, hi, st->data);
      const auto* base = static_cast<const std::byte*>(st->data.data());
      auto rebase = [&](TensorView& t) {
        if (t.data.data() >= lo && t.data.data() < hi)  // not the Q/K copies
          t.data = {base + (t.data.data() - lo), t.data.size()};
      };
      rebase(w.embed);
      rebase(w.final_norm);
      rebase(w.head);
      for (LayerWeights& L : w.layers) {
        for (TensorView* t : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_norm, &L.router})
          rebase(*t);
        for (auto* experts : {&L.w1, &L.w2, &L.w3})
          for (TensorView& t : *experts) rebase(t);
      }
    }
  }
  return std::make_unique<Model>(std::move(c), std::move(w), std::move(st), path, "gguf");
}

}  // namespace epwa
