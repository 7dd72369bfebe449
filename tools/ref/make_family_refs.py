#!/usr/bin/env python3
"""Builds small random Qwen2-MoE, OLMoE, Qwen3-MoE, DeepSeek-MoE (V1), DeepSeek-V2 (with and
without q_lora_rank), DeepSeek-V3 and GPT-OSS checkpoints (HF Hub naming, f32 safetensors; GPT-OSS
also bf16 and MXFP4) and reference outputs from an independent numpy forward pass, for the C++
engine's parity tests.

    /usr/bin/python3 tools/ref/make_family_refs.py --out tests/data/ref           # write, then check
    /usr/bin/python3 tools/ref/make_family_refs.py --out tests/data/ref --check   # check only

Needs only numpy (no torch, no transformers). For every model in SPECS it writes
<out>/<name>/{config.json, model.safetensors, ref.json}; the layout of ref.json is that of
make_refs.py (Mixtral, computed by transformers itself), plus "moe_layer" in each router entry.

The forward pass is written from transformers' modeling code (see REFERENCE; DeepSeek-MoE V1 from
its remote modeling code, REFERENCE_DEEPSEEK; V2/V3 from REFERENCE_DEEPSEEK_V2) and runs in float64;
the same code in float32 gives the f32_* figures in each ref.json's meta. A seed is rejected (and the
next one tried) when a router top-k boundary, the order inside a top-k, or a greedy argmax is a
near-tie (< MIN_GAP in logits), when the greedy run emits EOS, for OLMoE when clip_qkv clips
nothing in q, k or v, and for GPT-OSS when swiglu_limit clamps nothing in the gates or the ups. For
DeepSeek-V2/V3 the ranking is that of the router's choice (softmax, or sigmoid + correction bias,
after the group limit), its near-ties include the group boundary, and a V3 seed is rejected when
transformers' masking of the dropped groups with 0.0 would choose differently from leaving them out
(the engine's rule).

--check reloads every written folder (config.json, model.safetensors read by this script's own
parser, ref.json), verifies the file format and tensor set, regenerates the weights from the seed and
compares them bit-exactly, recomputes every case from the loaded files and compares it with ref.json.
"""

import argparse
import json
import math
import os
import platform
import struct
import sys
from collections import OrderedDict

import numpy as np

MIN_GAP = 1e-3  # smallest accepted logit gap at a top-k boundary, inside a top-k, or a greedy argmax
NEW_TOKENS = 8
LENGTHS = (1, 6, 19)
BOS, EOS = 1, 2
MAX_ATTEMPTS = 50

REFERENCE = (
    "numpy float64 forward written from transformers src/transformers/models/"
    "{qwen2_moe/modeling_qwen2_moe.py, olmoe/modeling_olmoe.py, qwen3_moe/modeling_qwen3_moe.py} and "
    "their configuration_*.py: transformers 5 code (strict-dataclass configs, fused experts) as "
    "stored in the Zahgon/transformers fork at c0ce2e40523611eb0eb5d2c03ba304371523a1fc, cross-read "
    "with huggingface/transformers modular_qwen2_moe.py@8fb1742f, modeling_qwen2_moe.py@1c351314, "
    "modeling_olmoe.py@00dcc6dd, modeling_qwen3_moe.py@00d4b3d2 (4.x); Hub expert names from "
    "conversion_mapping.py ('qwen2_moe' pattern, shared by qwen3_moe and olmoe)")
REFERENCE_DEEPSEEK = (
    "numpy float64 forward written from the remote modeling_deepseek.py / configuration_deepseek.py "
    "of deepseek-ai/deepseek-moe-16b-base (DeepseekForCausalLM: DeepseekAttention as Llama's, "
    "MoEGate softmax + topk + norm_topk_prob for top_k > 1 with a 1e-20 denominator guard, "
    "DeepseekMoE = routed experts + shared_experts(identity), DeepseekDecoderLayer's "
    "first_k_dense_replace / moe_layer_freq rule)")
REFERENCE_GPT_OSS = (
    "numpy float64 forward written from transformers src/transformers/models/gpt_oss/"
    "modeling_gpt_oss.py@00d4b3d2 (GptOssAttention + eager_attention_forward with sinks, "
    "GptOssTopKRouter, GptOssExperts' inference path: gate = gate_up[..., ::2], up = "
    "gate_up[..., 1::2], limit 7.0 and alpha 1.702 as hard-coded there, GptOssRotaryEmbedding) and "
    "modeling_rope_utils.py's _compute_yarn_parameters; the sliding-window mask of "
    "masking_utils.sliding_window_overlay (key kv sees query q iff q - sliding_window < kv <= q)")
REFERENCE_DEEPSEEK_V2 = (
    "numpy float64 forward written from huggingface/transformers src/transformers/models/"
    "deepseek_v2/modeling_deepseek_v2.py@0233e509 (DeepseekV2Attention: q_proj or q_b(q_a_layernorm("
    "q_a)), kv_a_proj_with_mqa split into latent + k_pe, kv_b(kv_a_layernorm(latent)) split into "
    "k_nope + v, apply_rotary_emb on interleaved pairs (view_as_complex) with freqs_cis * "
    "attention_scaling, scaling qk_head_dim^-0.5; DeepseekV2Moe softmax, greedy / "
    "group_limited_greedy (group max, others masked 0), * routed_scaling_factor, + shared_experts) "
    "and deepseek_v3/modular_deepseek_v3.py@000c33fd (DeepseekV3TopkRouter with "
    "e_score_correction_bias, route_tokens_to_experts: sigmoid, top-2 group sums of the biased "
    "scores, weights from the unbiased ones, norm_topk_prob over sum + 1e-20, * "
    "routed_scaling_factor; apply_rotary_pos_emb_interleave; scaling * yarn_get_mscale(factor, "
    "mscale_all_dim)^2), modeling_rope_utils._compute_yarn_parameters (truncate) for YaRN; RMSNorm "
    "of q_a / kv_a at eps 1e-6 (the modules' default)")


# ---------------------------------------------------------------- the models


def _common(vocab, hidden, layers, heads, kv_heads, eps, theta, tied):
    return OrderedDict(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, hidden_act="silu", max_position_embeddings=4096,
        initializer_range=0.02, rms_norm_eps=eps, use_cache=True, bos_token_id=BOS,
        eos_token_id=EOS, tie_word_embeddings=tied, rope_theta=theta, rope_scaling=None,
        attention_dropout=0.0)


def qwen2moe_config():
    """Qwen1.5-MoE / Qwen2-57B-A14B style (Qwen2MoeConfig fields)."""
    c = OrderedDict(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe")
    c.update(_common(320, 64, 3, 4, 2, 1e-6, 1000000.0, False))
    c.update(intermediate_size=80, use_sliding_window=False, sliding_window=4096, max_window_layers=3,
             qkv_bias=True, decoder_sparse_step=1, mlp_only_layers=[1], moe_intermediate_size=32,
             shared_expert_intermediate_size=48, num_experts=8, num_experts_per_tok=2,
             norm_topk_prob=False, output_router_logits=False, router_aux_loss_coef=0.001,
             torch_dtype="float32")
    return c


def olmoe_config(clip_qkv):
    """allenai/OLMoE-1B-7B style (OlmoeConfig fields); experts are intermediate_size wide."""
    c = OrderedDict(architectures=["OlmoeForCausalLM"], model_type="olmoe")
    c.update(_common(320, 64, 2, 4, 2, 1e-5, 10000.0, False))
    c.update(intermediate_size=32, pad_token_id=0, attention_bias=False, clip_qkv=clip_qkv,
             num_experts=8, num_experts_per_tok=3, norm_topk_prob=False, output_router_logits=False,
             router_aux_loss_coef=0.01, torch_dtype="float32")
    return c


def qwen3moe_config():
    """Qwen3-30B-A3B style (Qwen3MoeConfig fields); head_dim 24 != hidden / heads = 16."""
    c = OrderedDict(architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe")
    c.update(_common(320, 64, 3, 4, 2, 1e-6, 1000000.0, True))
    c.update(head_dim=24, intermediate_size=80, attention_bias=False, use_sliding_window=False,
             sliding_window=None, max_window_layers=3, decoder_sparse_step=1, mlp_only_layers=[0],
             moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2, norm_topk_prob=True,
             output_router_logits=False, router_aux_loss_coef=0.001, torch_dtype="float32")
    return c


def deepseek_config():
    """deepseek-ai/deepseek-moe-16b style (DeepseekConfig fields): a dense first layer, fine-grained
    routed experts, two shared experts fused into one FFN."""
    c = OrderedDict(architectures=["DeepseekForCausalLM"], model_type="deepseek")
    c.update(_common(320, 64, 3, 4, 2, 1e-6, 10000.0, False))
    c.update(intermediate_size=96, moe_intermediate_size=24, n_shared_experts=2, n_routed_experts=8,
             num_experts_per_tok=3, first_k_dense_replace=1, moe_layer_freq=1, norm_topk_prob=False,
             scoring_func="softmax", aux_loss_alpha=0.001, seq_aux=True, pretraining_tp=1,
             attention_bias=False, torch_dtype="float32")
    return c


def gpt_oss_config(dtype, mxfp4=False):
    """openai/gpt-oss-20b style (GptOssConfig fields): one sliding layer (window 8, so that the
    19-token prompts outgrow it) then one full layer, sinks, biases everywhere, YaRN as released;
    with mxfp4 the experts' matrices are stored as the release stores them (MXFP4 blocks and
    scales, the rest bf16)."""
    c = OrderedDict(architectures=["GptOssForCausalLM"], model_type="gpt_oss")
    c.update(_common(320, 64, 2, 4, 2, 1e-5, 150000.0, False))
    c.update(max_position_embeddings=131072, head_dim=16, intermediate_size=32, num_local_experts=8,
             num_experts_per_tok=3, experts_per_token=3, attention_bias=True, sliding_window=8,
             layer_types=["sliding_attention", "full_attention"], swiglu_limit=7.0,
             rope_scaling=OrderedDict(rope_type="yarn", factor=32.0, beta_fast=32.0, beta_slow=1.0,
                                      original_max_position_embeddings=4096, truncate=False),
             router_aux_loss_coef=0.9, output_router_logits=False, torch_dtype=dtype)
    if mxfp4:  # the release's quantization_config (its module list names every non-expert part)
        c["quantization_config"] = OrderedDict(
            modules_to_not_convert=["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                    "model.embed_tokens", "lm_head"], quant_method="mxfp4")
    return c


def _mla(q_lora_rank):
    return OrderedDict(q_lora_rank=q_lora_rank, kv_lora_rank=32, qk_nope_head_dim=16,
                       qk_rope_head_dim=8, v_head_dim=12)


def deepseek2_config(q_lora_rank, grouped, yarn):
    """DeepSeek-V2 (q_lora_rank, group_limited_greedy) or V2-Lite (no q_lora_rank, greedy) style
    (DeepseekV2Config fields). YaRN without mscale_all_dim: transformers' DeepseekV2Attention does
    not scale the softmax by it (DeepSeek's own code does; docs/FAMILIES.md)."""
    c = OrderedDict(architectures=["DeepseekV2ForCausalLM"], model_type="deepseek_v2")
    c.update(_common(320, 64, 3, 4, 4, 1e-6, 10000.0, False))
    c.update(_mla(q_lora_rank))
    c.update(intermediate_size=96, moe_intermediate_size=24, n_shared_experts=2,
             n_routed_experts=8, num_experts_per_tok=3, first_k_dense_replace=1, moe_layer_freq=1,
             norm_topk_prob=False, scoring_func="softmax", routed_scaling_factor=1.5,
             topk_method="group_limited_greedy" if grouped else "greedy",
             n_group=4 if grouped else 1, topk_group=2 if grouped else 1, attention_bias=False,
             torch_dtype="float32")
    if yarn:
        c["rope_scaling"] = OrderedDict(type="yarn", factor=4.0, original_max_position_embeddings=1024,
                                        beta_fast=32, beta_slow=1, mscale=1.0)
    return c


def deepseek3_config():
    """DeepSeek-V3 style (DeepseekV3Config fields): sigmoid router with correction bias, noaux_tc
    groups, YaRN with mscale_all_dim (the softmax scale)."""
    c = OrderedDict(architectures=["DeepseekV3ForCausalLM"], model_type="deepseek_v3")
    c.update(_common(320, 64, 3, 4, 4, 1e-6, 10000.0, False))
    c.update(_mla(48))
    c.update(intermediate_size=96, moe_intermediate_size=24, n_shared_experts=1,
             n_routed_experts=8, num_experts_per_tok=3, first_k_dense_replace=1,
             norm_topk_prob=True, scoring_func="sigmoid", topk_method="noaux_tc",
             routed_scaling_factor=2.5, n_group=4, topk_group=2, rope_interleave=True,
             num_nextn_predict_layers=0, attention_bias=False, torch_dtype="float32")
    c["rope_scaling"] = OrderedDict(type="yarn", factor=4.0, original_max_position_embeddings=1024,
                                    beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0)
    return c


# name -> (config.json contents, first seed tried)
SPECS = OrderedDict(
    qwen2moe=(qwen2moe_config(), 4000),
    olmoe=(olmoe_config(clip_qkv=2.5), 5000),
    qwen3moe=(qwen3moe_config(), 6000),
    deepseek=(deepseek_config(), 7000),
    gptoss=(gpt_oss_config("float32"), 8000),
    gptoss_bf16=(gpt_oss_config("bfloat16"), 9000),
    gptoss_mxfp4=(gpt_oss_config("bfloat16", mxfp4=True), 10000),
    deepseek2=(deepseek2_config(48, grouped=True, yarn=True), 8000),
    **{"deepseek2-lite": (deepseek2_config(None, grouped=False, yarn=False), 9000)},
    deepseek3=(deepseek3_config(), 10000),
)

DEEPSEEK_MLA = ("deepseek_v2", "deepseek_v3")


# ---------------------------------------------------------------- architecture, from config.json


def head_dim(cfg):
    # Attention.__init__: getattr(config, "head_dim", hidden_size // num_attention_heads)
    return cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]


def num_experts(cfg):
    if cfg["model_type"] == "gpt_oss":
        return cfg["num_local_experts"]
    deepseek = cfg["model_type"] in ("deepseek",) + DEEPSEEK_MLA
    return cfg["n_routed_experts"] if deepseek else cfg["num_experts"]


def is_sparse(cfg, layer):
    """Which decoder layers hold a sparse MoE block (DecoderLayer.__init__)."""
    if cfg["model_type"] == "deepseek":  # DeepseekDecoderLayer: DeepseekMoE, else DeepseekMLP
        return (cfg.get("n_routed_experts") is not None and layer >= cfg["first_k_dense_replace"]
                and layer % cfg["moe_layer_freq"] == 0)
    if cfg["model_type"] in DEEPSEEK_MLA:  # DeepseekV2/V3DecoderLayer: Moe iff >= first_k_dense_replace
        return layer >= cfg["first_k_dense_replace"]
    if cfg["model_type"] in ("olmoe", "gpt_oss"):  # always a sparse block (OlmoeSparseMoeBlock, GptOssMLP)
        return True
    # Qwen2MoeDecoderLayer / Qwen3MoeDecoderLayer; otherwise a dense MLP of intermediate_size
    return (layer not in cfg.get("mlp_only_layers", [])) and (
        cfg["num_experts"] > 0 and (layer + 1) % cfg["decoder_sparse_step"] == 0)


def expert_width(cfg):
    # OlmoeExperts (= MixtralExperts), GptOssExperts: intermediate_size; Qwen2Moe/Qwen3MoeExperts:
    # moe_intermediate_size
    if cfg["model_type"] in ("olmoe", "gpt_oss"):
        return cfg["intermediate_size"]
    return cfg["moe_intermediate_size"]


def biased_projections(cfg):
    """Attention projections that carry a bias."""
    if cfg["model_type"] == "qwen2_moe":  # q/k/v: bias=config.qkv_bias (default True); o: never
        return ("q", "k", "v") if cfg.get("qkv_bias", True) else ()
    # OLMoE, Qwen3-MoE, DeepSeek-MoE: all four follow attention_bias
    return ("q", "k", "v", "o") if cfg.get("attention_bias", False) else ()


def expected_tensors(cfg):
    """Hub tensor name -> shape, in generation order (the file itself is sorted by name)."""
    H, V, E = cfg["hidden_size"], cfg["vocab_size"], num_experts(cfg)
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
    family = cfg["model_type"]
    out = {"q": nh * hd, "k": nkv * hd, "v": nkv * hd, "o": H}
    into = {"q": H, "k": H, "v": H, "o": nh * hd}
    T = OrderedDict()
    T["model.embed_tokens.weight"] = (V, H)

    def mlp(prefix, width):
        T[prefix + "gate_proj.weight"] = (width, H)
        T[prefix + "up_proj.weight"] = (width, H)
        T[prefix + "down_proj.weight"] = (H, width)

    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        T[p + "input_layernorm.weight"] = (H,)
        if family in DEEPSEEK_MLA:
            mla_tensors(cfg, p, T)
        for x in ("" if family in DEEPSEEK_MLA else "qkvo"):
            T[f"{p}self_attn.{x}_proj.weight"] = (out[x], into[x])
            if x in biased_projections(cfg):
                T[f"{p}self_attn.{x}_proj.bias"] = (out[x],)
        if family == "olmoe":  # over the whole projections
            T[p + "self_attn.q_norm.weight"] = (nh * hd,)
            T[p + "self_attn.k_norm.weight"] = (nkv * hd,)
        elif family == "qwen3_moe":  # over one head
            T[p + "self_attn.q_norm.weight"] = (hd,)
            T[p + "self_attn.k_norm.weight"] = (hd,)
        T[p + "post_attention_layernorm.weight"] = (H,)
        if family == "gpt_oss":
            # GptOssAttention.sinks; GptOssTopKRouter weight and bias; GptOssExperts, stacked
            I = expert_width(cfg)
            T[p + "self_attn.sinks"] = (nh,)
            T[p + "mlp.router.weight"] = (E, H)
            T[p + "mlp.router.bias"] = (E,)
            T[p + "mlp.experts.gate_up_proj"] = (E, H, 2 * I)
            T[p + "mlp.experts.gate_up_proj_bias"] = (E, 2 * I)
            T[p + "mlp.experts.down_proj"] = (E, I, H)
            T[p + "mlp.experts.down_proj_bias"] = (E, H)
        elif is_sparse(cfg, layer):
            T[p + "mlp.gate.weight"] = (E, H)
            if family == "deepseek_v3":
                T[p + "mlp.gate.e_score_correction_bias"] = (E,)
            for e in range(E):
                mlp(f"{p}mlp.experts.{e}.", expert_width(cfg))
            if family == "qwen2_moe":
                mlp(p + "mlp.shared_expert.", cfg["shared_expert_intermediate_size"])
                T[p + "mlp.shared_expert_gate.weight"] = (1, H)
            if family in ("deepseek",) + DEEPSEEK_MLA and cfg.get("n_shared_experts") is not None:
                # DeepseekMoE: one DeepseekMLP of moe_intermediate_size * n_shared_experts, no gate
                mlp(p + "mlp.shared_experts.", cfg["moe_intermediate_size"] * cfg["n_shared_experts"])
        else:
            mlp(p + "mlp.", cfg["intermediate_size"])
    T["model.norm.weight"] = (H,)
    if not cfg["tie_word_embeddings"]:
        T["lm_head.weight"] = (V, H)
    return T


def mla_tensors(cfg, p, T):
    """DeepseekV2Attention / DeepseekV3Attention.__init__ (no attention_bias)."""
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    qd = cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]
    a = p + "self_attn."
    if cfg["q_lora_rank"] is None:
        T[a + "q_proj.weight"] = (nh * qd, H)
    else:
        T[a + "q_a_proj.weight"] = (cfg["q_lora_rank"], H)
        T[a + "q_a_layernorm.weight"] = (cfg["q_lora_rank"],)
        T[a + "q_b_proj.weight"] = (nh * qd, cfg["q_lora_rank"])
    T[a + "kv_a_proj_with_mqa.weight"] = (cfg["kv_lora_rank"] + cfg["qk_rope_head_dim"], H)
    T[a + "kv_a_layernorm.weight"] = (cfg["kv_lora_rank"],)
    T[a + "kv_b_proj.weight"] = (nh * (cfg["qk_nope_head_dim"] + cfg["v_head_dim"]), cfg["kv_lora_rank"])
    T[a + "o_proj.weight"] = (H, nh * cfg["v_head_dim"])


def init_std(name, cfg):
    """Larger than HF's init (0.02) so that router choices and logits are well separated."""
    if name == "model.embed_tokens.weight":
        # Tied: the embedding is also the LM head; at 0.5 the input token dominates the residual
        # stream and every greedy run just repeats its first token.
        return 0.2 if cfg["tie_word_embeddings"] else 0.5
    if name.endswith(".mlp.gate.weight") or name.endswith(".mlp.router.weight"):  # router
        return 0.3
    if name.endswith("gate_up_proj"):  # wide enough that swiglu_limit clamps some gates and ups
        return 0.6
    if name.endswith("shared_expert_gate.weight"):
        return 0.2
    return 0.15


def to_bf16(x):
    """f32 -> the nearest bf16 (ties to even), as its bits (uint16)."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4").astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")


def from_bf16(bits):
    return (bits.astype("<u4") << 16).view("<f4")


FP4_VALUES = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                       -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def to_mxfp4(w):
    """[..., in] (in a multiple of 32) -> (blocks u8 [..., in/32, 16], scales u8 [..., in/32]):
    per block of 32 the e8m0 scale 2^(s-127) with the block's largest magnitude / 2^s <= 6, each
    value the nearest e2m1 (ties to the lower code); element 2j in the low nibble of byte j, 2j+1
    in the high one (transformers' convert_moe_packed_tensors reads them so)."""
    *lead, n = w.shape
    b = w.reshape(*lead, n // 32, 32).astype(np.float64)
    amax = np.abs(b).max(-1)
    s = np.clip(np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0)), -127, 127).astype(np.int64)
    scaled = b / np.ldexp(1.0, s)[..., None]
    codes = np.abs(scaled[..., None] - FP4_VALUES).argmin(-1).astype(np.uint8)
    return (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8), (s + 127).astype(np.uint8)


def from_mxfp4(blocks, scales):
    """convert_moe_packed_tensors without its final transpose: [..., G, 16] -> [..., G * 32]."""
    lo, hi = FP4_VALUES[blocks & 0x0F], FP4_VALUES[blocks >> 4]
    v = np.stack([lo, hi], -1).reshape(*blocks.shape[:-1], 32)
    v = np.ldexp(v, scales.astype(np.int64)[..., None] - 127)
    return v.reshape(*blocks.shape[:-2], -1).astype(np.float32)


def mxfp4_tensors(W, cfg):
    """The release's tensors of W: gate_up_proj [E, D, 2I] -> gate_up_proj_blocks [E, 2I, D/32, 16]
    and _scales [E, 2I, D/32] (rows = outputs), down_proj [E, I, D] -> [E, D, I/32, 16] / [E, D, I/32];
    the rest unchanged."""
    out = OrderedDict()
    for name, t in W.items():
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            out[name + "_blocks"], out[name + "_scales"] = to_mxfp4(np.swapaxes(t, 1, 2))
        else:
            out[name] = t
    return out


def make_weights(cfg, seed):
    """f32 tensors: matrices N(0, std), norm weights 1 + 0.1 N(0, 1), biases 0.1 N(0, 1), sinks
    N(0, 1); rounded to bf16 when the config's torch_dtype is bfloat16."""
    rng = np.random.default_rng(seed)
    W = OrderedDict()
    for name, shape in expected_tensors(cfg).items():
        noise = rng.standard_normal(shape)
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * noise
        elif name.endswith("e_score_correction_bias"):
            t = 0.05 * noise
        elif name.endswith(".bias") or name.endswith("_bias"):
            t = 0.1 * noise
        elif name.endswith(".sinks"):
            t = noise
        else:
            t = init_std(name, cfg) * noise
        W[name] = t.astype(np.float32)
        if cfg.get("torch_dtype") == "bfloat16":
            W[name] = from_bf16(to_bf16(W[name]))
    if is_mxfp4(cfg):  # the experts as the forward sees them: exactly what the file holds
        W = unpack_mxfp4(mxfp4_tensors(W, cfg))
    return W


def is_mxfp4(cfg):
    return cfg.get("quantization_config", {}).get("quant_method") == "mxfp4"


def unpack_mxfp4(T):
    """mxfp4_tensors' inverse: the blocks and scales back to the [E, in, out] matrices."""
    W = OrderedDict()
    for name, t in T.items():
        if name.endswith("_blocks"):
            base = name[:-len("_blocks")]
            W[base] = np.ascontiguousarray(np.swapaxes(from_mxfp4(t, T[base + "_scales"]), 1, 2))
        elif not name.endswith("_scales"):
            W[name] = t
    return W


# ---------------------------------------------------------------- safetensors


def write_safetensors(path, tensors, dtype="F32", dtypes=None):
    """f32 (or bf16: values already bf16) safetensors: u64 LE header length, JSON header, data;
    tensors sorted by name. uint8 arrays are written as U8, or as dtypes[name] (F8_E4M3); dtypes
    may also name F32 or BF16 for a float tensor."""
    header, blobs, off = OrderedDict(__metadata__={"format": "pt"}), [], 0
    dtypes = dtypes or {}
    for name in sorted(tensors):
        t = tensors[name]
        kind = dtypes.get(name, "U8" if t.dtype == np.uint8 else dtype)  # MXFP4, FP8: bytes
        if t.dtype == np.uint8:
            assert kind in ("U8", "F8_E4M3"), f"{name}: bytes written as {kind}"
        b = (t.tobytes() if t.dtype == np.uint8 else to_bf16(t).tobytes() if kind == "BF16"
             else np.ascontiguousarray(t, dtype="<f4").tobytes())
        header[name] = {"dtype": kind, "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # keep the data 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    """Returns (OrderedDict name -> f32 array in file order, metadata); checks the layout."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n], object_pairs_hook=OrderedDict)
    meta = header.pop("__metadata__", None)
    body = data[8 + n:]
    names = list(header)
    assert names == sorted(names), "tensors not sorted by name"
    W, off = OrderedDict(), 0
    for name in names:
        h = header[name]
        assert h["dtype"] in ("F32", "BF16", "U8"), f"{name}: dtype {h['dtype']}"
        size = {"F32": 4, "BF16": 2, "U8": 1}[h["dtype"]]
        start, end = h["data_offsets"]
        n = math.prod(h["shape"])
        assert start == off and end - start == size * n, f"{name}: offsets {start, end}"
        if size == 1:
            W[name] = np.frombuffer(body, np.uint8, n, start).reshape(h["shape"])
        elif size == 4:
            W[name] = np.frombuffer(body, "<f4", n, start).reshape(h["shape"])
        else:
            W[name] = from_bf16(np.frombuffer(body, "<u2", n, start)).reshape(h["shape"])
        off = end
    assert off == len(body), "trailing bytes after the last tensor"
    return W, meta


# ---------------------------------------------------------------- forward pass


def rms_norm(x, weight, eps):
    # RMSNorm.forward: x * rsqrt(mean(x^2) + eps) over the last axis, then weight * (.)
    return weight * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def silu(x):
    return x / (1.0 + np.exp(-x))


def is_yarn(cfg):
    r = cfg.get("rope_scaling")
    return bool(r) and r.get("rope_type", r.get("type")) == "yarn"


def yarn(cfg, dim, dt):
    """modeling_rope_utils._compute_yarn_parameters: (inv_freq, attention_factor) of a rope_scaling
    of type yarn over `dim` rotated values, the correction range in Python floats, the rest in dt.
    The one YaRN of every family: GPT-OSS (truncate false), DeepSeek-V2/V3 (mscale,
    mscale_all_dim)."""
    r, base = cfg["rope_scaling"], cfg["rope_theta"]
    factor = r["factor"]
    orig = r.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
    attention_factor = r.get("attention_factor")
    if attention_factor is None:  # get_mscale, DeepSeek's ratio when both mscales are given
        m, m_all = r.get("mscale"), r.get("mscale_all_dim")
        attention_factor = (yarn_mscale(factor, m) / yarn_mscale(factor, m_all) if m and m_all
                            else yarn_mscale(factor))
    beta_fast, beta_slow = r.get("beta_fast") or 32, r.get("beta_slow") or 1

    def correction_dim(rotations):  # find_correction_dim
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if r.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=dt) - low) / (high - low), 0, 1)
    pos_freqs = dt(base) ** (np.arange(0, dim, 2, dtype=dt) / dt(dim))
    extrapolation_factor = 1 - ramp
    inv_freq = (1 / (factor * pos_freqs)) * (1 - extrapolation_factor) + (1 / pos_freqs) * extrapolation_factor
    return inv_freq, dt(attention_factor)


def rope_tables(cfg, T, dt):
    # RotaryEmbedding.compute_default_rope_parameters + forward: inv_freq over head_dim, emb = cat(f, f);
    # YaRN: its inv_freq, cos and sin times the attention factor
    hd = head_dim(cfg)
    if is_yarn(cfg):
        inv_freq, attention_factor = yarn(cfg, hd, dt)
    else:
        inv_freq = 1.0 / (dt(cfg["rope_theta"]) ** (np.arange(0, hd, 2, dtype=dt) / dt(hd)))
        attention_factor = dt(1)
    ang = np.arange(T, dtype=dt)[:, None] * inv_freq[None, :]
    emb = np.concatenate([ang, ang], axis=-1)
    return np.cos(emb) * attention_factor, np.sin(emb) * attention_factor


def apply_rope(x, cos, sin):
    # apply_rotary_pos_emb with rotate_half: x [T, heads, hd]; halves, not interleaved pairs
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def yarn_mscale(scale, mscale=1.0):
    # yarn_get_mscale / _compute_yarn_parameters.get_mscale
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def mla_rope(cfg, T, dt):
    """cos, sin [T, rope/2] of DeepseekV2RotaryEmbedding / DeepseekV3RotaryEmbedding: default or
    YaRN inv_freq over qk_rope_head_dim (the config's head_dim), times attention_scaling."""
    dim, base = cfg["qk_rope_head_dim"], cfg["rope_theta"]
    if is_yarn(cfg):
        inv_freq, factor_scale = yarn(cfg, dim, np.float64)
    else:
        inv_freq = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        factor_scale = 1.0
    ang = np.arange(T, dtype=np.float64)[:, None] * inv_freq[None, :]
    return (np.cos(ang) * factor_scale).astype(dt), (np.sin(ang) * factor_scale).astype(dt)


def apply_rope_pairs(x, cos, sin):
    # apply_rotary_emb: (x[2i] + i x[2i+1]) * (cos + i sin), x [T, heads, rope]
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = b * c + a * s
    return out


def deepseek_choice(logits, cfg, fill=-np.inf):
    """(scores, choice values with the dropped groups at `fill`, group scores or None) of the
    DeepSeek-V2/V3 routers (route_tokens_to_experts)."""
    E = logits.shape[-1]
    if cfg["model_type"] == "deepseek_v3":
        scores = 1.0 / (1.0 + np.exp(-logits))
        choice = scores + cfg["_bias"]
    else:
        scores = softmax(logits)
        choice = scores.copy()
    g, tg = cfg.get("n_group") or 1, cfg.get("topk_group") or 1
    if cfg["model_type"] == "deepseek_v2" and cfg["topk_method"] == "greedy":
        g = 1
    if g == 1:
        return scores, choice, None
    grouped = choice.reshape(-1, g, E // g)
    if cfg["model_type"] == "deepseek_v3":
        gscore = -np.sort(-grouped, axis=-1)[..., :2].sum(-1)
    else:
        gscore = grouped.max(-1)
    keep = np.argsort(-gscore, axis=-1, kind="stable")[:, :tg]
    mask = np.zeros_like(gscore, dtype=bool)
    np.put_along_axis(mask, keep, True, axis=-1)
    masked = np.where(np.repeat(mask, E // g, axis=-1), choice, fill)
    return scores, masked, gscore


def routing(logits, cfg):
    """TopKRouter.forward: softmax over all experts (f32 in HF), top-k, renormalise only if asked.
    DeepSeek's MoEGate: the same, renormalising only when top_k > 1, over sum + 1e-20.

    Returns (expert ids [T, k] best first, weights [T, k] exactly as applied to the experts).
    Exact ties go to the lower expert index (stable sort); references never contain near-ties.
    (MoEGate's torch.topk(sorted=False) may list its k in another order: the set and each expert's
    weight are what the forward uses, and the spec's top-1 is the argmax.)"""
    k = cfg["num_experts_per_tok"]
    if cfg["model_type"] == "gpt_oss":
        # GptOssTopKRouter: torch.topk of the (biased) logits, softmax over the k values
        top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
        return top, softmax(np.take_along_axis(logits, top, axis=-1))
    if cfg["model_type"] in DEEPSEEK_MLA:
        scores, choice, _ = deepseek_choice(logits, cfg)
        top = np.argsort(-choice, axis=-1, kind="stable")[:, :k]
        weights = np.take_along_axis(scores, top, axis=-1)
        if cfg["norm_topk_prob"] and k > 1:
            weights = weights / (weights.sum(axis=-1, keepdims=True) + 1e-20)
        return top, weights * cfg["routed_scaling_factor"]
    probs = softmax(logits)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    weights = np.take_along_axis(probs, top, axis=-1)
    if cfg["model_type"] == "deepseek":
        if k > 1 and cfg["norm_topk_prob"]:
            weights = weights / (weights.sum(axis=-1, keepdims=True) + 1e-20)
    elif cfg["norm_topk_prob"]:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    return top, weights


class Model:
    """Forward pass of one checkpoint (config.json + Hub tensors) in a chosen float dtype."""

    def __init__(self, cfg, W, dtype=np.float64):
        self.cfg, self.dt = cfg, dtype
        self.w = {name: np.asarray(t, dtype=dtype) for name, t in W.items()}
        self.family = cfg["model_type"]
        self.eps = dtype(cfg["rms_norm_eps"])
        self.clip_counts = {"q": [0, 0], "k": [0, 0], "v": [0, 0]}  # OLMoE: [clipped, total]
        self.clamp_counts = {"gate": [0, 0], "up": [0, 0]}  # GPT-OSS: [clamped, total]

    def linear(self, x, name, bias=False):
        y = x @ self.w[name + ".weight"].T
        return y + self.w[name + ".bias"] if bias else y

    def mlp(self, x, prefix):
        # *MLP.forward: down_proj(act_fn(gate_proj(x)) * up_proj(x)), act = silu
        gate, up = self.linear(x, prefix + "gate_proj"), self.linear(x, prefix + "up_proj")
        return self.linear(silu(gate) * up, prefix + "down_proj")

    def router_cfg(self, layer):
        """The config the routing functions read: V3's with its layer's correction bias."""
        if self.family != "deepseek_v3":
            return self.cfg
        return dict(self.cfg, _bias=self.w[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"])

    def route(self, layer, logits):
        return routing(logits, self.router_cfg(layer))

    def ranked(self, layer, logits):
        """(values the top-k ranks, group scores or None, whether transformers' 0.0 masking agrees)."""
        if self.family not in DEEPSEEK_MLA:
            return logits, None, True
        cfg, k = self.router_cfg(layer), self.cfg["num_experts_per_tok"]
        _, choice, gscore = deepseek_choice(logits, cfg)
        _, zero, _ = deepseek_choice(logits, cfg, fill=0.0)
        same = (np.argsort(-choice, -1, kind="stable")[:, :k] == np.argsort(-zero, -1, kind="stable")[:, :k]).all()
        if self.family == "deepseek_v2":  # softmax: gaps in log-probabilities, i.e. in logits
            kept = np.isfinite(choice)
            choice = np.where(kept, np.log(np.where(kept, choice, 1.0)), -np.inf)
            gscore = None if gscore is None else np.log(gscore)
        return choice, gscore, bool(same)

    def mla(self, h, p):
        """DeepseekV2Attention.forward / DeepseekV3Attention.forward (eager, full recomputation)."""
        cfg, T, a = self.cfg, h.shape[0], p + "self_attn."
        nh, dn, dr, dv = (cfg[x] for x in ("num_attention_heads", "qk_nope_head_dim",
                                           "qk_rope_head_dim", "v_head_dim"))
        eps = self.dt(1e-6)  # q_a_layernorm / kv_a_layernorm: RMSNorm(rank), default eps
        if cfg["q_lora_rank"] is None:
            q = self.linear(h, a + "q_proj")
        else:
            q = self.linear(rms_norm(self.linear(h, a + "q_a_proj"), self.w[a + "q_a_layernorm.weight"], eps),
                            a + "q_b_proj")
        q = q.reshape(T, nh, dn + dr)
        q_nope, q_pe = q[..., :dn], q[..., dn:]
        ckv = self.linear(h, a + "kv_a_proj_with_mqa")
        latent, k_pe = ckv[:, :cfg["kv_lora_rank"]], ckv[:, cfg["kv_lora_rank"]:]
        kv = self.linear(rms_norm(latent, self.w[a + "kv_a_layernorm.weight"], eps), a + "kv_b_proj")
        kv = kv.reshape(T, nh, dn + dv)
        k_nope, v = kv[..., :dn], kv[..., dn:]
        cos, sin = mla_rope(cfg, T, self.dt)
        q_pe = apply_rope_pairs(q_pe, cos, sin)
        k_pe = apply_rope_pairs(k_pe[:, None, :], cos, sin)
        qs = np.concatenate([q_nope, q_pe], -1)
        ks = np.concatenate([k_nope, np.broadcast_to(k_pe, (T, nh, dr))], -1)
        scale = (dn + dr) ** -0.5
        r = cfg.get("rope_scaling")
        if r and r.get("mscale_all_dim"):  # DeepseekV3Attention (V2 configs here leave it unset)
            scale *= yarn_mscale(r["factor"], r["mscale_all_dim"]) ** 2
        scores = np.einsum("thd,shd->hts", qs, ks) * self.dt(scale)
        scores = scores + np.triu(np.full((T, T), -np.inf, dtype=self.dt), 1)
        o = np.einsum("hts,shd->thd", softmax(scores), v).reshape(T, nh * dv)
        return self.linear(o, a + "o_proj")

    def attention(self, h, p, cos, sin):
        cfg, T = self.cfg, h.shape[0]
        if self.family in DEEPSEEK_MLA:
            return self.mla(h, p)
        nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], head_dim(cfg)
        bias = biased_projections(cfg)
        q, k, v = (self.linear(h, f"{p}self_attn.{x}_proj", x in bias) for x in "qkv")
        if self.family == "olmoe":
            # OlmoeAttention.forward: q_norm(q_proj(x)), k_norm(k_proj(x)) over the whole projection
            # (hidden_size and kv_heads * head_dim wide), then clamp_ q, k (normed) and v to
            # [-clip_qkv, clip_qkv], and only then view into heads and apply RoPE.
            q = rms_norm(q, self.w[p + "self_attn.q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + "self_attn.k_norm.weight"], self.eps)
            c = cfg.get("clip_qkv")
            if c is not None:
                for name, t in (("q", q), ("k", k), ("v", v)):
                    self.clip_counts[name][0] += int(np.count_nonzero(np.abs(t) > c))
                    self.clip_counts[name][1] += t.size
                q, k, v = (np.clip(t, -c, c) for t in (q, k, v))
        q, k, v = q.reshape(T, nh, hd), k.reshape(T, nkv, hd), v.reshape(T, nkv, hd)
        if self.family == "qwen3_moe":
            # Qwen3MoeAttention.forward: q_norm / k_norm (head_dim wide) on view(..., -1, head_dim),
            # i.e. per head, before RoPE
            q = rms_norm(q, self.w[p + "self_attn.q_norm.weight"], self.eps)
            k = rms_norm(k, self.w[p + "self_attn.k_norm.weight"], self.eps)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # repeat_kv: query head i reads kv head i // (nh / nkv)
        k, v = np.repeat(k, nh // nkv, axis=1), np.repeat(v, nh // nkv, axis=1)
        # eager_attention_forward: q k^T * head_dim^-0.5 + causal mask, softmax, @ v
        scores = np.einsum("thd,shd->hts", q, k) * self.dt(hd ** -0.5)
        scores = scores + np.triu(np.full((T, T), -np.inf, dtype=self.dt), 1)
        if self.family == "gpt_oss":
            layer = int(p.split(".")[2])
            if cfg["layer_types"][layer] == "sliding_attention":
                # sliding_window_overlay: key s is visible to query t iff s > t - sliding_window
                t_idx, s_idx = np.arange(T)[:, None], np.arange(T)[None, :]
                scores = np.where(s_idx > t_idx - cfg["sliding_window"], scores, -np.inf)
            # the head's sink logit joins the softmax as one more column, then is dropped
            sinks = np.broadcast_to(self.w[p + "self_attn.sinks"][:, None, None], (nh, T, 1))
            probs = softmax(np.concatenate([scores, sinks], axis=-1))[..., :-1]
        else:
            probs = softmax(scores)
        o = np.einsum("hts,shd->thd", probs, v).reshape(T, nh * hd)
        return self.linear(o, p + "self_attn.o_proj", "o" in bias)

    def gpt_oss_moe(self, h, p):
        """GptOssMLP: (block output, biased router logits [T, E])."""
        cfg, w = self.cfg, self.w
        logits = self.linear(h, p + "mlp.router", bias=True)
        top, weights = routing(logits, cfg)
        limit, alpha = self.dt(7.0), self.dt(1.702)  # GptOssExperts: hard-coded
        x = p + "mlp.experts."
        y = np.zeros_like(h)
        for e in range(num_experts(cfg)):
            rows, slot = np.nonzero(top == e)
            if not rows.size:
                continue
            gate_up = h[rows] @ w[x + "gate_up_proj"][e] + w[x + "gate_up_proj_bias"][e]
            gate, up = gate_up[..., ::2], gate_up[..., 1::2]
            self.clamp_counts["gate"][0] += int(np.count_nonzero(gate > limit))
            self.clamp_counts["up"][0] += int(np.count_nonzero(np.abs(up) > limit))
            self.clamp_counts["gate"][1] += gate.size
            self.clamp_counts["up"][1] += up.size
            gate, up = np.minimum(gate, limit), np.clip(up, -limit, limit)
            glu = gate * (1 / (1 + np.exp(-(gate * alpha))))
            out = ((up + 1) * glu) @ w[x + "down_proj"][e] + w[x + "down_proj_bias"][e]
            y[rows] += weights[rows, slot, None] * out
        return y, logits

    def sparse_moe(self, h, p):
        """Returns (block output, raw router logits [T, E])."""
        cfg = self.cfg
        if self.family == "gpt_oss":
            return self.gpt_oss_moe(h, p)
        logits = self.linear(h, p + "mlp.gate")  # TopKRouter: F.linear(x, weight), no bias
        top, weights = self.route(int(p.split(".")[2]), logits)
        y = np.zeros_like(h)
        for e in range(num_experts(cfg)):  # Experts.forward: each hit expert on its tokens, weighted
            rows, slot = np.nonzero(top == e)
            if rows.size:
                y[rows] += weights[rows, slot, None] * self.mlp(h[rows], f"{p}mlp.experts.{e}.")
        if self.family == "qwen2_moe":
            # Qwen2MoeSparseMoeBlock.forward: + sigmoid(shared_expert_gate(x)) * shared_expert(x)
            gate = 1.0 / (1.0 + np.exp(-self.linear(h, p + "mlp.shared_expert_gate")))  # [T, 1]
            y = y + gate * self.mlp(h, p + "mlp.shared_expert.")
        if self.family in ("deepseek",) + DEEPSEEK_MLA and cfg.get("n_shared_experts") is not None:
            # DeepseekMoE.forward: y + shared_experts(identity), identity = the normed input
            y = y + self.mlp(h, p + "mlp.shared_experts.")
        return y, logits

    def forward(self, ids):
        """Logits [T, V] and [(layer, raw router logits [T, E])] for every sparse layer."""
        cfg, w = self.cfg, self.w
        cos, sin = (None, None) if self.family in DEEPSEEK_MLA else rope_tables(cfg, len(ids), self.dt)
        x = w["model.embed_tokens.weight"][np.asarray(ids)]
        routers = []
        for layer in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{layer}."
            # DecoderLayer.forward: pre-norm residual blocks
            x = x + self.attention(rms_norm(x, w[p + "input_layernorm.weight"], self.eps), p, cos, sin)
            h = rms_norm(x, w[p + "post_attention_layernorm.weight"], self.eps)
            if is_sparse(cfg, layer):
                y, r = self.sparse_moe(h, p)
                routers.append((layer, r))
            else:
                y = self.mlp(h, p + "mlp.")
            x = x + y
        x = rms_norm(x, w["model.norm.weight"], self.eps)
        head = w["model.embed_tokens.weight" if cfg["tie_word_embeddings"] else "lm_head.weight"]
        return x @ head.T, routers

    def greedy(self, ids, n):
        """n argmax tokens, full recomputation each step (no KV cache).

        Returns (tokens, smallest top-2 logit gap, router logits of the last step's forward, which
        cover every position the run routed)."""
        seq, gaps = list(ids), []
        for _ in range(n):
            logits, routers = self.forward(seq)
            last = np.sort(logits[-1])
            gaps.append(float(last[-1] - last[-2]))
            seq.append(int(np.argmax(logits[-1])))
        return seq[len(ids):], min(gaps), routers


# ---------------------------------------------------------------- references


def router_gaps(model, routers, k):
    """(smallest gap at the top-k boundary or a group boundary, smallest gap between consecutive
    top-k entries), over the values the router ranks; -inf when the 0.0-masking rule differs."""
    boundary, order = math.inf, math.inf
    tg = model.cfg.get("topk_group") or 1
    for layer, raw in routers:
        r, gscore, same = model.ranked(layer, raw)
        if not same:
            return -math.inf, -math.inf
        if gscore is not None:
            g = -np.sort(-gscore, axis=-1)
            boundary = min(boundary, float((g[:, tg - 1] - g[:, tg]).min()))
        s = -np.sort(-r, axis=-1)
        s = np.where(np.isfinite(s), s, -1e30)
        if k < r.shape[1]:
            boundary = min(boundary, float((s[:, k - 1] - s[:, k]).min()))
        if k > 1:
            order = min(order, float((s[:, :k - 1] - s[:, 1:k]).min()))
    return boundary, order


def build_case(model, ids):
    cfg = model.cfg
    logits, routers = model.forward(ids)
    k = cfg["num_experts_per_tok"]
    case = OrderedDict(tokens=list(ids), logits=logits.tolist(), router=[])
    for moe_layer, (layer, r) in enumerate(routers):
        top, weights = model.route(layer, r)
        case["router"].append(OrderedDict(layer=layer, moe_layer=moe_layer, logits=r.tolist(),
                                          topk=top.tolist(), weights=weights.tolist()))
    case["greedy"], greedy_gap, full_routers = model.greedy(ids, NEW_TOKENS)
    boundary, order = router_gaps(model, routers + full_routers, k)
    return case, dict(router_gap=boundary, order_gap=order, greedy_gap=greedy_gap)


def prompts(cfg, seed):
    rng = np.random.default_rng(seed * 7 + 11)
    return [[BOS] + rng.integers(3, cfg["vocab_size"], n - 1).tolist() for n in LENGTHS]


def f32_agreement(cfg, W, cases):
    """The same forward in float32 against the float64 references."""
    m = Model(cfg, W, np.float32)
    rel, router_err, topk_equal, greedy_equal = 0.0, 0.0, True, True
    for c in cases:
        logits, routers = m.forward(c["tokens"])
        ref = np.array(c["logits"])
        rel = max(rel, float((np.abs(logits - ref).max(-1) / np.abs(ref).max(-1)).max()))
        for (layer, r), rc in zip(routers, c["router"]):
            router_err = max(router_err, float(np.abs(r - np.array(rc["logits"])).max()))
            top, _ = m.route(layer, r)
            topk_equal = topk_equal and top.tolist() == rc["topk"]
        greedy_equal = greedy_equal and m.greedy(c["tokens"], NEW_TOKENS)[0] == c["greedy"]
    return OrderedDict(f32_max_rel_err=rel, f32_router_max_abs_err=router_err,
                       f32_topk_equal=topk_equal, f32_greedy_equal=greedy_equal)


def try_seed(cfg, seed):
    """(ref.json document, weights), or (None, reason) when the seed has a near-tie."""
    W = make_weights(cfg, seed)
    model = Model(cfg, W)
    cases, stats = [], []
    for ids in prompts(cfg, seed):
        case, st = build_case(model, ids)
        if st["router_gap"] < MIN_GAP:
            return None, f"router top-k boundary near-tie {st['router_gap']:.3g}"
        if st["order_gap"] < MIN_GAP:
            return None, f"near-tie inside a top-k {st['order_gap']:.3g}"
        if st["greedy_gap"] < MIN_GAP:
            return None, f"greedy near-tie {st['greedy_gap']:.3g}"
        if EOS in case["greedy"]:
            return None, "greedy emits EOS"
        cases.append(case)
        stats.append(st)
    meta = OrderedDict(
        seed=seed, generator="tools/ref/make_family_refs.py",
        reference={"deepseek": REFERENCE_DEEPSEEK, "deepseek_v2": REFERENCE_DEEPSEEK_V2,
                   "deepseek_v3": REFERENCE_DEEPSEEK_V2, "gpt_oss": REFERENCE_GPT_OSS}.get(
                       cfg["model_type"], REFERENCE),
        dtype="float64",
        numpy=np.__version__, python=platform.python_version(),
        moe_layers=[l for l in range(cfg["num_hidden_layers"]) if is_sparse(cfg, l)],
        dense_layers=[l for l in range(cfg["num_hidden_layers"]) if not is_sparse(cfg, l)],
        router_min_gap=min(s["router_gap"] for s in stats),
        router_min_order_gap=min(s["order_gap"] for s in stats),
        greedy_min_gap=min(s["greedy_gap"] for s in stats))
    if cfg.get("clip_qkv") is not None:
        # entries of q (normed), k (normed), v beyond +-clip_qkv over the three prompts' forwards
        counter = Model(cfg, W)
        for c in cases:
            counter.forward(c["tokens"])
        frac = OrderedDict((x, c / t) for x, (c, t) in counter.clip_counts.items())
        if min(frac.values()) == 0:
            return None, f"clip_qkv={cfg['clip_qkv']} clips nothing in some of q, k, v"
        meta["clip_qkv_fraction"] = frac
    if cfg["model_type"] == "gpt_oss":
        # gates above and ups beyond +-limit over the three prompts' forwards
        counter = Model(cfg, W)
        for c in cases:
            counter.forward(c["tokens"])
        frac = OrderedDict((x, c / t) for x, (c, t) in counter.clamp_counts.items())
        if min(frac.values()) == 0:
            return None, "swiglu_limit clamps nothing in some of the gates and ups"
        meta["swiglu_clamp_fraction"] = frac
        # how far the longest case's logits move when the sliding layer attends to everything
        full = OrderedDict(cfg, layer_types=["full_attention"] * cfg["num_hidden_layers"])
        logits = Model(full, W).forward(cases[-1]["tokens"])[0]
        ref = np.array(cases[-1]["logits"])
        meta["sliding_window_effect_max_rel"] = float((np.abs(logits - ref).max(-1) / np.abs(ref).max(-1)).max())
    meta.update(f32_agreement(cfg, W, cases))
    return OrderedDict(config=cfg, meta=meta, cases=cases), W


def make_model(name, cfg, first_seed, out_dir):
    for seed in range(first_seed, first_seed + MAX_ATTEMPTS):
        doc, W = try_seed(cfg, seed)
        if doc is None:
            print(f"  {name} seed {seed}: rejected ({W})")
            continue
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        write_safetensors(os.path.join(folder, "model.safetensors"),
                          mxfp4_tensors(W, cfg) if is_mxfp4(cfg) else W,
                          "BF16" if cfg.get("torch_dtype") == "bfloat16" else "F32")
        with open(os.path.join(folder, "ref.json"), "w") as f:
            f.write(to_json(doc))
        m = doc["meta"]
        clipped = ", ".join(f"{x} {v:.2%}" for x, v in {**m.get("clip_qkv_fraction", {}),
                                                          **m.get("swiglu_clamp_fraction", {})}.items())
        print(f"  {name} seed {seed}: router gap {m['router_min_gap']:.3g} "
              f"(order {m['router_min_order_gap']:.3g}), greedy gap {m['greedy_min_gap']:.3g}, "
              f"f32 rel err {m['f32_max_rel_err']:.2g}" + (f", clipped {clipped}" if clipped else ""))
        return
    raise RuntimeError(f"{name}: no usable seed in {MAX_ATTEMPTS} attempts")


def to_json(o, depth=0):
    """JSON as in make_refs.py: one row per line, floats with 9 significant digits."""
    if isinstance(o, bool):
        return "true" if o else "false"
    if o is None:
        return "null"
    if isinstance(o, int):
        return str(o)
    if isinstance(o, float):
        return format(o, ".9g") if math.isfinite(o) else json.dumps(str(o))
    if isinstance(o, str):
        return json.dumps(o)
    if isinstance(o, (list, tuple)):
        if o and isinstance(o[0], (list, tuple)):
            return "[" + ",\n".join(to_json(x, depth + 1) for x in o) + "]"
        return "[" + ",".join(to_json(x, depth + 1) for x in o) + "]"
    if isinstance(o, dict):
        sep = ",\n" if depth <= 2 else ","
        return "{" + sep.join(json.dumps(str(k)) + ":" + to_json(v, depth + 1)
                              for k, v in o.items()) + "}"
    raise TypeError(type(o))


# ---------------------------------------------------------------- self-check


def assert_close(got, want, what, rtol=1e-8, atol=1e-12):
    """Recomputed float64 values against the 9-digit text of ref.json."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want) - (rtol * np.abs(want) + atol)
    assert (err <= 0).all(), f"{what}: max |diff| {np.abs(got - want).max():.3g}"


def check_model(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f, object_pairs_hook=OrderedDict)
    with open(os.path.join(folder, "ref.json")) as f:
        text = f.read()
    ref = json.loads(text, object_pairs_hook=OrderedDict)
    assert ref["config"] == cfg, "ref.json config differs from config.json"
    W, meta = read_safetensors(os.path.join(folder, "model.safetensors"))
    assert meta == {"format": "pt"}, f"metadata {meta}"
    if is_mxfp4(cfg):
        W = unpack_mxfp4(W)
    want = expected_tensors(cfg)
    assert set(W) == set(want), f"tensor set: missing {set(want) - set(W)}, extra {set(W) - set(want)}"
    for name, shape in want.items():
        assert W[name].shape == shape, f"{name}: shape {W[name].shape} != {shape}"
    seed = ref["meta"]["seed"]
    regen = make_weights(cfg, seed)
    assert all(np.array_equal(W[n], regen[n]) for n in W), "weights differ from the seed's"

    model = Model(cfg, W)
    k = cfg["num_experts_per_tok"]
    moe_layers = [l for l in range(cfg["num_hidden_layers"]) if is_sparse(cfg, l)]
    assert [len(c["tokens"]) for c in ref["cases"]] == list(LENGTHS)
    for c in ref["cases"]:
        n = len(c["tokens"])
        assert c["tokens"][0] == BOS
        logits, routers = model.forward(c["tokens"])
        assert_close(logits, c["logits"], f"logits (T={n})")
        assert [r["layer"] for r in c["router"]] == moe_layers, "router layers"
        assert [r["moe_layer"] for r in c["router"]] == list(range(len(moe_layers))), "moe_layer"
        for (layer, r), rc in zip(routers, c["router"]):
            top, weights = model.route(layer, r)
            assert_close(r, rc["logits"], f"router logits layer {layer} (T={n})")
            assert top.tolist() == rc["topk"], f"top-k layer {layer} (T={n})"
            assert_close(weights, rc["weights"], f"router weights layer {layer} (T={n})")
            if (cfg.get("norm_topk_prob") or cfg["model_type"] == "gpt_oss") and k > 1:
                scale = cfg.get("routed_scaling_factor", 1.0) if cfg["model_type"] in DEEPSEEK_MLA else 1.0
                assert_close(np.sum(rc["weights"], -1), np.full(n, scale), "weights sum", rtol=1e-7)
        assert model.greedy(c["tokens"], NEW_TOKENS)[0] == c["greedy"], f"greedy (T={n})"
    identical = to_json(ref) == text
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in
             ("config.json", "model.safetensors", "ref.json")}
    print(f"  {os.path.basename(folder)}: OK ({cfg['model_type']}, seed {seed}, {len(W)} tensors, "
          f"MoE layers {moe_layers}, {len(ref['cases'])} cases; ref.json re-serialises "
          f"{'byte-identically' if identical else 'with differences'}; sizes {sizes})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/ref")
    ap.add_argument("--only", nargs="*", choices=list(SPECS), help="subset of the models")
    ap.add_argument("--check", action="store_true", help="only verify the written folders")
    a = ap.parse_args()
    names = [n for n in SPECS if not a.only or n in a.only]
    if not a.check:
        print("writing:")
        for name in names:
            cfg, seed = SPECS[name]
            make_model(name, cfg, seed, a.out)
    print("checking:")
    status = 0
    for name in names:
        try:
            check_model(os.path.join(a.out, name))
        except (AssertionError, OSError, KeyError, ValueError) as e:
            print(f"  {name}: FAILED: {type(e).__name__}: {e}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
