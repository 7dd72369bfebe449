// Model::load with a loading mode: load-time quantization of the weight matrices (Q4_0/Q8_0, with
// per-tensor fallback), the memory check, --load auto, and fast mode's quantized GGUF cache.
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "epwa/error.hpp"
#include "epwa/export.hpp"
#include "epwa/load_options.hpp"
#include "epwa/model.hpp"
#include "epwa/platform.hpp"
#include "epwa/quant.hpp"
#include "epwa/quant_preset.hpp"
#include "epwa/thread_pool.hpp"

namespace epwa {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16;
}

// The base model (owning the mappings) and the quantized buffers the new views point into.
struct QuantizedStorage {
  std::unique_ptr<Model> base;
  std::vector<std::vector<std::byte>> owned;
};

// The role a preset chooses a tensor's type by; none for norms, biases, routers and gates (always
// f32).
std::optional<TensorRole> quant_role(const TensorSpec& s) {
  if (s.keep_f32) return std::nullopt;
  switch (s.kind) {
    case TensorKind::Embed:
      return TensorRole::Embedding;
    case TensorKind::Output:
      return TensorRole::Output;
    case TensorKind::AttnQ:
    case TensorKind::AttnQA:
    case TensorKind::AttnQB:
      return TensorRole::AttnQ;
    case TensorKind::AttnK:
    case TensorKind::AttnKvA:
      return TensorRole::AttnK;
    case TensorKind::AttnV:
    case TensorKind::AttnKvB:
      return TensorRole::AttnV;
    case TensorKind::AttnOut:
      return TensorRole::AttnOutput;
    case TensorKind::ExpGate:
    case TensorKind::ShexpGate:
    case TensorKind::FfnGate:
      return TensorRole::FfnGate;
    case TensorKind::ExpDown:
    case TensorKind::ShexpDown:
    case TensorKind::FfnDown:
      return TensorRole::FfnDown;
    case TensorKind::ExpUp:
    case TensorKind::ShexpUp:
    case TensorKind::FfnUp:
      return TensorRole::FfnUp;
    default:
      return std::nullopt;
  }
}

bool tied_head(const ModelWeights& w) {
  return w.head.data.data() == w.embed.data.data();
}

// Every stored tensor once (a tied head is the embedding).
template <class W, class F>
void for_each_weight(const ModelConfig& c, W& w, F&& f) {
  const bool tied = tied_head(w);
  for_each_tensor(c, [&](const TensorSpec& s) {
    if (s.kind == TensorKind::Output && tied) return;
    f(s, weight_slot(w, s));
  });
}

// The matrices a mode quantizes: attention, experts, FFNs and the output head (unless it is the
// embedding table itself). Routers, gates, norms, biases and embeddings stay as stored.
std::vector<TensorView*> quantizable(const ModelConfig& c, ModelWeights& w) {
  std::vector<TensorView*> out;
  for_each_weight(c, w, [&](const TensorSpec& s, TensorView& t) {
    if (quant_role(s) && s.kind != TensorKind::Embed) out.push_back(&t);
  });
  return out;
}

std::string bits_name(DType t) {
  return t == DType::Q4_0 ? "4-bit" : "8-bit";
}

// Why `t` cannot become `to` before any work is done ("" = it can).
std::string structural_problem(const TensorView& t, DType to) {
  const int64_t bs = dtype_block_size(to);
  if (t.cols() % bs != 0)
    return "row length " + std::to_string(t.cols()) + " is not a multiple of " + std::to_string(bs);
  return {};
}

// The type each quantizable tensor will get for `target`, falling back 4-bit -> 8-bit -> stored on
// structural problems. Already-quantized tensors keep their type. `warn` gets the fallback lines.
std::vector<DType> plan_types(const std::vector<TensorView*>& ts, DType target,
                              const std::function<void(const std::string&)>& warn) {
  std::vector<DType> out;
  for (const TensorView* t : ts) {
    DType to = t->dtype;
    if (is_float(t->dtype)) {
      to = target;
      for (;;) {
        const std::string why = structural_problem(*t, to);
        if (why.empty()) break;
        if (warn)
          warn("Warning: " + bits_name(to) + " quantization failed: " + t->name + ": " + why);
        if (to == DType::Q4_0) {
          to = DType::Q8_0;
        } else {
          to = t->dtype;
          break;
        }
      }
    }
    out.push_back(to);
  }
  return out;
}

uint64_t planned_bytes(const ModelConfig& c, const ModelWeights& w,
                       const std::vector<TensorView*>& ts, const std::vector<DType>& types) {
  uint64_t total = 0;
  for_each_weight(c, w, [&](const TensorSpec&, const TensorView& t) { total += t.data.size(); });
  for (size_t i = 0; i < ts.size(); ++i)
    total =
        total - ts[i]->data.size() + static_cast<uint64_t>(dtype_bytes(types[i], ts[i]->numel()));
  return total;
}

// Quantizes every row of `t` into `out`; returns the reason when a row cannot be (non-finite
// values).
std::string quantize_tensor(const TensorView& t, DType to, std::vector<std::byte>& out) {
  const int64_t rows = t.rows(), cols = t.cols();
  const int64_t sb = dtype_bytes(t.dtype, cols), db = dtype_bytes(to, cols);
  out.resize(static_cast<size_t>(rows * db));
  std::atomic<int64_t> bad_row{-1};
  ThreadPool::global().parallel_for(
      rows,
      [&](int64_t r0, int64_t r1) {
        std::vector<float> tmp(cols);
        for (int64_t r = r0; r < r1; ++r) {
          dequantize_row(t.dtype, t.data.data() + r * sb, tmp.data(), cols);
          for (float v : tmp)
            if (!std::isfinite(v)) {
              int64_t none = -1;
              bad_row.compare_exchange_strong(none, r);
              return;
            }
          quantize_row(to, tmp.data(), out.data() + r * db, cols);
        }
      },
      std::max<int64_t>(1, 65536 / std::max<int64_t>(cols, 1)));
  if (bad_row.load() >= 0) return "non-finite value in row " + std::to_string(bad_row.load());
  return {};
}

std::string precision_of(DType target) {
  return target == DType::Q4_0 ? "4bit" : "8bit";
}

std::string bytes_text(uint64_t b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%llu bytes (%.1f MiB)", static_cast<unsigned long long>(b),
                b / 1048576.0);
  return buf;
}

}  // namespace

std::map<std::string, uint64_t> weight_bytes_by_type(const Model& m) {
  std::map<std::string, uint64_t> out;
  for_each_weight(m.config(), m.weights(), [&](const TensorSpec&, const TensorView& t) {
    out[std::string(dtype_name(t.dtype))] += t.data.size();
  });
  return out;
}

std::vector<std::string> quantized_weight_types(const Model& m) {
  std::vector<std::string> out;
  for (const auto& [name, bytes] : weight_bytes_by_type(m))
    if (dtype_block_size(dtype_from_name(name)) > 1) out.push_back(name);
  return out;
}

namespace {

// A tensor to write: its view, and the role and layer a preset chooses its type by (no role: a
// norm or router, always f32).
struct SaveEntry {
  const TensorView* view = nullptr;
  std::optional<TensorRole> role;
  int32_t layer = -1;
  bool expert = false;  // a routed expert's matrix (a stack in GGUF)
};

// llama.cpp's fallback for a type whose blocks do not fit a row (Q4_K -> Q5_0, Q5_K -> Q5_1,
// Q6_K -> Q8_0), else the tensor's own type.
DType fitting_type(const std::string& name, const TensorView& t, DType to,
                   std::vector<std::string>& notes) {
  if (t.cols() % dtype_block_size(to) == 0) return to;
  const DType fb = to == DType::Q4_K   ? DType::Q5_0
                   : to == DType::Q5_K ? DType::Q5_1
                   : to == DType::Q6_K ? DType::Q8_0
                                       : t.dtype;
  const DType chosen = t.cols() % dtype_block_size(fb) == 0 ? fb : t.dtype;
  notes.push_back(name + ": row length " + std::to_string(t.cols()) + " is not a multiple of " +
                  std::to_string(dtype_block_size(to)) + "; written as " +
                  std::string(dtype_name(chosen)));
  return chosen;
}

using TypeChooser = std::function<std::optional<DType>(const SaveEntry&)>;

std::vector<std::string> save_gguf_impl(const Model& m, const GgufExportOptions& o,
                                        const std::filesystem::path& out, const TypeChooser& choose,
                                        std::optional<uint32_t> file_type) {
  const ModelWeights& w = m.weights();
  ModelConfig c = m.config();
  const bool shared_head = tied_head(w);
  c.tie_word_embeddings = shared_head;
  std::map<std::string, SaveEntry> by_name;
  for_each_weight(c, w, [&](const TensorSpec& s, const TensorView& t) {
    auto role = quant_role(s);
    if (s.kind == TensorKind::Embed && shared_head) role = TensorRole::Output;  // it is the head
    by_name[s.hf] = {&t, role, s.layer, s.expert >= 0};
  });
  // Each tensor's written type: the chooser's where its rows fit the blocks, else llama.cpp's
  // fallback, else the type it has now. Norms and routers (no role) are written as f32.
  std::vector<std::string> notes;
  std::map<std::string, DType> target;
  for (const auto& [name, entry] : by_name) {
    const TensorView& t = *entry.view;
    DType to = t.dtype;
    if (entry.role)
      if (const auto chosen = choose(entry)) to = fitting_type(name, t, *chosen, notes);
    target[name] = to;
  }
  auto find = [&](const std::string& name) -> const TensorView& {
    auto it = by_name.find(name);
    check(it != by_name.end(), "save_model_gguf: no tensor " + name);
    return *it->second.view;
  };
  HfTensorReader reader;
  reader.type = [&](const std::string& name) {
    find(name);
    return target.at(name);
  };
  reader.read = [&](const std::string& name, std::vector<std::byte>& bytes) {
    const TensorView& t = find(name);
    const DType to = target.at(name);
    if (to == t.dtype) {
      bytes.assign(t.data.begin(), t.data.end());
      return;
    }
    const int64_t rows = t.rows(), cols = t.cols(), sb = dtype_bytes(t.dtype, cols),
                  db = dtype_bytes(to, cols);
    bytes.resize(static_cast<size_t>(rows * db));
    ThreadPool::global().parallel_for(
        rows,
        [&](int64_t r0, int64_t r1) {
          std::vector<float> tmp(cols);
          for (int64_t r = r0; r < r1; ++r) {
            dequantize_row(t.dtype, t.data.data() + r * sb, tmp.data(), cols);
            quantize_row(to, tmp.data(), bytes.data() + r * db, cols);
          }
        },
        8);
  };
  GgufExportOptions wo = o;
  wo.matrix_type.reset();
  // Without a requested type, write_model_gguf names the file by its query projection's type.
  if (file_type || o.matrix_type)
    wo.extra_metadata.push_back(
        {"general.file_type", GgufValue{file_type.value_or(llama_file_type(*o.matrix_type))}});
  std::error_code ec;
  if (out.has_parent_path()) std::filesystem::create_directories(out.parent_path(), ec);
  write_model_gguf(c, reader, wo, out);
  return notes;
}

}  // namespace

std::vector<std::string> save_model_gguf(const Model& m, const GgufExportOptions& o,
                                         const std::filesystem::path& out) {
  // Every matrix and the embedding get o.matrix_type (when set).
  return save_gguf_impl(
      m, o, out, [&](const SaveEntry&) { return o.matrix_type; }, std::nullopt);
}

bool is_quant_preset(std::string_view name) {
  return name == "q4_k_m" || name == "mxfp4_moe";
}

bool more_bits_layer(int32_t layer, int32_t n) {
  return layer < n / 8 || layer >= 7 * n / 8 || (layer - n / 8) % 3 == 2;
}

DType q4_k_m_type(const ModelConfig& c, TensorRole role, int32_t layer, bool tied) {
  const bool eight_experts = c.num_experts == 8;
  switch (role) {
    case TensorRole::Output:
      return DType::Q6_K;
    case TensorRole::Embedding:
      return tied ? DType::Q6_K : DType::Q4_K;
    case TensorRole::AttnV:
      if (eight_experts) return DType::Q8_0;
      return more_bits_layer(layer, c.num_layers) ? DType::Q6_K : DType::Q4_K;
    case TensorRole::AttnK:
      return eight_experts ? DType::Q8_0 : DType::Q4_K;
    case TensorRole::AttnOutput:
      return eight_experts ? DType::Q5_K : DType::Q4_K;
    case TensorRole::FfnDown:
      return more_bits_layer(layer, c.num_layers) ? DType::Q6_K : DType::Q4_K;
    case TensorRole::AttnQ:
    case TensorRole::FfnGate:
    case TensorRole::FfnUp:
      return DType::Q4_K;
  }
  return DType::Q4_K;
}

std::vector<std::string> save_model_gguf_preset(const Model& m, std::string_view preset,
                                                const GgufExportOptions& o,
                                                const std::filesystem::path& out) {
  check(is_quant_preset(preset), "unknown quantization preset '" + std::string(preset) + "'");
  check(!o.matrix_type, "save_model_gguf_preset: matrix_type must be unset with a preset");
  const ModelConfig& c = m.config();
  if (preset == "mxfp4_moe")  // llama.cpp's MXFP4_MOE: expert stacks MXFP4, other matrices Q8_0
    return save_gguf_impl(
        m, o, out,
        [](const SaveEntry& e) -> std::optional<DType> {
          return e.expert ? DType::MXFP4 : DType::Q8_0;
        },
        llama_file_type(DType::MXFP4));  // 38 = LLAMA_FTYPE_MOSTLY_MXFP4_MOE
  return save_gguf_impl(
      m, o, out,
      // A tied embedding carries the Output role (it is the head).
      [&](const SaveEntry& e) -> std::optional<DType> { return q4_k_m_type(c, *e.role, e.layer); },
      llama_file_type(DType::Q4_K));  // 15 = LLAMA_FTYPE_MOSTLY_Q4_K_M
}

std::unique_ptr<Model> Model::load(const std::filesystem::path& path, const LoadOptions& opt,
                                   LoadReport* report) {
  const auto t0 = Clock::now();
  LoadReport local;
  LoadReport& rep = report ? *report : local;
  rep = LoadReport{};
  rep.requested = opt.mode;
  rep.cpu = opt.cpu;
  auto warn = [&](const std::string& s) {
    rep.warnings.push_back(s);
    if (opt.warn)
      opt.warn(s);
    else
      std::fprintf(stderr, "%s\n", s.c_str());
  };
  const uint64_t avail = opt.available_memory.value_or(available_memory_bytes());
  auto finish = [&](std::unique_ptr<Model> m) {
    // The device: a GPU when one is built and usable, unless the CPU was asked for.
    if (opt.cpu)
      rep.device_why = "the CPU was asked for";
    else if (auto gpu = gpu_backend(&rep.device_why))
      m->use_backend(std::move(gpu));
    rep.device = m->backend().device();
    rep.bytes_by_type = weight_bytes_by_type(*m);
    rep.weight_bytes = 0;
    for (auto& [_, b] : rep.bytes_by_type) rep.weight_bytes += b;
    rep.model_s = seconds_since(t0);
    return m;
  };
  auto refuse = [&](uint64_t needed, const std::string& what, std::optional<uint64_t> bits4) {
    std::string msg = "not enough memory to load " + path_to_utf8(path) + " " + what + ": needs " +
                      bytes_text(needed) + ", " + bytes_text(avail) + " available";
    if (bits4)
      msg += "; use 4-bit (--load-in-4bit or EPW_LOAD_IN_4BIT=true), which needs " +
             bytes_text(*bits4);
    throw Error(msg);
  };

  // Fast mode: a previous fast load's quantized GGUF, mmapped as it is.
  std::filesystem::path cache;
  if (opt.mode == LoadMode::Fast) {
    rep.cache = opt.use_cache ? "" : "off";
    if (opt.use_cache) {
      try {
        cache = fast_cache_path(path, "q4_0", opt.cache_dir);
        rep.cache_path = cache;
      } catch (const std::exception& e) {
        warn(std::string("Warning: fast-load cache disabled: ") + e.what());
      }
    }
    if (!cache.empty() && std::filesystem::exists(cache)) {
      try {
        auto m = load(cache);
        const uint64_t need = planned_bytes(m->config(), m->weights(), {}, {});
        if (need > avail)
          refuse(need, "from its fast-load cache " + path_to_utf8(cache), std::nullopt);
        rep.cache = "hit";
        rep.effective = "4bit";
        rep.reason = "fast mode: cached 4-bit GGUF " + path_to_utf8(cache);
        return finish(std::move(m));
      } catch (const Error& e) {
        if (std::string(e.what()).rfind("not enough memory", 0) == 0) throw;
        warn(std::string("Warning: fast-load cache unreadable, rebuilding: ") + e.what());
      }
    }
  }

  auto base = load(path);
  ModelWeights w = base->weights();
  auto ts = quantizable(base->config(), w);
  const uint64_t stored_bytes = planned_bytes(base->config(), w, {}, {});
  auto quiet_plan = [&](DType t) {
    return planned_bytes(base->config(), w, ts, plan_types(ts, t, {}));
  };

  std::optional<DType> target;
  switch (opt.mode) {
    case LoadMode::Bits4:
    case LoadMode::Fast:
      target = DType::Q4_0;
      rep.reason = std::string(load_mode_name(opt.mode)) + " mode";
      break;
    case LoadMode::Bits8:
      target = DType::Q8_0;
      rep.reason = "8bit mode";
      break;
    case LoadMode::Standard:
      if (standard_mode_quantizes(base->config())) {
        target = DType::Q4_0;
        rep.reason = "standard mode: 4-bit for Mixtral-scale models (hidden size >= 4096)";
      } else {
        rep.reason = "standard mode: stored precision (4-bit only for Mixtral-scale models)";
      }
      break;
    case LoadMode::Auto: {
      const uint64_t b8 = quiet_plan(DType::Q8_0), b4 = quiet_plan(DType::Q4_0);
      const std::string figures = "stored needs " + bytes_text(stored_bytes) + ", 8-bit " +
                                  bytes_text(b8) + ", 4-bit " + bytes_text(b4) + "; " +
                                  bytes_text(avail) + " available";
      if (stored_bytes <= avail) {
        rep.reason = "auto: stored precision fits (" + figures + ")";
      } else if (b8 <= avail) {
        target = DType::Q8_0,
        rep.reason = "auto: 8-bit, the most precise mode that fits (" + figures + ")";
      } else if (b4 <= avail) {
        target = DType::Q4_0, rep.reason = "auto: 4-bit, the only mode that fits (" + figures + ")";
      } else {
        refuse(b4, "in any mode (auto)", std::nullopt);
      }
      break;
    }
  }

  if (!target) {
    if (stored_bytes > avail)
      refuse(stored_bytes, "at its stored precision", quiet_plan(DType::Q4_0));
    rep.effective = "stored";
    if (opt.mode == LoadMode::Fast) rep.cache = "off";
    return finish(std::move(base));
  }

  const auto types = plan_types(ts, *target, warn);
  const uint64_t need = planned_bytes(base->config(), w, ts, types);
  if (need > avail)
    refuse(need, "in " + precision_of(*target),
           *target == DType::Q4_0 ? std::nullopt : std::optional(quiet_plan(DType::Q4_0)));

  const auto tq = Clock::now();
  auto storage = std::make_shared<QuantizedStorage>();
  storage->owned.reserve(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    TensorView& t = *ts[i];
    DType to = types[i];
    while (to != t.dtype) {
      std::vector<std::byte> buf;
      const std::string why = quantize_tensor(t, to, buf);
      if (why.empty()) {
        storage->owned.push_back(std::move(buf));
        t.dtype = to;
        t.data = storage->owned.back();
        break;
      }
      warn("Warning: " + bits_name(to) + " quantization failed: " + t.name + ": " + why);
      to =
          (to == DType::Q4_0 && structural_problem(t, DType::Q8_0).empty()) ? DType::Q8_0 : t.dtype;
    }
  }
  rep.quantize_s = seconds_since(tq);
  rep.effective = precision_of(*target);
  const ModelConfig c = base->config();
  const auto src = base->source();
  const std::string format = base->format();
  storage->base = std::move(base);
  auto m = std::make_unique<Model>(c, std::move(w), storage, src, format);

  if (opt.mode == LoadMode::Fast && !cache.empty()) {
    try {
      GgufExportOptions go;
      go.name = "epwa fast-load cache of " + path_to_utf8(src.filename());
      save_model_gguf(*m, go, cache);
      rep.cache = "miss";
    } catch (const std::exception& e) {
      rep.cache = "off";
      warn(std::string("Warning: could not write the fast-load cache: ") + e.what());
    }
  }
  return finish(std::move(m));
}

}  // namespace epwa
