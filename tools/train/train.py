#!/usr/bin/env python3
"""Trains the bundled Mixtral-architecture model on one GPU and writes the bundle and reference numbers.

    PYTHONUNBUFFERED=1 python3 tools/train/train.py --data DIR --out DIR [--train-seconds 440]

DIR (--data) holds train.u16 / heldout.u16 (pretokenize.py), tokenizer.model and ref_input.json
(make_ref_input.py). Everything lands in --out, at most 8 files of < 16 MiB each (the device tool's
limits), so the bf16 safetensors comes back in parts (model.safetensors.part-aa, -ab, ...):
  config.json, model.safetensors.part-*, bundle_ref.json, results.json, train_log.txt
The safetensors uses the Hub's Mixtral tensor names (model.layers.N.block_sparse_moe.gate.weight,
...experts.E.w1/w2/w3.weight) whatever layout this transformers version keeps in memory, and is checked
to load back with identical logits. The script stops training at --train-seconds (wall clock) and
saves what it has, so a time limit never loses the run.
"""
import argparse
import copy
import hashlib
import json
import math
import os
import subprocess
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F

T0 = time.time()
LOG = []


def log(msg):
    line = f"[{time.time() - T0:7.1f}s] {msg}"
    print(line, flush=True)
    LOG.append(line)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-seconds", type=float, default=480.0)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--aux-coef", type=float, default=0.02)
    p.add_argument("--max-epochs", type=float, default=8.0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--expert-width", type=int, default=384)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--experts", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--max-pos", type=int, default=1024)
    p.add_argument("--post-only", default=None, help="bundle dir: skip training, redo references and stats")
    return p.parse_args()


def make_config(a):
    from transformers import MixtralConfig
    common = dict(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.expert_width,
                  num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                  head_dim=a.hidden // a.heads, max_position_embeddings=a.max_pos, rms_norm_eps=1e-5,
                  num_local_experts=a.experts, num_experts_per_tok=2, router_aux_loss_coef=a.aux_coef,
                  output_router_logits=False, router_jitter_noise=0.0, tie_word_embeddings=False,
                  bos_token_id=1, eos_token_id=2, pad_token_id=None, sliding_window=None,
                  attention_dropout=0.0, initializer_range=0.02, hidden_act="silu")
    try:
        cfg = MixtralConfig(**common, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    except TypeError:
        cfg = MixtralConfig(**common, rope_theta=10000.0)
    return cfg


def moe_blocks(model):
    """The sparse-MoE module of each decoder layer (named block_sparse_moe in v4, mlp in v5)."""
    out = []
    for layer in model.model.layers:
        m = getattr(layer, "block_sparse_moe", None)
        if m is None:
            m = getattr(layer, "mlp", None)
        assert m is not None and hasattr(m, "gate"), "no MoE block with a gate found in a decoder layer"
        out.append(m)
    return out


def gate_weight(moe):
    g = moe.gate
    return g.weight


class RouterTap:
    """Captures the input of each layer's router (the gate module itself, not the MoE block: what the block
    does before routing is then irrelevant), so router logits are computed here the same way whatever the
    transformers version (load-balancing loss cross-check, reference numbers, statistics).
    block=True taps the MoE block's input instead (used once, as a diagnostic)."""

    def __init__(self, model, block=False):
        self.blocks = moe_blocks(model)
        self.inputs = [None] * len(self.blocks)
        mods = self.blocks if block else [b.gate for b in self.blocks]
        self.handles = [m.register_forward_pre_hook(self._hook(i), with_kwargs=True)
                        for i, m in enumerate(mods)]

    def _hook(self, i):
        def fn(module, args, kwargs):
            self.inputs[i] = args[0] if args else kwargs["hidden_states"]
        return fn

    def logits(self, dtype=None):
        out = []
        for x, b in zip(self.inputs, self.blocks):
            w = gate_weight(b)
            x = x.reshape(-1, x.shape[-1])
            if dtype is not None:
                x, w = x.to(dtype), w.to(dtype)
            out.append(F.linear(x, w))
        return out

    def remove(self):
        for h_ in self.handles:
            h_.remove()


def load_balance_loss(router_logits, n_experts, top_k=2):
    """Switch/Mixtral auxiliary loss over all layers' tokens: E * sum_e f_e * P_e, summed over the k slots
    (equals k at perfect balance)."""
    logits = torch.cat([r.float() for r in router_logits], 0)
    probs = logits.softmax(-1)
    _, sel = probs.topk(top_k, -1)
    mask = F.one_hot(sel, n_experts).float()  # [T, k, E]
    tokens_per_expert = mask.mean(0)  # [k, E]
    prob_per_expert = probs.mean(0)  # [E]
    return (tokens_per_expert * prob_per_expert.unsqueeze(0)).sum() * n_experts


def batches(data, seq, batch, gen, device):
    n = data.numel() - seq - 1
    while True:
        off = torch.randint(0, n, (batch,), generator=gen)
        idx = off.unsqueeze(1) + torch.arange(seq + 1).unsqueeze(0)
        chunk = data[idx].to(device, non_blocking=True)
        yield chunk[:, :-1], chunk[:, 1:]


@torch.no_grad()
def evaluate(model, val, seq, device, max_windows=None, dtype=torch.bfloat16):
    model.eval()
    nw = (val.numel() - 1) // seq
    if max_windows:
        nw = min(nw, max_windows)
    tot, cnt = 0.0, 0
    tap = RouterTap(model)
    usage = None
    for s in range(0, nw, 64):
        e = min(nw, s + 64)
        idx = torch.arange(s * seq, e * seq + 1)
        chunk = val[idx].to(device)
        x = chunk[:-1].view(e - s, seq)
        y = chunk[1:].view(e - s, seq)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
        tot += loss.item()
        cnt += y.numel()
        u = torch.stack([torch.bincount(r.float().topk(2, -1).indices.reshape(-1), minlength=r.shape[-1])
                         for r in tap.logits()]).cpu()
        usage = u if usage is None else usage + u
    tap.remove()
    u = usage.double()
    log("  usage max/mean " + " ".join(f"{v:.2f}" for v in (u.max(1).values / u.mean(1)).tolist()) +
        ", min/mean " + " ".join(f"{v:.2f}" for v in (u.min(1).values / u.mean(1)).tolist()))
    model.train()
    return tot / cnt


def lr_at(step, a, total):
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    t = min(1.0, (step - a.warmup) / max(1, total - a.warmup))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def train(a, device):
    from transformers import MixtralForCausalLM
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    train_ids = torch.from_numpy(np.fromfile(os.path.join(a.data, "train.u16"), dtype="<u2").astype(np.int64))
    val_ids = torch.from_numpy(np.fromfile(os.path.join(a.data, "heldout.u16"), dtype="<u2").astype(np.int64))
    log(f"train tokens {train_ids.numel()}, held-out tokens {val_ids.numel()}")
    cfg = make_config(a)
    model = MixtralForCausalLM(cfg).to(device)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"parameters {nparams} ({nparams * 2 / 1e6:.2f} MB in bf16)")
    log("state dict: " + ", ".join(f"{k}{list(v.shape)}" for k, v in list(model.state_dict().items())[:14]))
    tap = RouterTap(model)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95),
                            eps=1e-8, fused=True)
    gen = torch.Generator().manual_seed(a.seed)
    it = batches(train_ids, a.seq, a.batch, gen, device)
    tokens_per_step = a.seq * a.batch
    max_steps = int(a.max_epochs * train_ids.numel() / tokens_per_step)
    total = max_steps
    best = (float("inf"), None, 0)
    history = []
    t_start = time.time()
    step, t_probe, eval_time = 0, None, 0.0
    model.train()
    while step < total:
        if time.time() - t_start > a.train_seconds:
            log(f"wall-clock budget reached at step {step}")
            break
        lr = lr_at(step, a, total)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next(it)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(input_ids=x, use_cache=False)
            # Per layer, summed: transformers' Mixtral loss concatenates all layers' tokens before counting,
            # which a model satisfies by giving each layer a different favourite expert (seen in run 2:
            # aux 2.00 with one expert taking ~90% of a layer's top-2 slots).
            per_layer = [load_balance_loss([r], a.experts) for r in tap.logits()]
            aux = torch.stack(per_layer).sum()
            my_aux = torch.stack(per_layer).max()
        logits = out.logits
        lm = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        hf_aux = None
        loss = lm + a.aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step == 20:
            torch.cuda.synchronize()
            t_probe = time.time()
        if step == 120:
            # Fit the cosine schedule to the time left: measured step time, eval overhead, 3% margin.
            torch.cuda.synchronize()
            dt = (time.time() - t_probe) / 100
            left = a.train_seconds - (time.time() - t_start)
            evals = left / dt / a.eval_every
            total = min(max_steps, step + int(0.97 * (left - evals * 1.5) / dt))
            log(f"step time {dt * 1e3:.1f} ms, {tokens_per_step / dt / 1e3:.0f}k tok/s -> {total} steps "
                f"({total * tokens_per_step / train_ids.numel():.2f} epochs)")
        if step % 50 == 0 or step == 1:
            log(f"step {step} lr {lr:.2e} loss {lm.item():.4f} aux(sum of {len(per_layer)} layers) {aux.item():.4f} "
                f"(worst layer {my_aux.item():.4f}, 2 = balanced) gnorm {gn.item():.2f}")
        if step % a.eval_every == 0 or step == total:
            te = time.time()
            vl = evaluate(model, val_ids, a.seq, device, max_windows=128)
            eval_time += time.time() - te
            history.append({"step": step, "tokens": step * tokens_per_step, "train_loss": lm.item(),
                            "aux": aux.item(), "val_loss": vl, "val_ppl": math.exp(vl), "lr": lr,
                            "elapsed_s": time.time() - t_start})
            log(f"eval step {step}: val loss {vl:.4f} ppl {math.exp(vl):.2f}")
            if vl < best[0]:
                best = (vl, {k: v.detach().clone() for k, v in model.state_dict().items()}, step)
    if not history or history[-1]["step"] != step:
        vl = evaluate(model, val_ids, a.seq, device, max_windows=128)
        history.append({"step": step, "tokens": step * tokens_per_step, "train_loss": lm.item(),
                        "aux": aux.item(), "val_loss": vl, "val_ppl": math.exp(vl), "lr": lr,
                        "elapsed_s": time.time() - t_start})
        log(f"eval step {step}: val loss {vl:.4f} ppl {math.exp(vl):.2f}")
        if vl < best[0]:
            best = (vl, {k: v.detach().clone() for k, v in model.state_dict().items()}, step)
    train_time = time.time() - t_start
    log(f"trained {step} steps, {step * tokens_per_step} tokens, {train_time:.0f} s; best val step {best[2]}")
    if best[1] is not None and best[2] != step:
        model.load_state_dict(best[1])
        log(f"restored the best checkpoint (step {best[2]}, val loss {best[0]:.4f})")
    tap.remove()
    info = {"steps": step, "best_step": best[2], "tokens_seen": step * tokens_per_step,
            "train_seconds": train_time, "tokens_per_step": tokens_per_step, "parameters": nparams,
            "history": history, "args": vars(a), "train_tokens": train_ids.numel(),
            "epochs": step * tokens_per_step / train_ids.numel()}
    return model, cfg, val_ids, info


# --- Hub naming ------------------------------------------------------------------------------------

def expert_candidates(gu, dn, I, H):
    """Ways a fused (gate_up, down) pair may map to per-expert w1, w3, w2 in Hub layout
    (w1, w3: [I, H]; w2: [H, I]). The right one is picked by a numeric check."""
    cands, downs = [], []
    if gu.shape[1:] == (2 * I, H):
        cands.append(("gate_first", lambda e: (gu[e, :I], gu[e, I:])))
        cands.append(("up_first", lambda e: (gu[e, I:], gu[e, :I])))
    if gu.shape[1:] == (H, 2 * I):
        cands.append(("T_gate_first", lambda e: (gu[e, :, :I].t(), gu[e, :, I:].t())))
        cands.append(("T_up_first", lambda e: (gu[e, :, I:].t(), gu[e, :, :I].t())))
    if dn.shape[1:] == (H, I):
        downs.append(("down", lambda e: dn[e]))
    if dn.shape[1:] == (I, H):
        downs.append(("down_T", lambda e: dn[e].t()))
    return [(c[0] + "/" + d[0], c[1], d[1]) for c in cands for d in downs], gu.shape[0]


def moe_reference(x, gate_w, w1s, w3s, w2s, k=2):
    logits = x @ gate_w.t()
    probs = logits.softmax(-1)
    wts, sel = probs.topk(k, -1)
    wts = wts / wts.sum(-1, keepdim=True)
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(k):
            e = sel[t, j].item()
            h = F.silu(x[t] @ w1s[e].t()) * (x[t] @ w3s[e].t())
            out[t] += wts[t, j] * (h @ w2s[e].t())
    return out


def to_hub_state(model, cfg):
    """bf16 state dict in Hub naming, each MoE block checked against its module's own forward in fp32."""
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    I, H = cfg.intermediate_size, cfg.hidden_size
    hub = {}
    blocks = moe_blocks(model)
    for n, v in sd.items():
        if ".layers." not in n or not any(s in n for s in (".mlp.", ".block_sparse_moe.")):
            hub[n] = v
    for li, moe in enumerate(blocks):
        prefix = next(n for n, m in model.named_modules() if m is moe)
        P = f"model.layers.{li}.block_sparse_moe"
        hub[f"{P}.gate.weight"] = sd[f"{prefix}.gate.weight"]
        x = torch.randn(12, H, device=sd[f"{prefix}.gate.weight"].device, dtype=torch.float32)
        with torch.no_grad():
            out = moe(x.unsqueeze(0))
        out = (out[0] if isinstance(out, tuple) else out).reshape(12, H).float()
        gw = sd[f"{prefix}.gate.weight"].float()
        if f"{prefix}.experts.0.w1.weight" in sd:  # already per-expert
            per = [(sd[f"{prefix}.experts.{e}.w1.weight"], sd[f"{prefix}.experts.{e}.w3.weight"],
                    sd[f"{prefix}.experts.{e}.w2.weight"]) for e in range(cfg.num_local_experts)]
            chosen = "per_expert"
        else:
            gu = sd[f"{prefix}.experts.gate_up_proj"]
            dn = sd[f"{prefix}.experts.down_proj"]
            cands, E = expert_candidates(gu, dn, I, H)
            per, chosen = None, None
            for name, fgu, fdn in cands:
                try:
                    trial = [(fgu(e)[0], fgu(e)[1], fdn(e)) for e in range(E)]
                    if any(t[0].shape != (I, H) or t[1].shape != (I, H) or t[2].shape != (H, I) for t in trial):
                        continue
                    ref = moe_reference(x, gw, [t[0].float() for t in trial], [t[1].float() for t in trial],
                                        [t[2].float() for t in trial])
                    err = ((ref - out).norm() / out.norm()).item()
                    log(f"layer {li}: layout {name}: rel err {err:.2e}")
                    if err < 1e-3:
                        per, chosen = trial, name
                        break
                except Exception as ex:
                    log(f"layer {li}: layout {name}: {ex}")
                    continue
            if per is None:
                raise RuntimeError(f"layer {li}: no layout of {prefix}.experts matched the module's forward")
        ref = moe_reference(x, gw, [t[0].float() for t in per], [t[1].float() for t in per],
                            [t[2].float() for t in per])
        err = ((ref - out).norm() / out.norm()).item()
        if err > 1e-3:
            raise RuntimeError(f"layer {li}: Hub-layout experts differ from the module (rel err {err:.2e})")
        if li == 0:
            log(f"expert layout: {chosen}; MoE block check rel err {err:.1e}")
        for e, (w1, w3, w2) in enumerate(per):
            hub[f"{P}.experts.{e}.w1.weight"] = w1
            hub[f"{P}.experts.{e}.w3.weight"] = w3
            hub[f"{P}.experts.{e}.w2.weight"] = w2
    return {k: v.to(torch.bfloat16).contiguous().cpu() for k, v in hub.items()}


def rnd(v, sig=7):
    if isinstance(v, (list, tuple)):
        return [rnd(x, sig) for x in v]
    return float(f"{float(v):.{sig}g}")


@torch.no_grad()
def forward_ref(model, ids, device):
    tap = RouterTap(model)
    x = torch.tensor([ids], device=device)
    logits = model(input_ids=x, use_cache=False).logits[0].float()
    rl = [r.float() for r in tap.logits(dtype=torch.float32)]
    tap.remove()
    return logits, rl


@torch.no_grad()
def greedy(model, ids, n, device):
    seq = list(ids)
    for _ in range(n):
        logits = model(input_ids=torch.tensor([seq], device=device), use_cache=False).logits[0, -1].float()
        seq.append(int(logits.argmax()))
    return seq[len(ids):]


@torch.no_grad()
def sample(model, ids, n, device, temp, top_p, gen):
    seq = list(ids)
    for _ in range(n):
        logits = model(input_ids=torch.tensor([seq], device=device), use_cache=False).logits[0, -1].float() / temp
        p = logits.softmax(-1)
        ps, pi = p.sort(descending=True)
        keep = ps.cumsum(0) - ps < top_p
        ps = ps * keep
        j = torch.multinomial(ps / ps.sum(), 1, generator=gen).item()
        tok = int(pi[j])
        seq.append(tok)
        if tok == 2:
            break
    return seq[len(ids):]


def bundle_reference(model, ref_in, device, st_sha):
    out = {"model": "models/epwa-tiny-moe", "safetensors_sha256": st_sha,
           "made_with": f"transformers {__import__('transformers').__version__}, torch {torch.__version__}, "
                        "float32 from the bf16 weights",
           "top_k": 2, "routing": "softmax over all experts, top-2, weights renormalised to sum 1",
           "sequences": []}
    for item in ref_in["sequences"]:
        ids = item["ids"]
        logits, rl = forward_ref(model, ids, device)
        n = len(ids)
        keep = list(range(n)) if n <= 8 else list(range(n - 4, n))
        seq = {"text": item.get("text", ""), "ids": ids, "logits_positions": keep,
               "logits": [rnd(logits[p].tolist()) for p in keep],
               "argmax": [int(a) for a in logits.argmax(-1).tolist()],
               "layers": []}
        for li, r in enumerate(rl):
            probs = r.softmax(-1)
            w, e = probs.topk(2, -1)
            w = w / w.sum(-1, keepdim=True)
            seq["layers"].append({"router_logits": [rnd(row) for row in r.tolist()],
                                  "top2_experts": e.tolist(), "top2_weights": [rnd(row) for row in w.tolist()]})
        seq["greedy16"] = greedy(model, ids, 16, device)
        out["sequences"].append(seq)
    return out


@torch.no_grad()
def heldout_stats(model, val, seq, device, n_experts):
    model.eval()
    tap = RouterTap(model)
    nw = (val.numel() - 1) // seq
    tot, cnt = 0.0, 0
    L = len(tap.blocks)
    usage = torch.zeros(L, n_experts, dtype=torch.long)
    top1_usage = torch.zeros(L, n_experts, dtype=torch.long)
    bins = 20
    hist_p = torch.zeros(L, bins, dtype=torch.long)  # top-1 softmax probability over all experts
    hist_w = torch.zeros(L, bins, dtype=torch.long)  # top-1 weight after top-2 renormalisation
    sum_p = torch.zeros(L, dtype=torch.float64)
    sum_w = torch.zeros(L, dtype=torch.float64)
    ntok = 0
    for s in range(0, nw, 32):
        e_ = min(nw, s + 32)
        chunk = val[torch.arange(s * seq, e_ * seq + 1)].to(device)
        x = chunk[:-1].view(e_ - s, seq)
        y = chunk[1:].view(e_ - s, seq)
        logits = model(input_ids=x, use_cache=False).logits.float()
        tot += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        cnt += y.numel()
        for li, r in enumerate(tap.logits(dtype=torch.float32)):
            p = r.softmax(-1)
            w, sel = p.topk(2, -1)
            wn = w[:, 0] / w.sum(-1)
            usage[li] += torch.bincount(sel.reshape(-1), minlength=n_experts).cpu()
            top1_usage[li] += torch.bincount(sel[:, 0], minlength=n_experts).cpu()
            hist_p[li] += torch.histc(w[:, 0], bins=bins, min=0, max=1).long().cpu()
            hist_w[li] += torch.histc(wn, bins=bins, min=0, max=1).long().cpu()
            sum_p[li] += w[:, 0].double().sum().item()
            sum_w[li] += wn.double().sum().item()
        ntok += y.numel()
    tap.remove()
    ppl = math.exp(tot / cnt)
    u = usage.double()
    return {"heldout_tokens": cnt, "heldout_ppl": ppl, "heldout_loss": tot / cnt,
            "expert_usage": usage.tolist(), "expert_usage_top1": top1_usage.tolist(),
            "usage_max_over_mean": (u.max(1).values / u.mean(1)).tolist(),
            "usage_min_over_mean": (u.min(1).values / u.mean(1)).tolist(),
            "top1_prob_hist": hist_p.tolist(), "top1_weight_hist": hist_w.tolist(), "hist_bins": bins,
            "mean_top1_prob": (sum_p / ntok).tolist(), "mean_top1_weight": (sum_w / ntok).tolist()}


@torch.no_grad()
def diagnose_load_back(model, ref_model, x, results):
    """Says why a reloaded model differs: which tensors differ, or which compute path."""
    sd1, sd2 = model.state_dict(), ref_model.state_dict()
    bad = []
    for k, v in sd1.items():
        w = sd2.get(k)
        if w is None or w.shape != v.shape:
            bad.append(f"{k}: {'missing' if w is None else list(w.shape)}")
        elif (v.float() - w.float()).abs().max().item() > 0:
            bad.append(f"{k}: max diff {(v.float() - w.float()).abs().max().item():.3e}")
    log(f"tensors differing after load ({len(bad)}): {bad[:12]}")
    for m, name in ((model, "trained"), (ref_model, "reloaded")):
        c = m.config
        log(f"{name}: attn {getattr(c, '_attn_implementation', None)}, experts "
            f"{getattr(c, '_experts_implementation', None)}, tie {getattr(c, 'tie_word_embeddings', None)}, "
            f"lm_head is embed {m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()}")
    results["load_back_bad_tensors"] = bad
    for impl in ("eager",):
        try:
            for m in (model, ref_model):
                if hasattr(m, "set_attn_implementation"):
                    m.set_attn_implementation(impl)
                else:
                    m.config._attn_implementation = impl
            d = (model(input_ids=x, use_cache=False).logits - ref_model(input_ids=x, use_cache=False).logits)
            log(f"with attention {impl} on both: max diff {d.abs().max().item():.3e}")
        except Exception as ex:
            log(f"attention {impl}: {ex}")


def split_file(path, out_dir, base, part=15 * 1024 * 1024):
    data = open(path, "rb").read()
    names = []
    for i in range(0, len(data), part):
        name = f"{base}.part-{chr(97 + i // part // 26)}{chr(97 + (i // part) % 26)}"
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data[i:i + part])
        names.append(name)
    return names


def analyse(a, device, ref_model, cfg, val_ids, results, sha):
    try:
        with torch.no_grad():
            tg, tb = RouterTap(ref_model), RouterTap(ref_model, block=True)
            x = val_ids[:2 * 256].view(2, 256).to(device)
            out = ref_model(input_ids=x, use_cache=False, output_router_logits=True)
            lg, lb = tg.logits(torch.float32), tb.logits(torch.float32)
            tg.remove(), tb.remove()
            d = max((p - q).abs().max().item() for p, q in zip(lg, lb))
            hf = getattr(out, "router_logits", None)
            dh = None if not hf else max((p.reshape(q.shape).float() - q).abs().max().item() for p, q in zip(hf, lg))
        log(f"router logits: gate-input tap vs MoE-block-input tap max diff {d:.3e}; vs transformers' "
            f"router_logits {dh}")
        results["router_tap_check"] = {"gate_vs_block": d, "gate_vs_hf": dh}
    except Exception:
        log("router tap check failed\n" + traceback.format_exc())
    ref_in = json.load(open(os.path.join(a.data, "ref_input.json")))
    try:
        ref = bundle_reference(ref_model, ref_in, device, sha)
        with open(os.path.join(a.out, "bundle_ref.json"), "w") as f:
            json.dump(ref, f, separators=(",", ":"))
        log(f"bundle_ref.json {os.path.getsize(os.path.join(a.out, 'bundle_ref.json')) / 1e6:.2f} MB")
    except Exception:
        log("REFERENCE FAILED\n" + traceback.format_exc())
    try:
        st = heldout_stats(ref_model, val_ids, a.seq, device, cfg.num_local_experts)
        results["heldout"] = st
        log(f"held-out ppl (fp32 from bf16) {st['heldout_ppl']:.2f}; mean top-1 prob per layer "
            f"{[round(v, 3) for v in st['mean_top1_prob']]}; top-1 weight {[round(v, 3) for v in st['mean_top1_weight']]}")
        log(f"usage max/mean {[round(v, 2) for v in st['usage_max_over_mean']]}, "
            f"min/mean {[round(v, 2) for v in st['usage_min_over_mean']]}")
    except Exception:
        log("HELD-OUT STATS FAILED\n" + traceback.format_exc())
    try:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=os.path.join(a.data, "tokenizer.model"))
        gen = torch.Generator(device=device).manual_seed(a.seed)
        samples = []
        for p in ref_in["prompts"][:6]:
            g = greedy(ref_model, p["ids"], 60, device)
            s = sample(ref_model, p["ids"], 80, device, 0.8, 0.95, gen)
            samples.append({"prompt": p["text"], "greedy": sp.decode(g), "sampled_t0.8_p0.95": sp.decode(s)})
            log(f"PROMPT {p['text']!r}\n  greedy: {sp.decode(g)!r}\n  sampled: {sp.decode(s)!r}")
        results["samples"] = samples
    except Exception:
        log("SAMPLES FAILED\n" + traceback.format_exc())


def hub_to_native(hub, model):
    """Hub per-expert tensors back into this transformers version's own names and layout (gate_up_proj =
    [w1; w3] per expert, the layout picked by to_hub_state), for a load that bypasses from_pretrained."""
    sd = {}
    names = set(model.state_dict())
    for li, moe in enumerate(moe_blocks(model)):
        prefix = next(n for n, m in model.named_modules() if m is moe)
        P = f"model.layers.{li}.block_sparse_moe"
        E = len([k for k in hub if k.startswith(f"{P}.experts.") and k.endswith(".w1.weight")])
        sd[f"{prefix}.gate.weight"] = hub[f"{P}.gate.weight"]
        if f"{prefix}.experts.gate_up_proj" in names:
            sd[f"{prefix}.experts.gate_up_proj"] = torch.stack(
                [torch.cat([hub[f"{P}.experts.{e}.w1.weight"], hub[f"{P}.experts.{e}.w3.weight"]], 0) for e in range(E)])
            sd[f"{prefix}.experts.down_proj"] = torch.stack([hub[f"{P}.experts.{e}.w2.weight"] for e in range(E)])
        else:
            for e in range(E):
                for w in ("w1", "w2", "w3"):
                    sd[f"{prefix}.experts.{e}.{w}.weight"] = hub[f"{P}.experts.{e}.{w}.weight"]
    for k, v in hub.items():
        if ".block_sparse_moe." not in k:
            sd[k] = v
    return sd


def post_only(a, device, results):
    """References, held-out statistics and samples from a saved bundle (Hub-named bf16 safetensors)."""
    from safetensors.torch import load_file
    from transformers import MixtralConfig, MixtralForCausalLM
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    st_path = os.path.join(a.post_only, "model.safetensors")
    sha = hashlib.sha256(open(st_path, "rb").read()).hexdigest()
    log(f"bundle {st_path}: sha256 {sha}")
    ref_model = MixtralForCausalLM.from_pretrained(a.post_only, dtype=torch.float32).to(device).eval()
    cfg = ref_model.config
    # Independent round trip: our own Hub -> native mapping into a model built from the config.
    hub = {k: v.float() for k, v in load_file(st_path).items()}
    fresh = MixtralForCausalLM(MixtralConfig.from_pretrained(a.post_only)).float()
    fresh.load_state_dict(hub_to_native(hub, fresh), strict=True)
    fresh = fresh.to(device).eval()
    val_ids = torch.from_numpy(np.fromfile(os.path.join(a.data, "heldout.u16"), dtype="<u2").astype(np.int64))
    with torch.no_grad():
        x = val_ids[:4 * 256].view(4, 256).to(device)
        d = (fresh(input_ids=x, use_cache=False).logits - ref_model(input_ids=x, use_cache=False).logits)
        d = d.abs().max().item()
    log(f"from_pretrained vs explicit Hub->native load: max |logit difference| {d:.3e}")
    results["load_back_max_abs_diff"] = d
    results["bundle"] = {"sha256": sha, "bytes": os.path.getsize(st_path), "tensors": len(hub)}
    del fresh
    analyse(a, device, ref_model, cfg, val_ids, results, sha)
    finish(a, results)
    return 0


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    device = "cuda"
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    import transformers
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name()}")
    results = {}
    if a.post_only:
        return post_only(a, device, results)
    try:
        model, cfg, val_ids, info = train(a, device)
        results["training"] = info
    except Exception:
        log("TRAINING FAILED\n" + traceback.format_exc())
        finish(a, results)
        return 1

    work = "/tmp/epwa_bundle"
    os.makedirs(work, exist_ok=True)
    # Round the parameters to the bundle's precision (bf16) but compute in true float32 from here on (no
    # TF32). Parameters only: model.to(bfloat16) would also round the RoPE inv_freq buffer, which is not
    # saved, and change the model's outputs.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    with torch.no_grad():
        for prm in model.parameters():
            prm.copy_(prm.to(torch.bfloat16).float())
    model.eval()
    try:
        hub = to_hub_state(model, cfg)
        from safetensors.torch import save_file
        st_path = os.path.join(work, "model.safetensors")
        save_file(hub, st_path, metadata={"format": "pt"})
        cfg_out = copy.deepcopy(cfg)
        cfg_out.output_router_logits = False
        for attr in ("torch_dtype", "dtype"):
            try:
                setattr(cfg_out, attr, torch.bfloat16)
            except Exception:
                pass
        cfg_out.save_pretrained(work)
        sha = hashlib.sha256(open(st_path, "rb").read()).hexdigest()
        log(f"saved {len(hub)} tensors in Hub naming, {os.path.getsize(st_path) / 1e6:.2f} MB, sha256 {sha}")
        results["bundle"] = {"tensors": len(hub), "bytes": os.path.getsize(st_path), "sha256": sha,
                             "names_sample": sorted(hub)[:12]}
        results["bundle"]["parts"] = split_file(st_path, a.out, "model.safetensors")
        import shutil
        shutil.copy(os.path.join(work, "config.json"), os.path.join(a.out, "config.json"))
    except Exception:
        log("SAVING IN HUB NAMING FAILED\n" + traceback.format_exc())
        try:
            model.to(torch.bfloat16).save_pretrained(work + "_native")
            results["native_parts"] = split_file(os.path.join(work + "_native", "model.safetensors"), a.out,
                                                 "native.safetensors")
            import shutil
            shutil.copy(os.path.join(work + "_native", "config.json"), os.path.join(a.out, "config.json"))
        except Exception:
            log("native save failed too\n" + traceback.format_exc())
        finish(a, results)
        return 1

    # Load the Hub-named file back in float32 and check it reproduces the trained model's logits.
    from transformers import MixtralForCausalLM
    try:
        try:
            ref_model = MixtralForCausalLM.from_pretrained(work, dtype=torch.float32)
        except TypeError:
            ref_model = MixtralForCausalLM.from_pretrained(work, torch_dtype=torch.float32)
        ref_model = ref_model.to(device).eval()
        with torch.no_grad():
            x = val_ids[:2 * 128].view(2, 128).to(device)
            l1 = model(input_ids=x, use_cache=False).logits
            l2 = ref_model(input_ids=x, use_cache=False).logits
            diff = (l1 - l2).abs().max().item()
        log(f"load-back check: max |logit difference| {diff:.3e}")
        results["load_back_max_abs_diff"] = diff
        if diff > 1e-3:
            diagnose_load_back(model, ref_model, x, results)
        if diff > 1e-3:
            raise RuntimeError(f"the Hub-named file does not reproduce the trained model (diff {diff})")
        del model
    except Exception:
        log("LOAD-BACK FAILED; references come from the trained model itself\n" + traceback.format_exc())
        results["load_back_failed"] = True
        ref_model = model
    ref_model.eval()

    analyse(a, device, ref_model, cfg, val_ids, results, results["bundle"]["sha256"])
    finish(a, results)
    return 0


def finish(a, results):
    results["wall_seconds"] = time.time() - T0
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(a.out, "train_log.txt"), "w") as f:
        f.write("\n".join(LOG) + "\n")


if __name__ == "__main__":
    sys.exit(main())
