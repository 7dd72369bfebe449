// GPT-OSS (GptOssForCausalLM, modeling_gpt_oss.py; GGUF "gpt-oss"): attention with q/k/v/o
// biases, GQA and a learned sink logit per head, layers alternating between sliding-window and
// full attention (layer_types), YaRN RoPE; a biased linear router, top-k of its logits and a
// softmax over the k; experts with biases, a fused gate/up projection whose even columns are the
// gate and odd ones the up, and the clamped SwiGLU (swiglu_limit, alpha 1.702). Every layer is
// sparse.
//
// The checkpoint stacks each layer's experts: mlp.experts.gate_up_proj [E, D, 2I] (+ _bias [E,
// 2I]), down_proj [E, I, D] (+ _bias [E, D]), x @ W as stored. The loader cuts them into the
// engine's per-expert matrices (gate and up {I, D}, down {D, I}, rows = outputs) under the
// per-expert names of the schema; a checkpoint that has those names instead (what epwa writes) is
// read as is.
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "arch/families.hpp"
#include "arch/hf_fields.hpp"
#include "epwa/error.hpp"
#include "epwa/gguf.hpp"
#include "epwa/half.hpp"
#include "epwa/safetensors.hpp"

namespace epwa {
namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

void read_hf(const HfFields& f, ModelConfig& c) {
  // GptOssConfig's defaults where the shared reader's differ.
  const nlohmann::json& raw = f.raw();
  const bool theta_given = f.has("rope_theta") || (f.has("rope_parameters") &&
                                                   raw["rope_parameters"].contains("rope_theta"));
  if (!theta_given) c.rope_theta = 150000.0f;
  c.max_position_embeddings = f.integer("max_position_embeddings", 131072);
  c.num_experts = f.integer_of({"num_local_experts", "num_experts"});
  c.expert_intermediate_size = f.integer("intermediate_size");
  c.intermediate_size = c.expert_intermediate_size;  // no dense layer
  // attention_bias covers all four projections (GptOssAttention).
  c.attention_bias = c.attention_out_bias = f.boolean("attention_bias", true);
  c.attention_sinks = true;
  c.router_scoring = RouterScoring::TopkSoftmax;
  c.router_bias = true;
  c.norm_topk_prob = false;  // not used by the top-k softmax
  c.expert_bias = true;
  c.swiglu_limit = f.number("swiglu_limit", 7.0f);
  c.sliding_window = f.integer("sliding_window", 128);
  c.sliding_layers.clear();
  if (f.has("layer_types")) {
    const nlohmann::json& t = raw["layer_types"];
    check(t.is_array() && static_cast<int32_t>(t.size()) == c.num_layers,
          "field 'layer_types' must list the type of each of the " + str(c.num_layers) +
              " layers, got " + t.dump());
    for (int32_t l = 0; l < c.num_layers; ++l) {
      check(t[l] == "sliding_attention" || t[l] == "full_attention",
            "unsupported layer type " + t[l].dump() + " (sliding_attention or full_attention)");
      if (t[l] == "sliding_attention") c.sliding_layers.push_back(l);
    }
  } else {  // GptOssConfig: even layers slide, odd ones attend to everything
    for (int32_t l = 0; l < c.num_layers; l += 2) c.sliding_layers.push_back(l);
  }
}

void write_hf(const ModelConfig& c, nlohmann::json& j) {
  j["intermediate_size"] = c.expert_intermediate_size;
  j["num_local_experts"] = c.num_experts;
  j["experts_per_token"] = c.experts_per_token;
  j["attention_bias"] = c.attention_bias;
  j["swiglu_limit"] = shortest(c.swiglu_limit);
  j["sliding_window"] = c.sliding_window;
  nlohmann::json types = nlohmann::json::array();
  for (int32_t l = 0; l < c.num_layers; ++l)
    types.push_back(c.layer_window(l) > 0 ? "sliding_attention" : "full_attention");
  j["layer_types"] = types;
  j["router_aux_loss_coef"] = 0.9;
  if (c.yarn.on()) {
    const nlohmann::json yarn = {
        {"rope_type", "yarn"},
        {"factor", shortest(c.yarn.factor)},
        {"beta_fast", shortest(c.yarn.beta_fast)},
        {"beta_slow", shortest(c.yarn.beta_slow)},
        {"original_max_position_embeddings", c.yarn.original_max_position},
        {"truncate", c.yarn.truncate},
    };
    j["rope_scaling"] = yarn;
    j["rope_parameters"] = yarn;
    j["rope_parameters"]["rope_theta"] = shortest(c.rope_theta);
  }
}

// llama.cpp's gpt-oss (ik_llama.cpp's llama-hparams.cpp and build_openai_moe, llama.cpp's
// GptOssModel in convert_hf_to_gguf.py): sliding window and expert width under the architecture,
// the even layers slide (its fixed pattern), YaRN as rope.scaling.*; the rest is fixed by the
// family (sinks, biased router with the top-k softmax, biased experts, the clamped SwiGLU at 7).
// What llama.cpp has no key for, epwa writes under epwa.* and reads back (docs/GGUF.md).
std::vector<int32_t> even_layers(int32_t n) {
  std::vector<int32_t> v;
  for (int32_t l = 0; l < n; l += 2) v.push_back(l);
  return v;
}

void read_gguf(const GgufFile& f, ModelConfig& c) {
  const std::string a = "gpt-oss.";
  c.attention_out_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
  c.attention_sinks = true;
  c.router_scoring = RouterScoring::TopkSoftmax;
  c.router_bias = true;
  c.norm_topk_prob = false;
  c.expert_bias = true;
  c.swiglu_limit = f.find_f32("epwa.swiglu_limit").value_or(7.0f);
  c.sliding_window = static_cast<int32_t>(f.get_u32(a + "attention.sliding_window"));
  c.sliding_layers = even_layers(c.num_layers);
  if (const GgufArray* sl = f.find_array("epwa.sliding_layers")) {
    c.sliding_layers.clear();
    for (uint32_t l : sl->as<uint32_t>()) c.sliding_layers.push_back(static_cast<int32_t>(l));
  }
  if (const std::string* type = f.find_string(a + "rope.scaling.type"); type && *type == "yarn") {
    c.yarn.factor = f.get_f32(a + "rope.scaling.factor");
    c.yarn.original_max_position =
        static_cast<int32_t>(f.get_u32(a + "rope.scaling.original_context_length"));
    c.yarn.beta_fast = f.find_f32("epwa.rope.scaling.yarn_beta_fast").value_or(32);
    c.yarn.beta_slow = f.find_f32("epwa.rope.scaling.yarn_beta_slow").value_or(1);
    c.yarn.attention_factor = f.find_f32("epwa.rope.scaling.attention_factor").value_or(0);
    // The released configs say truncate false; llama.cpp has no key for it.
    c.yarn.truncate = f.find_bool("epwa.rope.scaling.yarn_truncate").value_or(false);
  } else if (type != nullptr) {
    check(*type == "none", f.name() + ": unsupported gpt-oss.rope.scaling.type '" + *type + "'");
  }
}

void write_gguf(const ModelConfig& c, GgufWriter& w) {
  const std::string a = "gpt-oss.";
  w.set_u32(a + "expert_feed_forward_length", c.expert_intermediate_size);
  w.set_u32(a + "attention.sliding_window", c.sliding_window);
  if (c.sliding_layers != even_layers(c.num_layers))  // llama.cpp would slide the even ones
    w.set_array("epwa.sliding_layers",
                GgufArray(std::vector<uint32_t>(c.sliding_layers.begin(), c.sliding_layers.end())));
  if (c.swiglu_limit != 7.0f) w.set_f32("epwa.swiglu_limit", c.swiglu_limit);
  if (c.yarn.on()) {
    w.set_string(a + "rope.scaling.type", "yarn");
    w.set_f32(a + "rope.scaling.factor", c.yarn.factor);
    w.set_u32(a + "rope.scaling.original_context_length", c.yarn.original_max_position);
    // llama.cpp scales cos and sin by YaRN's own 0.1 ln(factor) + 1, as GPT-OSS does.
    if (const float af = c.yarn.cos_sin_factor();
        af != static_cast<float>(yarn_mscale(c.yarn.factor, 1)))
      w.set_f32("epwa.rope.scaling.attention_factor", af);
    if (c.yarn.beta_fast != 32) w.set_f32("epwa.rope.scaling.yarn_beta_fast", c.yarn.beta_fast);
    if (c.yarn.beta_slow != 1) w.set_f32("epwa.rope.scaling.yarn_beta_slow", c.yarn.beta_slow);
    w.set_bool("epwa.rope.scaling.yarn_truncate", c.yarn.truncate);
  }
}

std::string hf_name(TensorKind kind, int32_t layer, int32_t expert) {
  const std::string p = "model.layers." + std::to_string(layer) + ".mlp.router.";
  switch (kind) {
    case TensorKind::Router:
      return p + "weight";
    case TensorKind::RouterBias:
      return p + "bias";
    default:
      return hf_standard_name(kind, layer, expert);
  }
}

// Element (r, col) of a row-major [rows x cols] matrix of `esize`-byte values, copied as is.
void copy_element(const std::byte* src, int64_t cols, int64_t r, int64_t col, int64_t esize,
                  std::byte* dst) {
  std::copy_n(src + (r * cols + col) * esize, esize, dst);
}

// Element i of an f32, bf16 or f16 tensor.
float element_f32(const TensorView& t, int64_t i) {
  const std::byte* p = t.data.data() + i * dtype_bytes(t.dtype, 1);
  uint16_t h;
  switch (t.dtype) {
    case DType::F32: {
      float f;
      std::memcpy(&f, p, sizeof f);
      return f;
    }
    case DType::BF16:
      std::memcpy(&h, p, sizeof h);
      return bf16_to_f32(h);
    default:
      std::memcpy(&h, p, sizeof h);
      return f16_to_f32(h);
  }
}

// The release's MXFP4 tensors (transformers' convert_moe_packed_tensors): `blocks` [E, rows,
// cols/32, 16] and `scales` [E, rows, cols/32]; element 2j of a block is the low nibble of byte j,
// 2j+1 the high one, each an e2m1 code times 2^(scale - 127). Row r of expert e as ggml's MXFP4
// blocks (src/quant/blocks.hpp): the same codes and scale byte (ggml's doubled codes and halved
// scale give the same values), the nibbles reordered to elements j and j + 16 per byte.
struct Mxfp4 {
  const ByteTensor& blocks;
  const ByteTensor& scales;
  int64_t cols;
  void row(int64_t e, int64_t rows, int64_t r, std::byte* out) const {
    const int64_t groups = cols / 32, row = e * rows + r;
    for (int64_t g = 0; g < groups; ++g, out += 17) {
      const auto s = static_cast<uint8_t>(scales.data[row * groups + g]);
      check(s != 255, "tensor '" + scales.name + "': scale 255 (NaN)");
      const auto* q =
          reinterpret_cast<const uint8_t*>(blocks.data.data()) + (row * groups + g) * 16;
      const auto code = [q](int k) { return k % 2 ? q[k / 2] >> 4 : q[k / 2] & 15; };
      out[0] = std::byte{s};
      for (int j = 0; j < 16; ++j)
        out[1 + j] = std::byte(static_cast<uint8_t>(code(j) | code(j + 16) << 4));
    }
  }
};

const ByteTensor& byte_tensor(const SafetensorsModel& st, const std::string& name,
                              std::vector<int64_t> shape) {
  const ByteTensor* t = st.find_bytes(name);
  check(t != nullptr, "tensor '" + name + "' (U8) not found in the checkpoint");
  check(t->dtype == "U8", "tensor '" + name + "' is " + t->dtype + ", not U8");
  check(t->shape == shape, [&] {
    std::string want;
    for (int64_t s : shape) want += (want.empty() ? "" : ", ") + str(s);
    return "tensor '" + name + "' does not have the shape [" + want + "]";
  });
  return *t;
}

const TensorView& stacked(const SafetensorsModel& st, const std::string& name,
                          std::vector<int64_t> shape) {
  const TensorView& t = st.get(name);
  check(t.shape == shape, [&] {
    std::string want;
    for (int64_t s : shape) want += (want.empty() ? "" : ", ") + str(s);
    return "tensor '" + name + "' does not have the shape [" + want + "]";
  });
  check(t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16,
        "tensor '" + name + "' is " + std::string(dtype_name(t.dtype)) +
            " (GPT-OSS experts load from f32, bf16 or f16)");
  return t;
}

DerivedTensors derive_hf(const ModelConfig& c, const SafetensorsModel& st) {
  auto store = std::make_shared<std::vector<std::vector<std::byte>>>();
  DerivedTensors out;
  const int64_t E = c.num_experts, D = c.hidden_size, I = c.expert_intermediate_size;
  auto add = [&](std::string name, DType t, std::vector<int64_t> shape,
                 std::vector<std::byte> bytes) {
    store->push_back(std::move(bytes));
    out.views.emplace_back(
        std::move(name),
        TensorView{"", t, std::move(shape), {store->back().data(), store->back().size()}});
    out.views.back().second.name = out.views.back().first;
  };
  // f32 copy of `count` values of a bias tensor, every `step`-th from `first`.
  auto bias = [&](const TensorView& t, int64_t first, int64_t step, int64_t count) {
    std::vector<std::byte> b(count * sizeof(float));
    auto* f = reinterpret_cast<float*>(b.data());
    for (int64_t i = 0; i < count; ++i) f[i] = element_f32(t, first + i * step);
    return b;
  };
  for (int32_t l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + str(l) + ".mlp.experts.";
    if (st.find_bytes(p + "gate_up_proj_blocks")) {
      // MXFP4 (the release): rows are outputs already; gate = the even rows, up = the odd ones.
      check(D % 32 == 0 && I % 32 == 0,
            "MXFP4 experts need hidden and intermediate sizes that "
            "are multiples of 32, got " +
                str(D) + " and " + str(I));
      const Mxfp4 gu{byte_tensor(st, p + "gate_up_proj_blocks", {E, 2 * I, D / 32, 16}),
                     byte_tensor(st, p + "gate_up_proj_scales", {E, 2 * I, D / 32}), D};
      const Mxfp4 dn{byte_tensor(st, p + "down_proj_blocks", {E, D, I / 32, 16}),
                     byte_tensor(st, p + "down_proj_scales", {E, D, I / 32}), I};
      const TensorView& gub = stacked(st, p + "gate_up_proj_bias", {E, 2 * I});
      const TensorView& dnb = stacked(st, p + "down_proj_bias", {E, D});
      const int64_t rd = dtype_bytes(DType::MXFP4, D), ri = dtype_bytes(DType::MXFP4, I);
      for (int64_t e = 0; e < E; ++e) {
        std::vector<std::byte> gate(I * rd), up(I * rd), down(D * ri);
        for (int64_t i = 0; i < I; ++i) {
          gu.row(e, 2 * I, 2 * i, gate.data() + i * rd);
          gu.row(e, 2 * I, 2 * i + 1, up.data() + i * rd);
        }
        for (int64_t h = 0; h < D; ++h) dn.row(e, D, h, down.data() + h * ri);
        const std::string x = p + str(e) + ".";
        add(x + "gate_proj.weight", DType::MXFP4, {I, D}, std::move(gate));
        add(x + "up_proj.weight", DType::MXFP4, {I, D}, std::move(up));
        add(x + "down_proj.weight", DType::MXFP4, {D, I}, std::move(down));
        add(x + "gate_proj.bias", DType::F32, {I}, bias(gub, e * 2 * I, 2, I));
        add(x + "up_proj.bias", DType::F32, {I}, bias(gub, e * 2 * I + 1, 2, I));
        add(x + "down_proj.bias", DType::F32, {D}, bias(dnb, e * D, 1, D));
      }
      continue;
    }
    if (!st.find(p + "gate_up_proj")) {
      // Per-expert tensors, read by name; the engine adds expert biases as f32.
      for (int64_t e = 0; e < E; ++e)
        for (const char* b : {"gate_proj.bias", "up_proj.bias", "down_proj.bias"}) {
          const std::string name = p + str(e) + "." + b;
          const TensorView* t = st.find(name);
          if (t && t->dtype != DType::F32 && t->shape.size() == 1)
            add(name, DType::F32, t->shape, bias(*t, 0, 1, t->numel()));
        }
      continue;
    }
    const TensorView& gu = stacked(st, p + "gate_up_proj", {E, D, 2 * I});
    const TensorView& gub = stacked(st, p + "gate_up_proj_bias", {E, 2 * I});
    const TensorView& dn = stacked(st, p + "down_proj", {E, I, D});
    const TensorView& dnb = stacked(st, p + "down_proj_bias", {E, D});
    check(gu.dtype == dn.dtype, "tensors '" + p + "gate_up_proj' and 'down_proj' differ in type");
    const int64_t es = dtype_bytes(gu.dtype, 1);
    for (int64_t e = 0; e < E; ++e) {
      const std::byte* g = gu.data.data() + e * D * 2 * I * es;
      const std::byte* d = dn.data.data() + e * I * D * es;
      std::vector<std::byte> gate(I * D * es), up(I * D * es), down(D * I * es);
      for (int64_t i = 0; i < I; ++i)
        for (int64_t h = 0; h < D; ++h) {
          copy_element(g, 2 * I, h, 2 * i, es, gate.data() + (i * D + h) * es);
          copy_element(g, 2 * I, h, 2 * i + 1, es, up.data() + (i * D + h) * es);
          copy_element(d, D, i, h, es, down.data() + (h * I + i) * es);
        }
      const std::string x = "model.layers." + str(l) + ".mlp.experts." + str(e) + ".";
      add(x + "gate_proj.weight", gu.dtype, {I, D}, std::move(gate));
      add(x + "up_proj.weight", gu.dtype, {I, D}, std::move(up));
      add(x + "down_proj.weight", dn.dtype, {D, I}, std::move(down));
      add(x + "gate_proj.bias", DType::F32, {I}, bias(gub, e * 2 * I, 2, I));
      add(x + "up_proj.bias", DType::F32, {I}, bias(gub, e * 2 * I + 1, 2, I));
      add(x + "down_proj.bias", DType::F32, {D}, bias(dnb, e * D, 1, D));
    }
  }
  out.storage = std::move(store);
  return out;
}

}  // namespace

const Architecture& arch_gpt_oss() {
  static const Architecture a{
      "gpt_oss", "GptOssForCausalLM", "gpt_oss",  "gpt-oss", false,    read_hf,
      write_hf,  read_gguf,           write_gguf, hf_name,   derive_hf};
  return a;
}

}  // namespace epwa
