// The tensor schema: which tensors a model of a given config has, their shapes, their Hub names
// (from the family) and their GGUF names (llama.cpp's, shared by every family).
#include "epwa/arch.hpp"

namespace epwa {

namespace {

const char* gguf_base(TensorKind k) {
  switch (k) {
    case TensorKind::Embed:
      return "token_embd.weight";
    case TensorKind::OutputNorm:
      return "output_norm.weight";
    case TensorKind::Output:
      return "output.weight";
    case TensorKind::AttnNorm:
      return "attn_norm.weight";
    case TensorKind::AttnQ:
      return "attn_q.weight";
    case TensorKind::AttnK:
      return "attn_k.weight";
    case TensorKind::AttnV:
      return "attn_v.weight";
    case TensorKind::AttnOut:
      return "attn_output.weight";
    case TensorKind::AttnQBias:
      return "attn_q.bias";
    case TensorKind::AttnKBias:
      return "attn_k.bias";
    case TensorKind::AttnVBias:
      return "attn_v.bias";
    case TensorKind::AttnQNorm:
      return "attn_q_norm.weight";
    case TensorKind::AttnKNorm:
      return "attn_k_norm.weight";
    case TensorKind::AttnOutBias:
      return "attn_output.bias";
    case TensorKind::AttnSinks:
      return "attn_sinks.weight";
    case TensorKind::ExpGateBias:
      return "ffn_gate_exps.bias";
    case TensorKind::ExpDownBias:
      return "ffn_down_exps.bias";
    case TensorKind::ExpUpBias:
      return "ffn_up_exps.bias";
    case TensorKind::AttnQA:
      return "attn_q_a.weight";
    case TensorKind::AttnQANorm:
      return "attn_q_a_norm.weight";
    case TensorKind::AttnQB:
      return "attn_q_b.weight";
    case TensorKind::AttnKvA:
      return "attn_kv_a_mqa.weight";
    case TensorKind::AttnKvANorm:
      return "attn_kv_a_norm.weight";
    case TensorKind::AttnKvB:
      return "attn_kv_b.weight";
    case TensorKind::RouterBias:
      return "exp_probs_b.bias";
    case TensorKind::FfnNorm:
      return "ffn_norm.weight";
    case TensorKind::Router:
      return "ffn_gate_inp.weight";
    case TensorKind::ExpGate:
      return "ffn_gate_exps.weight";
    case TensorKind::ExpDown:
      return "ffn_down_exps.weight";
    case TensorKind::ExpUp:
      return "ffn_up_exps.weight";
    case TensorKind::ShexpGateInp:
      return "ffn_gate_inp_shexp.weight";
    case TensorKind::ShexpGate:
      return "ffn_gate_shexp.weight";
    case TensorKind::ShexpDown:
      return "ffn_down_shexp.weight";
    case TensorKind::ShexpUp:
      return "ffn_up_shexp.weight";
    case TensorKind::FfnGate:
      return "ffn_gate.weight";
    case TensorKind::FfnDown:
      return "ffn_down.weight";
    case TensorKind::FfnUp:
      return "ffn_up.weight";
  }
  return "";
}

// llama.cpp's gpt-oss names two tensors its own way: the FFN norm (transformers'
// post_attention_layernorm) and the router bias (the shared name is DeepSeek-V3's correction bias).
const char* gguf_base(TensorKind k, std::string_view gguf_arch) {
  if (gguf_arch == "gpt-oss" && k == TensorKind::FfnNorm) return "post_attention_norm.weight";
  if (gguf_arch == "gpt-oss" && k == TensorKind::RouterBias) return "ffn_gate_inp.bias";
  return gguf_base(k);
}

// Yields the tensors of `layer` (-1: embedding; -2: final norm and head).
void layer_tensors(const ModelConfig& c, const Architecture& arch, int32_t layer,
                   const std::function<void(const TensorSpec&)>& fn) {
  const int64_t d = c.hidden_size, hd = c.head_dim;
  const int64_t q = c.num_heads * hd, kv = c.num_kv_heads * hd;
  auto emit = [&](TensorKind kind, std::vector<int64_t> shape, int32_t expert = -1,
                  int32_t permute = 0) {
    TensorSpec s;
    s.kind = kind;
    s.layer = layer < 0 ? -1 : layer;
    s.expert = expert;
    s.hf = arch.hf_name(kind, s.layer, expert);
    const char* base = gguf_base(kind, arch.gguf);
    s.gguf = layer < 0 ? base : "blk." + std::to_string(layer) + "." + base;
    s.shape = std::move(shape);
    s.keep_f32 =
        s.shape.size() == 1 || kind == TensorKind::Router || kind == TensorKind::ShexpGateInp;
    s.permute_heads = arch.gguf_permute_qk ? permute : 0;
    s.required = !(kind == TensorKind::Output && c.tie_word_embeddings);
    fn(s);
  };
  if (layer == -1) return emit(TensorKind::Embed, {c.vocab_size, d});
  if (layer == -2) {
    emit(TensorKind::OutputNorm, {d});
    return emit(TensorKind::Output, {c.vocab_size, d});
  }
  const LayerConfig lc = c.layer(layer);
  emit(TensorKind::AttnNorm, {d});
  if (c.mla()) {
    const int64_t lat = c.kv_lora_rank, rope = c.qk_rope_head_dim, qa = c.q_lora_rank;
    if (qa > 0) {
      emit(TensorKind::AttnQA, {qa, d});
      emit(TensorKind::AttnQANorm, {qa});
      emit(TensorKind::AttnQB, {q, qa});
    } else {
      emit(TensorKind::AttnQ, {q, d});
    }
    emit(TensorKind::AttnKvA, {lat + rope, d});
    emit(TensorKind::AttnKvANorm, {lat});
    emit(TensorKind::AttnKvB, {c.num_heads * (c.qk_nope_head_dim + c.v_head_dim), lat});
    emit(TensorKind::AttnOut, {d, int64_t{c.num_heads} * c.v_head_dim});
  } else {
    emit(TensorKind::AttnQ, {q, d}, -1, c.num_heads);
    emit(TensorKind::AttnK, {kv, d}, -1, c.num_kv_heads);
    emit(TensorKind::AttnV, {kv, d});
    emit(TensorKind::AttnOut, {d, q});
    if (c.attention_bias) {
      emit(TensorKind::AttnQBias, {q});
      emit(TensorKind::AttnKBias, {kv});
      emit(TensorKind::AttnVBias, {kv});
    }
    if (c.attention_out_bias) emit(TensorKind::AttnOutBias, {d});
    if (c.attention_sinks) emit(TensorKind::AttnSinks, {c.num_heads});
    if (c.qk_norm == QkNorm::Full) {
      emit(TensorKind::AttnQNorm, {q});
      emit(TensorKind::AttnKNorm, {kv});
    } else if (c.qk_norm == QkNorm::PerHead) {
      emit(TensorKind::AttnQNorm, {hd});
      emit(TensorKind::AttnKNorm, {hd});
    }
  }
  emit(TensorKind::FfnNorm, {d});
  if (!lc.moe) {
    const int64_t f = lc.dense_ffn;
    emit(TensorKind::FfnGate, {f, d});
    emit(TensorKind::FfnDown, {d, f});
    emit(TensorKind::FfnUp, {f, d});
    return;
  }
  const int64_t i = lc.expert_ffn;
  emit(TensorKind::Router, {lc.experts, d});
  if (c.router_bias) emit(TensorKind::RouterBias, {lc.experts});
  for (int32_t e = 0; e < lc.experts; ++e) emit(TensorKind::ExpGate, {i, d}, e);
  for (int32_t e = 0; e < lc.experts; ++e) emit(TensorKind::ExpDown, {d, i}, e);
  for (int32_t e = 0; e < lc.experts; ++e) emit(TensorKind::ExpUp, {i, d}, e);
  if (c.expert_bias) {
    for (int32_t e = 0; e < lc.experts; ++e) emit(TensorKind::ExpGateBias, {i}, e);
    for (int32_t e = 0; e < lc.experts; ++e) emit(TensorKind::ExpDownBias, {d}, e);
    for (int32_t e = 0; e < lc.experts; ++e) emit(TensorKind::ExpUpBias, {i}, e);
  }
  if (lc.shared_ffn > 0) {
    const int64_t s = lc.shared_ffn;
    if (lc.shared_gate) emit(TensorKind::ShexpGateInp, {1, d});
    emit(TensorKind::ShexpGate, {s, d});
    emit(TensorKind::ShexpDown, {d, s});
    emit(TensorKind::ShexpUp, {s, d});
  }
}

}  // namespace

void for_each_tensor(const ModelConfig& c, int32_t layer,
                     const std::function<void(const TensorSpec&)>& fn) {
  const Architecture& arch = architecture(c.family);
  if (layer >= 0) return layer_tensors(c, arch, layer, fn);
  layer_tensors(c, arch, -1, fn);
  layer_tensors(c, arch, -2, fn);
}

void for_each_tensor(const ModelConfig& c, const std::function<void(const TensorSpec&)>& fn) {
  const Architecture& arch = architecture(c.family);
  layer_tensors(c, arch, -1, fn);
  for (int32_t l = 0; l < c.num_layers; ++l) layer_tensors(c, arch, l, fn);
  layer_tensors(c, arch, -2, fn);
}

std::string hf_standard_name(TensorKind kind, int32_t layer, int32_t expert) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const std::string x = p + "mlp.experts." + std::to_string(expert) + ".";
  switch (kind) {
    case TensorKind::Embed:
      return "model.embed_tokens.weight";
    case TensorKind::OutputNorm:
      return "model.norm.weight";
    case TensorKind::Output:
      return "lm_head.weight";
    case TensorKind::AttnNorm:
      return p + "input_layernorm.weight";
    case TensorKind::AttnQ:
      return p + "self_attn.q_proj.weight";
    case TensorKind::AttnK:
      return p + "self_attn.k_proj.weight";
    case TensorKind::AttnV:
      return p + "self_attn.v_proj.weight";
    case TensorKind::AttnOut:
      return p + "self_attn.o_proj.weight";
    case TensorKind::AttnQBias:
      return p + "self_attn.q_proj.bias";
    case TensorKind::AttnKBias:
      return p + "self_attn.k_proj.bias";
    case TensorKind::AttnVBias:
      return p + "self_attn.v_proj.bias";
    case TensorKind::AttnQNorm:
      return p + "self_attn.q_norm.weight";
    case TensorKind::AttnKNorm:
      return p + "self_attn.k_norm.weight";
    case TensorKind::AttnOutBias:
      return p + "self_attn.o_proj.bias";
    case TensorKind::AttnSinks:
      return p + "self_attn.sinks";
    case TensorKind::ExpGateBias:
      return x + "gate_proj.bias";
    case TensorKind::ExpDownBias:
      return x + "down_proj.bias";
    case TensorKind::ExpUpBias:
      return x + "up_proj.bias";
    case TensorKind::AttnQA:
      return p + "self_attn.q_a_proj.weight";
    case TensorKind::AttnQANorm:
      return p + "self_attn.q_a_layernorm.weight";
    case TensorKind::AttnQB:
      return p + "self_attn.q_b_proj.weight";
    case TensorKind::AttnKvA:
      return p + "self_attn.kv_a_proj_with_mqa.weight";
    case TensorKind::AttnKvANorm:
      return p + "self_attn.kv_a_layernorm.weight";
    case TensorKind::AttnKvB:
      return p + "self_attn.kv_b_proj.weight";
    case TensorKind::RouterBias:
      return p + "mlp.gate.e_score_correction_bias";
    case TensorKind::FfnNorm:
      return p + "post_attention_layernorm.weight";
    case TensorKind::Router:
      return p + "mlp.gate.weight";
    case TensorKind::ExpGate:
      return x + "gate_proj.weight";
    case TensorKind::ExpDown:
      return x + "down_proj.weight";
    case TensorKind::ExpUp:
      return x + "up_proj.weight";
    case TensorKind::ShexpGateInp:
      return p + "mlp.shared_expert_gate.weight";
    case TensorKind::ShexpGate:
      return p + "mlp.shared_expert.gate_proj.weight";
    case TensorKind::ShexpDown:
      return p + "mlp.shared_expert.down_proj.weight";
    case TensorKind::ShexpUp:
      return p + "mlp.shared_expert.up_proj.weight";
    case TensorKind::FfnGate:
      return p + "mlp.gate_proj.weight";
    case TensorKind::FfnDown:
      return p + "mlp.down_proj.weight";
    case TensorKind::FfnUp:
      return p + "mlp.up_proj.weight";
  }
  return "";
}

}  // namespace epwa
