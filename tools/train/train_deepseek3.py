#!/usr/bin/env python3
"""Trains a small DeepSeek-V3-architecture model (sigmoid router with the correction bias, group-limited
top-k, shared expert, multi-head latent attention) on the bundled model's corpus, so that the watermark's
behaviour on a trained sigmoid router can be measured (docs/FAMILIES.md, "DeepSeek-V3 trained").

    PYTHONUNBUFFERED=1 python3 tools/train/train_deepseek3.py --data DIR --out DIR [--train-seconds 300]

DIR (--data) holds train.u16 / heldout.u16 (tools/train/pretokenize.py). The router is balanced as
DeepSeek-V3 does it, without an auxiliary loss: after every step each MoE layer's correction bias moves
by --bias-rate towards balance (b_e += rate * sign(mean load - load_e)); the bias only ranks experts,
the weights stay the sigmoid scores. Writes to --out (at most 8 files under 16 MiB, the device tool's
limits): config.json, model.safetensors.part-* (bf16, Hub DeepSeek-V3 names, checked to load back in
transformers with the trained model's logits), ref.json (logits and router choices of a fixed input,
for epwa's parity check), results.json and train_log.txt.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import batches, log, lr_at, split_file, LOG  # noqa: E402  (the bundled model's helpers)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--train-seconds", type=float, default=300.0)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--min-lr-frac", type=float, default=0.1)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--bias-rate", type=float, default=1e-3)
    p.add_argument("--max-epochs", type=float, default=8.0)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args()


def make_config():
    from transformers import DeepseekV3Config
    return DeepseekV3Config(
        vocab_size=8000, hidden_size=256, intermediate_size=768, moe_intermediate_size=192,
        num_hidden_layers=6, first_k_dense_replace=1, num_attention_heads=8, num_key_value_heads=8,
        q_lora_rank=128, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
        n_shared_experts=1, n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
        routed_scaling_factor=2.5, norm_topk_prob=True, max_position_embeddings=1024, rms_norm_eps=1e-6,
        rope_theta=10000.0, rope_scaling=None, rope_interleave=True, tie_word_embeddings=False,
        bos_token_id=1, eos_token_id=2, pad_token_id=None, attention_bias=False, attention_dropout=0.0,
        initializer_range=0.02, hidden_act="silu", num_nextn_predict_layers=0)


class Gates:
    """Each MoE layer's router: its input captured by a pre-hook, so the choice is computed here as V3
    does (sigmoid, + correction bias, top-2 group sums, topk_group groups, top-k) whatever this
    transformers version's module returns."""

    def __init__(self, model, cfg):
        self.cfg = cfg
        self.gates = [l.mlp.gate for l in model.model.layers if hasattr(l.mlp, "gate")]
        self.inputs = [None] * len(self.gates)
        self.handles = [g.register_forward_pre_hook(self._hook(i)) for i, g in enumerate(self.gates)]

    def _hook(self, i):
        def fn(module, args):
            self.inputs[i] = args[0].detach()
        return fn

    @torch.no_grad()
    def choices(self):
        c = self.cfg
        out = []
        for x, g in zip(self.inputs, self.gates):
            logits = F.linear(x.reshape(-1, x.shape[-1]).float(), g.weight.float())
            s = logits.sigmoid()
            choice = s + g.e_score_correction_bias.float().unsqueeze(0)
            gs = choice.view(-1, c.n_group, c.n_routed_experts // c.n_group).topk(2, -1).values.sum(-1)
            keep = torch.zeros_like(gs).scatter_(1, gs.topk(c.topk_group, -1).indices, 1.0)
            mask = keep.repeat_interleave(c.n_routed_experts // c.n_group, 1)
            chosen = choice.masked_fill(mask == 0, float("-inf")).topk(c.num_experts_per_tok, -1).indices
            out.append((logits, s, chosen))
        return out

    @torch.no_grad()
    def balance(self, rate):
        """DeepSeek-V3's auxiliary-loss-free balancing; returns each layer's max load / mean."""
        ratios = []
        for (_, _, chosen), g in zip(self.choices(), self.gates):
            load = torch.bincount(chosen.reshape(-1), minlength=self.cfg.n_routed_experts).float()
            g.e_score_correction_bias.add_(rate * torch.sign(load.mean() - load))
            ratios.append((load.max() / load.mean()).item())
        return ratios


@torch.no_grad()
def evaluate(model, val, seq, device, max_windows=128):
    model.eval()
    nw = min((val.numel() - 1) // seq, max_windows)
    tot, cnt = 0.0, 0
    for s in range(0, nw, 32):
        e = min(nw, s + 32)
        chunk = val[s * seq:e * seq + 1].to(device)
        x, y = chunk[:-1].view(e - s, seq), chunk[1:].view(e - s, seq)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x, use_cache=False).logits
        tot += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
        cnt += y.numel()
    model.train()
    return tot / cnt


def hub_state(model, cfg, device):
    """bf16 Hub-named state dict (per-expert gate/up/down_proj); fused in-memory experts are split in the
    layout whose reload through from_pretrained gives the trained model's logits."""
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    fused = [k for k in sd if k.endswith("mlp.experts.gate_up_proj")]
    if not fused:
        return {k: v.to(torch.bfloat16) for k, v in sd.items()}
    I, H, E = cfg.moe_intermediate_size, cfg.hidden_size, cfg.n_routed_experts
    layouts = {
        "halves [E, 2I, H]": lambda gu, e: (gu[e, :I, :], gu[e, I:, :]),
        "halves [E, H, 2I]": lambda gu, e: (gu[e, :, :I].T, gu[e, :, I:].T),
        "interleaved [E, 2I, H]": lambda gu, e: (gu[e, 0::2, :], gu[e, 1::2, :]),
    }
    down = {
        "[E, H, I]": lambda dn, e: dn[e],
        "[E, I, H]": lambda dn, e: dn[e].T,
    }
    found = []
    for ln, split in layouts.items():
        for dname, dsplit in down.items():
            hub, ok = {}, True
            for k, v in sd.items():
                if ".mlp.experts." in k:
                    continue
                hub[k] = v
            for k in fused:
                p = k[: -len("gate_up_proj")]
                gu, dn = sd[k], sd[p + "down_proj"]
                for e in range(E):
                    g, u = split(gu, e)
                    d = dsplit(dn, e)
                    if g.shape != (I, H) or u.shape != (I, H) or d.shape != (H, I):
                        ok = False
                        break
                    hub[f"{p}{e}.gate_proj.weight"] = g
                    hub[f"{p}{e}.up_proj.weight"] = u
                    hub[f"{p}{e}.down_proj.weight"] = d
                if not ok:
                    break
            if ok:
                found.append((f"{ln}, down {dname}", {k: v.to(torch.bfloat16).contiguous() for k, v in hub.items()}))
    return found


def save_checked(model, cfg, device, out_dir, probe):
    """Writes the Hub-named bf16 safetensors whose reload matches the bf16-rounded trained model."""
    from safetensors.torch import save_file
    from transformers import DeepseekV3ForCausalLM
    ref = DeepseekV3ForCausalLM(cfg).to(device).eval()
    ref.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    with torch.no_grad():
        want = ref(input_ids=probe).logits.float()
    cands = hub_state(model, cfg, device)
    if isinstance(cands, dict):
        cands = [("per-expert in memory", cands)]
    tmp = os.path.join(out_dir, "_check")
    os.makedirs(tmp, exist_ok=True)
    cfg.save_pretrained(tmp)
    for name, hub in cands:
        save_file(hub, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        back = DeepseekV3ForCausalLM.from_pretrained(tmp, torch_dtype=torch.float32).to(device).eval()
        with torch.no_grad():
            got = back(input_ids=probe).logits.float()
        err = ((got - want).norm() / want.norm()).item()
        log(f"expert layout {name}: reload rel err {err:.2e}")
        if err < 1e-4:
            return hub, tmp
    raise RuntimeError("no expert layout reloads to the trained model's logits")


def main():
    a = parse_args()
    os.makedirs(a.out, exist_ok=True)
    device = "cuda"
    torch.manual_seed(a.seed)
    from transformers import DeepseekV3ForCausalLM
    import transformers
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name()}")
    train_ids = torch.from_numpy(np.fromfile(os.path.join(a.data, "train.u16"), dtype="<u2").astype(np.int64))
    val_ids = torch.from_numpy(np.fromfile(os.path.join(a.data, "heldout.u16"), dtype="<u2").astype(np.int64))
    cfg = make_config()
    model = DeepseekV3ForCausalLM(cfg).to(device)
    gates = Gates(model, cfg)
    for g in gates.gates:
        g.e_score_correction_bias.data.zero_()
        g.e_score_correction_bias.requires_grad_(False)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"parameters {nparams}; train tokens {train_ids.numel()}, held-out {val_ids.numel()}")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in params if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in params if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    gen = torch.Generator().manual_seed(a.seed)
    it = batches(train_ids, a.seq, a.batch, gen, device)
    tps = a.seq * a.batch
    total = int(a.max_epochs * train_ids.numel() / tps)
    t0, step, history, best = time.time(), 0, [], (float("inf"), None, 0)
    t_probe = None
    model.train()
    while step < total and time.time() - t0 < a.train_seconds:
        lr = lr_at(step, a, total)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = next(it)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ratios = gates.balance(a.bias_rate)
        step += 1
        if step == 20:
            torch.cuda.synchronize()
            t_probe = time.time()
        if step == 120:
            torch.cuda.synchronize()
            dt = (time.time() - t_probe) / 100
            left = a.train_seconds - (time.time() - t0)
            total = min(total, step + int(0.95 * left / dt))
            log(f"step time {dt * 1e3:.1f} ms -> {total} steps")
        if step % 50 == 0 or step == 1:
            log(f"step {step} lr {lr:.2e} loss {loss.item():.4f} gnorm {gn.item():.2f} "
                f"max load/mean per layer {' '.join(f'{r:.2f}' for r in ratios)}")
        if step % a.eval_every == 0 or step == total:
            vl = evaluate(model, val_ids, a.seq, device)
            history.append({"step": step, "val_loss": vl, "val_ppl": math.exp(vl), "elapsed_s": time.time() - t0})
            log(f"eval step {step}: val loss {vl:.4f} ppl {math.exp(vl):.2f}")
            if vl < best[0]:
                best = (vl, {k: v.detach().clone() for k, v in model.state_dict().items()}, step)
    log(f"trained {step} steps ({step * tps} tokens) in {time.time() - t0:.0f} s; best step {best[2]}")
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()

    # Router statistics on held-out text: expert load at each MoE layer's top-1 (the watermark's
    # pathway) and its confidence (the top-1's renormalised weight).
    stats = []
    with torch.no_grad():
        chunk = val_ids[: 64 * a.seq].view(64, a.seq).to(device)
        model(input_ids=chunk, use_cache=False)
        for li, (logits, s, chosen) in enumerate(gates.choices()):
            top1 = chosen[:, 0]
            load = torch.bincount(top1, minlength=cfg.n_routed_experts).double()
            conf = s.gather(1, top1[:, None])[:, 0] / s.gather(1, chosen).sum(1)
            argmax = logits.argmax(1)
            stats.append({"moe_layer": li, "top1_share": (load / load.sum()).tolist(),
                          "top1_max_over_mean": (load.max() / load.mean()).item(),
                          "confidence_mean": conf.mean().item(), "confidence_median": conf.median().item(),
                          "top1_is_argmax": (argmax == top1).double().mean().item(),
                          "bias": gates.gates[li].e_score_correction_bias.tolist()})
            log(f"MoE layer {li}: top-1 max/mean {stats[-1]['top1_max_over_mean']:.2f}, confidence mean "
                f"{stats[-1]['confidence_mean']:.3f}, top-1 == argmax of logits {stats[-1]['top1_is_argmax']:.3f}")

    probe = torch.tensor([[1] + [int(t) for t in val_ids[100:131]]], device=device)
    hub, tmp = save_checked(model, cfg, device, a.out, probe)
    cfg_json = json.load(open(os.path.join(tmp, "config.json")))
    json.dump(cfg_json, open(os.path.join(a.out, "config.json"), "w"), indent=2)
    from safetensors.torch import save_file
    st = os.path.join(tmp, "model.safetensors")
    save_file(hub, st, metadata={"format": "pt"})
    parts = split_file(st, a.out, "model.safetensors")
    # Reference logits of the bf16 weights in float32 (what epwa computes from this file).
    from transformers import DeepseekV3ForCausalLM as M
    back = M.from_pretrained(tmp, torch_dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        lg = back(input_ids=probe).logits[0].float().cpu()
    json.dump({"tokens": probe[0].tolist(), "logits_last": lg[-1].tolist(),
               "argmax": lg.argmax(-1).tolist()}, open(os.path.join(a.out, "ref.json"), "w"))
    results = {"steps": step, "best_step": best[2], "val": history, "parameters": nparams,
               "router": stats, "parts": parts, "args": vars(a)}
    json.dump(results, open(os.path.join(a.out, "results.json"), "w"), indent=1)
    import shutil
    shutil.rmtree(tmp)
    open(os.path.join(a.out, "train_log.txt"), "w").write("\n".join(LOG) + "\n")
    log("done")


if __name__ == "__main__":
    main()
