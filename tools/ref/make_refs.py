#!/usr/bin/env python3
"""Builds small random Mixtral checkpoints (HF Hub naming, f32 safetensors) and reference outputs
computed by HuggingFace transformers, for the C++ engine's parity tests.

    python3 tools/ref/make_refs.py --out tests/data/ref            # needs torch + transformers
    python3 tools/ref/make_refs.py --out /tmp/x --no-hf            # logic check with our own forward

For every shape in SPECS it writes <out>/<name>/{config.json, model.safetensors, ref.json}.
The safetensors file is written by this script in the Hub naming (block_sparse_moe.experts.E.w1 ...),
then loaded back with MixtralForCausalLM.from_pretrained and every parameter is compared bit-exactly
with what was written. References come from that reloaded model (eval, float32, CPU).
A seed is rejected (and the next one tried) when a router top-k or a greedy argmax is a near-tie.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import struct
import sys
import tarfile
import tempfile
import traceback
from collections import OrderedDict

import torch
import torch.nn.functional as F

MIN_GAP = 1e-3  # smallest accepted logit gap at a top-k boundary or a greedy argmax
NEW_TOKENS = 8
LENGTHS = (1, 6, 19)
BOS, EOS = 1, 2

# head_dim None: not written to config.json (engine must derive hidden/heads, as for real Mixtral).
SPECS = OrderedDict(
    gqa=dict(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2, head_dim=None, experts=4, top_k=2,
             width=96, tied=False, rope_theta=10000.0, eps=1e-5, seed=1000),
    tied=dict(vocab=300, hidden=48, layers=3, heads=4, kv_heads=4, head_dim=None, experts=8, top_k=2,
              width=64, tied=True, rope_theta=1e6, eps=1e-5, seed=2000),
    headdim=dict(vocab=256, hidden=64, layers=2, heads=4, kv_heads=1, head_dim=32, experts=4, top_k=3,
                 width=48, tied=False, rope_theta=10000.0, eps=1e-6, seed=3000),
)

LOG = []


def log(*parts):
    line = " ".join(str(p) for p in parts)
    LOG.append(line)
    print(line, flush=True)


def head_dim(s):
    return s["head_dim"] or s["hidden"] // s["heads"]


def hf_config(s):
    c = OrderedDict(
        architectures=["MixtralForCausalLM"], model_type="mixtral", vocab_size=s["vocab"],
        hidden_size=s["hidden"], intermediate_size=s["width"], num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"])
    if s["head_dim"]:
        c["head_dim"] = s["head_dim"]
    c.update(hidden_act="silu", max_position_embeddings=4096, initializer_range=0.02,
             rms_norm_eps=s["eps"], use_cache=True, bos_token_id=BOS, eos_token_id=EOS,
             tie_word_embeddings=s["tied"], rope_theta=s["rope_theta"], sliding_window=None,
             attention_dropout=0.0, num_experts_per_tok=s["top_k"], num_local_experts=s["experts"],
             output_router_logits=False, router_aux_loss_coef=0.02, router_jitter_noise=0.0,
             torch_dtype="float32")
    return c


def make_weights(s, seed):
    """Hub-named f32 tensors; larger std than HF's init so choices and logits are well separated."""
    g = torch.Generator().manual_seed(seed)

    def n(shape, std):
        return torch.randn(shape, generator=g, dtype=torch.float32) * std

    H, I, E, V, hd = s["hidden"], s["width"], s["experts"], s["vocab"], head_dim(s)
    W = OrderedDict()
    W["model.embed_tokens.weight"] = n((V, H), 0.5)
    for l in range(s["layers"]):
        p = f"model.layers.{l}."
        W[p + "input_layernorm.weight"] = 1.0 + n((H,), 0.1)
        W[p + "self_attn.q_proj.weight"] = n((s["heads"] * hd, H), 0.15)
        W[p + "self_attn.k_proj.weight"] = n((s["kv_heads"] * hd, H), 0.15)
        W[p + "self_attn.v_proj.weight"] = n((s["kv_heads"] * hd, H), 0.15)
        W[p + "self_attn.o_proj.weight"] = n((H, s["heads"] * hd), 0.15)
        W[p + "post_attention_layernorm.weight"] = 1.0 + n((H,), 0.1)
        W[p + "block_sparse_moe.gate.weight"] = n((E, H), 0.3)
        for e in range(E):
            q = f"{p}block_sparse_moe.experts.{e}."
            W[q + "w1.weight"] = n((I, H), 0.15)
            W[q + "w2.weight"] = n((H, I), 0.15)
            W[q + "w3.weight"] = n((I, H), 0.15)
    W["model.norm.weight"] = 1.0 + n((H,), 0.1)
    if not s["tied"]:
        W["lm_head.weight"] = n((V, H), 0.15)
    return W


def write_safetensors(path, tensors):
    """Plain safetensors writer: tensors stored in the given order, offsets contiguous."""
    header, blobs, off = OrderedDict(), [], 0
    header["__metadata__"] = {"format": "pt"}
    for name, t in tensors.items():
        b = t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- our own forward (cross-check)


def own_forward(W, s, ids, dtype):
    """Straightforward Mixtral forward from the Hub tensors; returns logits [T,V], raw router [T,E]."""
    H, E, k, hd = s["hidden"], s["experts"], s["top_k"], head_dim(s)
    nh, nkv = s["heads"], s["kv_heads"]
    w = {name: t.to(dtype) for name, t in W.items()}
    T = len(ids)

    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + s["eps"]))

    inv = 1.0 / (s["rope_theta"] ** (torch.arange(0, hd, 2, dtype=dtype) / hd))
    ang = torch.arange(T, dtype=dtype)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)

    def rope(x):  # x [T, heads, hd], rotate-half layout
        rot = torch.cat([-x[..., hd // 2:], x[..., : hd // 2]], -1)
        return x * cos[:, None, :] + rot * sin[:, None, :]

    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    mask = torch.full((T, T), float("-inf"), dtype=dtype).triu(1)
    routers = []
    for l in range(s["layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd))
        kk = rope((h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd)
        rep = nh // nkv
        kk, v = kk.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        sc = torch.einsum("thd,shd->hts", q, kk) / math.sqrt(hd) + mask
        o = torch.einsum("hts,shd->thd", sc.softmax(-1), v).reshape(T, nh * hd)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        r = h @ w[p + "block_sparse_moe.gate.weight"].T
        routers.append(r)
        top_w, top_i = r.softmax(-1).topk(k, -1)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        y = torch.zeros_like(x)
        for t in range(T):
            for j in range(k):
                q2 = f"{p}block_sparse_moe.experts.{int(top_i[t, j])}."
                a = F.silu(w[q2 + "w1.weight"] @ h[t]) * (w[q2 + "w3.weight"] @ h[t])
                y[t] += top_w[t, j] * (w[q2 + "w2.weight"] @ a)
        x = x + y
    x = rms(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if s["tied"] else w["lm_head.weight"]
    return x @ head.T, routers


class OwnModel:
    """Stand-in for transformers in --no-hf mode (tests this script's logic without transformers)."""

    def __init__(self, W, s):
        self.W, self.s = W, s

    def forward(self, ids):
        return own_forward(self.W, self.s, ids, torch.float32)

    def generate(self, ids, n):
        return None


# ---------------------------------------------------------------- transformers side


class HFModel:
    def __init__(self, folder, s, facts, mfacts=None, device="cpu"):
        import transformers
        from transformers import MixtralForCausalLM

        self.s, self.facts, self.device = s, facts, device
        self.mfacts = facts if mfacts is None else mfacts
        kw = dict(attn_implementation="eager", output_loading_info=True)
        tries = [dict(dtype=torch.float32, experts_implementation="eager"), dict(dtype=torch.float32),
                 dict(torch_dtype=torch.float32)]
        for i, extra in enumerate(tries):
            try:
                model, info = MixtralForCausalLM.from_pretrained(folder, **extra, **kw)
                break
            except Exception as e:  # another signature: fall back to a plainer call
                log(f"  from_pretrained({list(extra)}) failed:", repr(e)[:300])
                if i == len(tries) - 1:
                    raise
        facts.setdefault("from_pretrained_kwargs", list(extra))
        self.model = model.eval().to(device)
        self.loading_info = {k: sorted(map(str, v)) for k, v in dict(info).items()}
        facts.setdefault("transformers", transformers.__version__)
        self.gates = []
        for layer in self.model.model.layers:
            moe = getattr(layer, "mlp", None)
            if moe is None or not hasattr(moe, "gate"):
                moe = layer.block_sparse_moe
            self.gates.append(moe.gate)
        self.captured = [[] for _ in self.gates]
        for l, gate in enumerate(self.gates):
            self._hook(l, gate)

    def _hook(self, l, gate):
        def hook(mod, args, kwargs, out):
            x = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values())))
            self.captured[l].append((x.detach(), out))

        try:
            gate.register_forward_hook(hook, with_kwargs=True)
        except TypeError:  # torch < 2.0
            gate.register_forward_hook(lambda mod, args, out: hook(mod, args, {}, out))

    @torch.no_grad()
    def forward(self, ids, record=False):
        for c in self.captured:
            c.clear()
        t = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=t, output_router_logits=True, use_cache=False)
        logits = out.logits[0].float().cpu()
        routers = []
        for l, gate in enumerate(self.gates):
            assert len(self.captured[l]) == 1, f"router {l} called {len(self.captured[l])} times"
            x, gout = self.captured[l][0]
            raw = F.linear(x.reshape(-1, x.shape[-1]).float(), gate.weight.float()).cpu()
            routers.append(raw)
            if record:
                self._record_router_facts(l, raw, gout, out)
        return logits, routers

    def _record_router_facts(self, l, raw, gout, out):
        f = self.mfacts.setdefault("router", {})
        sm = raw.softmax(-1)

        def cmp(t):
            t = t.detach().float().cpu().reshape(raw.shape)
            return {"vs_raw": float((t - raw).abs().max()), "vs_softmax": float((t - sm).abs().max())}

        if isinstance(gout, (tuple, list)):
            f.setdefault("gate_module_output", [f"{type(o).__name__}{tuple(o.shape)}" for o in gout])
            f[f"gate_output0_layer{l}"] = cmp(gout[0])
            if len(gout) == 3:
                k = self.s["top_k"]
                w, i = sm.topk(k, -1)
                w = w / w.sum(-1, keepdim=True)
                f[f"gate_output_topk_equal_layer{l}"] = bool(torch.equal(gout[2].cpu().reshape(i.shape), i))
                f[f"gate_output_weights_maxdiff_layer{l}"] = float(
                    (gout[1].float().cpu().reshape(w.shape) - w).abs().max())
        else:
            f.setdefault("gate_module_output", f"{type(gout).__name__}{tuple(gout.shape)}")
            f[f"gate_output_layer{l}"] = cmp(gout)
        rl = getattr(out, "router_logits", None)
        if rl is not None:
            f.setdefault("output_router_logits", f"{type(rl).__name__} of {len(rl)}: "
                         f"{[tuple(r.shape) for r in rl]}")
            f[f"output_router_logits_layer{l}"] = cmp(rl[l])

    @torch.no_grad()
    def generate(self, ids, n):
        m = self.model
        m.generation_config.eos_token_id = None  # never stop early; the engine test wants n tokens
        m.generation_config.pad_token_id = 0
        t = torch.tensor([ids], device=self.device)
        try:
            out = m.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=n,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
        except Exception as e:
            self.facts.setdefault("generate_errors", []).append(repr(e)[:300])
            return None
        return out[0, len(ids):].tolist()


def expected_param(key, W, s):
    """What a transformers parameter should hold given the Hub tensors W; also the Hub names used."""
    if key in W:
        return W[key], [key]
    if key == "lm_head.weight" and s["tied"]:
        return W["model.embed_tokens.weight"], []
    m = re.match(r"model\.layers\.(\d+)\.(mlp|block_sparse_moe)\.gate\.weight$", key)
    if m:
        n = f"model.layers.{m.group(1)}.block_sparse_moe.gate.weight"
        return W[n], [n]
    m = re.match(r"model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)$", key)
    if m:
        p = f"model.layers.{m.group(1)}.block_sparse_moe.experts."
        E = s["experts"]
        if m.group(2) == "gate_up_proj":
            names = [f"{p}{e}.w{j}.weight" for e in range(E) for j in (1, 3)]
            t = torch.stack([torch.cat([W[f"{p}{e}.w1.weight"], W[f"{p}{e}.w3.weight"]], 0)
                             for e in range(E)])
        else:
            names = [f"{p}{e}.w2.weight" for e in range(E)]
            t = torch.stack([W[n] for n in names])
        return t, names
    return None, []


def verify_params(hf, W, s, facts):
    """Every transformers parameter equals what we wrote (bit-exact); every Hub tensor was used."""
    ok, used, notes = True, set(), []
    m = hf.model
    buffers = {k for k, _ in m.named_buffers()}
    for key, p in m.state_dict().items():
        if key in buffers:
            continue
        exp, names = expected_param(key, W, s)
        p = p.detach().cpu()
        if exp is None:
            notes.append(f"unexpected parameter {key} {tuple(p.shape)}")
            ok = False
            continue
        used.update(names)
        if p.shape == exp.shape and torch.equal(p, exp):
            continue
        if p.dim() >= 2 and p.transpose(-1, -2).shape == exp.shape and torch.equal(
                p.transpose(-1, -2), exp):
            notes.append(f"{key} stored transposed {tuple(p.shape)}")
            continue
        notes.append(f"MISMATCH {key} model {tuple(p.shape)} expected {tuple(exp.shape)}")
        ok = False
    missing = [n for n in W if n not in used]
    if missing:
        ok = False
        notes.append(f"hub tensors not found in the model: {missing[:6]}")
    if s["tied"]:
        same = m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
        notes.append(f"lm_head shares storage with embed_tokens: {same}")
        ok = ok and same
    if m.dtype != torch.float32:
        notes.append(f"model dtype {m.dtype}")
        ok = False
    for k, v in hf.loading_info.items():
        if v:
            notes.append(f"loading_info {k}: {v[:6]}")
            ok = False
    rot = getattr(m.model, "rotary_emb", None)
    if rot is not None and hasattr(rot, "inv_freq"):
        hd = head_dim(s)
        want = 1.0 / (s["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        d = float((rot.inv_freq.float().cpu() - want).abs().max() / want.abs().max())
        notes.append(f"rotary inv_freq rel diff vs theta={s['rope_theta']}: {d:.3g}")
        ok = ok and d < 1e-6 and rot.inv_freq.numel() == hd // 2
    keys = [k for k in m.state_dict() if k.startswith("model.layers.0.")]
    facts.setdefault("param_names_layer0", [f"{k} {tuple(m.state_dict()[k].shape)}" for k in keys])
    return ok, notes


# ---------------------------------------------------------------- references


def topk_of(raw, k):
    """HF semantics: softmax over all experts, top-k of the probabilities, renormalise the k."""
    p = raw.float().softmax(-1)
    w, i = p.topk(k, -1)
    return i, w / w.sum(-1, keepdim=True)


def min_router_gap(routers, k, E):
    if k >= E:
        return float("inf")
    g = float("inf")
    for r in routers:
        srt = r.sort(-1, descending=True).values
        g = min(g, float((srt[:, k - 1] - srt[:, k]).min()))
    return g


def greedy_manual(model, ids, n):
    seq, gaps = list(ids), []
    for _ in range(n):
        logits, _ = model.forward(seq)
        top = logits[-1].topk(2)
        gaps.append(float(top.values[0] - top.values[1]))
        seq.append(int(logits[-1].argmax()))
    return seq[len(ids):], min(gaps)


def build_case(model, s, ids, facts, record):
    logits, routers = model.forward(ids, record=record) if isinstance(model, HFModel) else \
        model.forward(ids)
    k = s["top_k"]
    case = OrderedDict(tokens=list(ids), logits=logits.tolist(), router=[])
    for l, r in enumerate(routers):
        i, w = topk_of(r, k)
        case["router"].append(OrderedDict(layer=l, logits=r.tolist(), topk=i.tolist(),
                                          weights=w.tolist()))
    greedy, ggap = greedy_manual(model, ids, NEW_TOKENS)
    gen = model.generate(ids, NEW_TOKENS)
    case["greedy"] = greedy
    full = list(ids) + greedy[:-1]  # every position the greedy run routed
    _, full_routers = model.forward(full)
    rgap = min(min_router_gap(routers, k, s["experts"]),
               min_router_gap(full_routers, k, s["experts"]))
    return case, logits, routers, dict(router_gap=rgap, greedy_gap=ggap, generate=gen)


def make_model(name, s, out_dir, use_hf, facts):
    folder = os.path.join(out_dir, name)
    for attempt in range(40):
        seed = s["seed"] + attempt
        W = make_weights(s, seed)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder)
        cfg = hf_config(s)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        write_safetensors(os.path.join(folder, "model.safetensors"), W)
        check_file(folder, W)
        model_facts = facts.setdefault("models", {}).setdefault(name, {})
        if use_hf:
            model = HFModel(folder, s, facts, model_facts)
            ok, notes = verify_params(model, W, s, facts)
            model_facts["verify"] = notes
            log(f"  {name} seed {seed}: parameters verified: {ok}; " + "; ".join(notes))
            if not ok:
                model_facts["VERIFY_FAILED"] = True
        else:
            model = OwnModel(W, s)
        g = torch.Generator().manual_seed(seed * 7 + 11)
        cases, bad, stats = [], None, []
        for n in LENGTHS:
            ids = [BOS] + torch.randint(3, s["vocab"], (n - 1,), generator=g).tolist()
            case, logits, routers, st = build_case(model, s, ids, facts, record=(n == LENGTHS[-1]))
            stats.append(st)
            if st["router_gap"] < MIN_GAP:
                bad = f"router near-tie {st['router_gap']:.3g}"
            elif st["greedy_gap"] < MIN_GAP:
                bad = f"greedy near-tie {st['greedy_gap']:.3g}"
            elif EOS in case["greedy"]:
                bad = "greedy emits eos"
            elif st["generate"] is not None and st["generate"] != case["greedy"]:
                bad = f"generate {st['generate']} != manual argmax {case['greedy']}"
                model_facts.setdefault("generate_mismatch", []).append(bad)
            if bad:
                break
            # Independent check: our own float64 forward from the Hub tensors.
            ref64, r64 = own_forward(W, s, ids, torch.float64)
            st["f64_rel_err"] = float(((logits.double() - ref64).abs().max(-1).values /
                                       ref64.abs().max(-1).values).max())
            st["f64_router_abs_err"] = max(float((a.double() - b).abs().max())
                                           for a, b in zip(routers, r64))
            st["f64_topk_equal"] = all(torch.equal(topk_of(a, s["top_k"])[0], topk_of(b, s["top_k"])[0])
                                       for a, b in zip(routers, r64))
            cases.append(case)
        if bad:
            log(f"  {name} seed {seed}: rejected ({bad})")
            continue
        summary = dict(seed=seed,
                       router_min_gap=min(x["router_gap"] for x in stats),
                       greedy_min_gap=min(x["greedy_gap"] for x in stats),
                       f64_max_rel_err=max(x["f64_rel_err"] for x in stats),
                       f64_router_max_abs_err=max(x["f64_router_abs_err"] for x in stats),
                       f64_topk_equal=all(x["f64_topk_equal"] for x in stats),
                       generate_equals_argmax=all(x["generate"] is None or x["generate"] == c["greedy"]
                                                  for x, c in zip(stats, cases)))
        if use_hf and torch.cuda.is_available():
            summary.update(gpu_crosscheck(model, s, cases))
        model_facts["summary"] = summary
        log(f"  {name}: " + json.dumps(summary))
        meta = OrderedDict(seed=seed, generator="tools/ref/make_refs.py", device="cpu",
                           dtype="float32", **{k: v for k, v in facts.get("versions", {}).items()})
        meta.update({k: v for k, v in summary.items() if k != "seed"})
        doc = OrderedDict(config=cfg, meta=meta, cases=cases)
        with open(os.path.join(folder, "ref.json"), "w") as f:
            f.write(to_json(doc))
        return
    raise RuntimeError(f"{name}: no seed without near-ties")


def gpu_crosscheck(model, s, cases):
    """Same model on the GPU, TF32 off: how far are its logits from the CPU references?"""
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        model.model.to("cuda")
        model.device = "cuda"
        rel, same = 0.0, True
        for c in cases:
            logits, routers = model.forward(c["tokens"])
            ref = torch.tensor(c["logits"])
            rel = max(rel, float(((logits - ref).abs().max(-1).values / ref.abs().max(-1).values).max()))
            for r, rc in zip(routers, c["router"]):
                same = same and topk_of(r, s["top_k"])[0].tolist() == rc["topk"]
        model.model.to("cpu")
        model.device = "cpu"
        return dict(gpu_max_rel_diff=rel, gpu_topk_equal=same)
    except Exception as e:
        model.model.to("cpu")
        model.device = "cpu"
        return dict(gpu_error=repr(e)[:300])


def check_file(folder, W):
    """Read the file back with the official safetensors package where it exists."""
    try:
        from safetensors import safe_open
    except ImportError:
        return
    with safe_open(os.path.join(folder, "model.safetensors"), framework="pt") as f:
        assert list(f.keys()) and set(f.keys()) == set(W), "safetensors key set differs"
        for k in f.keys():
            assert torch.equal(f.get_tensor(k), W[k]), f"safetensors round trip differs at {k}"


def to_json(o, depth=0):
    """JSON with floats as float32 values printed to 9 significant digits (round-trips f32)."""
    if isinstance(o, bool):
        return "true" if o else "false"
    if o is None:
        return "null"
    if isinstance(o, int):
        return str(o)
    if isinstance(o, float):
        if not math.isfinite(o):
            return json.dumps(str(o))
        return format(o, ".9g")  # tensor values are f32 already: 9 digits round-trip them
    if isinstance(o, str):
        return json.dumps(o)
    if isinstance(o, (list, tuple)):
        if o and isinstance(o[0], (list, tuple)):
            return "[" + ",\n".join(to_json(x, depth + 1) for x in o) + "]"
        return "[" + ",".join(to_json(x, depth + 1) for x in o) + "]"
    if isinstance(o, dict):
        sep = ",\n" if depth <= 2 else ","
        return "{" + sep.join(json.dumps(str(k)) + ":" + to_json(v, depth + 1) for k, v in o.items()) + "}"
    raise TypeError(type(o))


# ---------------------------------------------------------------- facts about transformers


def general_facts(facts, use_hf):
    v = OrderedDict(torch=torch.__version__, python=platform.python_version())
    if use_hf:
        import transformers
        v["transformers"] = transformers.__version__
        try:
            import safetensors
            v["safetensors"] = safetensors.__version__
        except ImportError:
            pass
    if torch.cuda.is_available():
        v["gpu"] = torch.cuda.get_device_name(0)
    facts["versions"] = v
    # torch.topk's order among exactly equal values (undocumented): record what it does.
    x = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    facts["topk_tie_cpu"] = x.topk(2, -1).indices.tolist()
    if torch.cuda.is_available():
        facts["topk_tie_cuda"] = x.cuda().topk(2, -1).indices.cpu().tolist()


def module_facts(out_dir, facts):
    """Module tree, default implementations and what save_pretrained writes."""
    from transformers import MixtralForCausalLM
    folder = os.path.join(out_dir, "gqa")
    hf = HFModel(folder, SPECS["gqa"], facts)
    m = hf.model
    facts["layer0_repr"] = repr(m.model.layers[0]).splitlines()
    cfg = m.config
    facts["config_attrs"] = {k: str(getattr(cfg, k, None)) for k in (
        "rope_theta", "rope_parameters", "rope_scaling", "head_dim", "_experts_implementation",
        "_attn_implementation", "tie_word_embeddings", "sliding_window")}
    default = MixtralForCausalLM.from_pretrained(folder, dtype=torch.float32)
    facts["default_impls"] = {k: str(getattr(default.config, k, None)) for k in (
        "_experts_implementation", "_attn_implementation")}
    with tempfile.TemporaryDirectory() as tmp:
        m.save_pretrained(tmp)
        from safetensors import safe_open
        files = sorted(f for f in os.listdir(tmp) if f.endswith(".safetensors"))
        keys = []
        for fn in files:
            with safe_open(os.path.join(tmp, fn), framework="pt") as f:
                keys += [f"{k} {tuple(f.get_slice(k).get_shape())}" for k in f.keys()
                         if ".layers.0." in k]
        facts["save_pretrained_layer0_keys"] = sorted(keys)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="tests/data/ref")
    ap.add_argument("--no-hf", action="store_true", help="use our own forward instead of transformers")
    ap.add_argument("--only", nargs="*", help="subset of " + ",".join(SPECS))
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    facts, status = OrderedDict(), 0
    general_facts(facts, not a.no_hf)
    log("versions:", json.dumps(facts["versions"]))
    os.makedirs(a.out, exist_ok=True)
    for name, s in SPECS.items():
        if a.only and name not in a.only:
            continue
        try:
            with torch.no_grad():
                make_model(name, s, a.out, not a.no_hf, facts)
        except Exception:
            status = 1
            log(f"{name} FAILED:\n" + traceback.format_exc())
    if not a.no_hf:
        try:
            module_facts(a.out, facts)
        except Exception:
            log("module facts failed:\n" + traceback.format_exc())
    with open(os.path.join(a.out, "facts.json"), "w") as f:
        json.dump(facts, f, indent=1)
    dest = os.environ.get("OUT")
    if dest:  # device run: ship everything back as one archive
        with tarfile.open(os.path.join(dest, "ref.tar.gz"), "w:gz") as t:
            t.add(a.out, arcname="ref")
        with open(os.path.join(dest, "log.txt"), "w") as f:
            f.write("\n".join(LOG) + "\n")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(a.out) for f in fs)
    log(f"total size of {a.out}: {total / 1e6:.2f} MB; status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
