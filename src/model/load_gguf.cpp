// Loads a GGUF in llama.cpp's conventions for any family of the registry: memory-mapped; where the
// family's converter permutes Q and K (Mixtral, "llama"), they are copied to undo it (their mapped
// pages are then given back), and the weights move to huge-page memory when that pays (see
// copy_to_huge_pages).
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
#include "loaders.hpp"
#include "qk_permute.hpp"

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
// cost about 10% of a decode step (docs/history/PERF-issue9.md, "Engine"). So the weights are
// copied into anonymous huge-page memory: EPWA_HUGE_WEIGHTS=0 keeps the mapping, =1 always copies;
// by default the copy is made when huge pages exist and the data takes at most half the available
// memory.
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

}  // namespace

std::unique_ptr<Model> load_gguf(const std::filesystem::path& path) {
  auto st = std::make_shared<GgufStorage>(path);
  const GgufFile& f = st->file;
  ModelConfig c = gguf_model_config(f);
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
  // A stacked expert tensor {E, rows, cols} (biases: {E, cols}), or older files' one tensor per
  // expert ("blk.L.ffn_gate.E.weight" for "blk.L.ffn_gate_exps.weight").
  auto expert = [&](const TensorSpec& s) {
    if (const TensorView* stack = f.find_tensor(s.gguf)) {
      check(stack->shape.size() == s.shape.size() + 1 && stack->shape[0] == c.num_experts,
            "tensor " + stack->name + " is not a stack of " + std::to_string(c.num_experts) +
                " experts");
      return expert_view(*stack, s.expert);
    }
    std::string name = s.gguf;
    const size_t at = name.find("_exps.weight");
    check(at != std::string::npos, "tensor " + s.gguf + ": not an expert stack");
    name.replace(at, std::string::npos, "." + std::to_string(s.expert) + ".weight");
    if (!f.find_tensor(name)) f.tensor(s.gguf);  // names the stacked tensor in the error
    return f.tensor(name);
  };

  // GGUF writers drop a tensor's outer dimensions of 1 (llama.cpp's ggml_n_dims: the shared
  // expert's gate {1, D} is stored as {D} by llama-quantize): take the schema's shape when only
  // they differ.
  auto as_schema = [](TensorView t, const TensorSpec& s) {
    auto outer = s.shape.begin();
    while (outer != s.shape.end() && *outer == 1 && s.shape.end() - outer > 1) ++outer;
    if (t.shape != s.shape && std::equal(t.shape.begin(), t.shape.end(), outer, s.shape.end()))
      t.shape = s.shape;
    return t;
  };

  ModelWeights w;
  w.layers.resize(c.num_layers);
  for_each_tensor(c, [&](const TensorSpec& s) {
    TensorView& slot = weight_slot(w, s);
    if (!s.required && !f.find_tensor(s.gguf)) {
      slot = w.embed;  // the head of a tied model is the embedding table
    } else if (s.expert >= 0) {
      slot = expert(s);
    } else if (s.permute_heads > 0) {
      slot = unpermute(f.tensor(s.gguf), s.permute_heads);
    } else {
      slot = as_schema(f.tensor(s.gguf), s);
    }
  });
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
      for_each_tensor(c, [&](const TensorSpec& s) { rebase(weight_slot(w, s)); });
    }
  }
  return std::make_unique<Model>(std::move(c), std::move(w), std::move(st), path, "gguf");
}

}  // namespace epwa
