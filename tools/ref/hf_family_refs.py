#!/usr/bin/env python3
"""Run HuggingFace transformers on the committed Qwen2-MoE, OLMoE, Qwen3-MoE, DeepSeek-V2 (and
V2-Lite), DeepSeek-V3 and GPT-OSS reference checkpoints.

make_family_refs.py wrote tests/data/ref/{qwen2moe,olmoe,qwen3moe,deepseek2,deepseek2-lite,deepseek3,
gptoss,gptoss_bf16,gptoss_mxfp4}/ and their references from a numpy float64 forward (no torch). This
script loads the same files with transformers' own Qwen2MoeForCausalLM / OlmoeForCausalLM /
Qwen3MoeForCausalLM / DeepseekV2ForCausalLM / DeepseekV3ForCausalLM / GptOssForCausalLM
(AutoModelForCausalLM, float32 (a bf16 checkpoint upcast), eager attention and experts, on the CPU),
runs every case of ref.json through it and writes
<out>/<name>/hf.json in ref.json's layout: transformers' logits, raw router logits, top-k and
weights of every MoE layer, and 8 greedy tokens. DeepSeek-V2/V3 route as the model's own router
module does (transformers 5.17's TopkRouter; the MoE module's route_tokens_to_experts before it);
its top-k is unsorted: listed here best first by the router's choice value, softmax or sigmoid +
e_score_correction_bias, as ref.json lists it. meta records the versions, the loading report, how
far transformers is from the numpy references and a GPU cross-check (TF32 off).

    python3 tools/ref/hf_family_refs.py --ref tests/data/ref --out /tmp/hf [--only gptoss gptoss_bf16]

gptoss_mxfp4 has the release's MXFP4 experts: they are loaded with Mxfp4Config(dequantize=True).
Its weights round trip is skipped (save_pretrained would write the dequantized experts). GPT-OSS's router (mlp.router) is a
linear layer with a bias; its raw logits here include the bias,
top-k is taken on them and the weights are the softmax over the k (GptOssTopKRouter).
"""
import argparse
import json
import os
import re
import sys
import tempfile

import torch
import torch.nn.functional as F

from make_family_refs import to_json  # the same JSON layout as ref.json

NAMES = ["qwen2moe", "olmoe", "qwen3moe", "deepseek2", "deepseek2-lite", "deepseek3", "gptoss",
         "gptoss_bf16", "gptoss_mxfp4"]
DEEPSEEK_MLA = ("deepseek_v2", "deepseek_v3")


def log(*parts):
    print(*parts, flush=True)


class HF:
    """One checkpoint in transformers, with hooks on every router."""

    def __init__(self, folder, cfg):
        from transformers import AutoModelForCausalLM

        self.cfg = cfg
        self.device = "cpu"
        extra = {}
        if cfg.get("quantization_config", {}).get("quant_method") == "mxfp4":
            # the MXFP4 experts dequantized at load (convert_moe_packed_tensors), run as float32
            from transformers import Mxfp4Config
            extra["quantization_config"] = Mxfp4Config(dequantize=True)
        model, info = AutoModelForCausalLM.from_pretrained(
            folder, dtype=torch.float32, attn_implementation="eager",
            experts_implementation="eager", output_loading_info=True, **extra)
        # Dequantized MXFP4 experts come back in bf16 whatever dtype asked for: run all in f32.
        self.model = model.float().eval()
        self.loading = {k: sorted(map(str, v)) for k, v in dict(info).items()}
        self.gates = {}  # transformer layer -> router module
        # DeepSeek-V2/V3 (transformers 5.17): mlp.gate is a TopkRouter that returns (raw logits,
        # top-k weights, top-k indices) itself; older versions routed inside the MoE module
        # (route_tokens_to_experts), which is hooked there instead.
        for name, mod in self.model.named_modules():
            m = re.search(r"layers\.(\d+)\.mlp\.(gate|router)$", name)  # GPT-OSS: router
            if m and (cfg["model_type"] not in DEEPSEEK_MLA or hasattr(mod, "weight")):
                self.gates[int(m.group(1))] = mod
        if cfg["model_type"] in DEEPSEEK_MLA and not any(
                type(g).__name__.endswith("TopkRouter") for g in self.gates.values()):
            self.gates = {}
            for name, mod in self.model.named_modules():
                m = re.search(r"layers\.(\d+)\.mlp$", name)
                if m and hasattr(mod, "route_tokens_to_experts"):
                    self.gates[int(m.group(1))] = mod
        self.captured = {l: [] for l in self.gates}
        for l, g in self.gates.items():
            g.register_forward_hook(self._hook(l), with_kwargs=True)

    def _hook(self, l):
        def hook(mod, args, kwargs, out):
            x = args[0] if args else next(iter(kwargs.values()))
            self.captured[l].append((x.detach(), out))
        return hook

    def to(self, device):
        self.model.to(device)
        self.device = device

    @torch.no_grad()
    def forward(self, ids):
        for c in self.captured.values():
            c.clear()
        t = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=t, use_cache=False)
        logits = out.logits[0].float().cpu()
        routers, module_agree = {}, []
        k = self.cfg["num_experts_per_tok"]
        for l, g in sorted(self.gates.items()):
            assert len(self.captured[l]) == 1, f"router {l} ran {len(self.captured[l])} times"
            x, gout = self.captured[l][0]
            if self.cfg["model_type"] in DEEPSEEK_MLA:
                raw, i, w = self.deepseek_route(g, x, gout)
                routers[l] = (raw, i, w)
                module_agree.append({})
                continue
            bias = g.bias.float() if getattr(g, "bias", None) is not None else None
            raw = F.linear(x.reshape(-1, x.shape[-1]).float(), g.weight.float(), bias).cpu()
            if self.cfg["model_type"] == "gpt_oss":  # top-k of the logits, softmax over the k
                top, i = raw.topk(k, -1)
                w = top.softmax(-1)
            else:
                probs = raw.softmax(-1)
                w, i = probs.topk(k, -1)
                if self.cfg.get("norm_topk_prob", False):
                    w = w / w.sum(-1, keepdim=True)
            routers[l] = (raw, i, w)
            # What the router module itself returned, for the record.
            outs = gout if isinstance(gout, (tuple, list)) else (gout,)
            agree = {}
            # GptOssTopKRouter of transformers 4 returns (scores, indices): no raw logits
            if self.cfg["model_type"] != "gpt_oss" or len(outs) == 3:
                agree["raw_logits_maxdiff"] = float(
                    (outs[0].float().cpu().reshape(raw.shape) - raw).abs().max())
            if len(outs) == 3 and outs[2].numel() == i.numel():
                agree["topk_equal"] = bool(torch.equal(outs[2].cpu().reshape(i.shape), i))
                if outs[1].numel() == w.numel():  # the k weights, not scattered over E
                    agree["weights_maxdiff"] = float(
                        (outs[1].float().cpu().reshape(w.shape) - w).abs().max())
            module_agree.append(agree)
        return logits, routers, module_agree

    def deepseek_route(self, mod, x, out):
        """(raw logits, top-k best first, weights) from the model's own routing: the TopkRouter's
        output, or the MoE module's route_tokens_to_experts (older transformers)."""
        x2 = x.reshape(-1, x.shape[-1]).float()
        router = mod if hasattr(mod, "weight") else mod.gate
        raw = F.linear(x2, router.weight.float())
        if hasattr(mod, "weight"):  # TopkRouter: (router_logits, topk_weights, topk_indices)
            idx, w = out[2], out[1]
        elif self.cfg["model_type"] == "deepseek_v2":  # expects [batch, seq, E]
            idx, w = mod.route_tokens_to_experts(raw.view(1, raw.shape[0], -1))
        else:
            idx, w = mod.route_tokens_to_experts(raw)
        if self.cfg["model_type"] == "deepseek_v2":
            choice = raw.softmax(-1)
        else:
            choice = raw.sigmoid() + router.e_score_correction_bias.float()
        idx, w = idx.reshape(raw.shape[0], -1), w.reshape(raw.shape[0], -1)
        order = torch.gather(choice, 1, idx).argsort(dim=-1, descending=True, stable=True)
        return raw.cpu(), torch.gather(idx, 1, order).cpu(), torch.gather(w, 1, order).float().cpu()

    @torch.no_grad()
    def greedy(self, ids, n):
        seq = list(ids)
        for _ in range(n):  # full recompute each step
            logits, _, _ = self.forward(seq)
            seq.append(int(logits[-1].argmax()))
        manual = seq[len(ids):]
        m = self.model
        m.generation_config.eos_token_id = None
        m.generation_config.pad_token_id = 0
        t = torch.tensor([ids], device=self.device)
        gen = m.generate(input_ids=t, attention_mask=torch.ones_like(t), max_new_tokens=n,
                         do_sample=False, eos_token_id=None, pad_token_id=0)
        return manual, gen[0, len(ids):].tolist()


def compare_weights(hf, folder):
    """save_pretrained writes the Hub naming back: every tensor must equal the committed file's."""
    from safetensors.torch import load_file

    want = load_file(os.path.join(folder, "model.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        hf.model.save_pretrained(tmp)
        got = {}
        for f in sorted(os.listdir(tmp)):
            if f.endswith(".safetensors"):
                got.update(load_file(os.path.join(tmp, f)))
    tied = hf.cfg.get("tie_word_embeddings", False)
    missing = sorted(k for k in want if k not in got)
    extra = sorted(k for k in got if k not in want and not (tied and k == "lm_head.weight"))
    differ = sorted(k for k in want if k in got and not torch.equal(got[k].float(), want[k].float()))
    return {"saved_tensors": len(got), "file_tensors": len(want), "missing": missing,
            "unexpected": extra, "differ": differ}


def rel_err(a, b):
    return float(((a - b).abs().max(-1).values / b.abs().max(-1).values).max())


def run_one(name, ref_dir, out_dir, gpu):
    import transformers

    folder = os.path.join(ref_dir, name)
    with open(os.path.join(folder, "ref.json")) as f:
        ref = json.load(f)
    cfg = ref["config"]
    hf = HF(folder, cfg)
    if cfg.get("quantization_config"):  # saved dequantized: not the file's tensors
        weights = {"skipped": "MXFP4 experts are dequantized at load"}
    else:
        weights = compare_weights(hf, folder)
    log(name, type(hf.model).__name__, "loading", hf.loading, "weights", weights)
    moe_index = {l: i for i, l in enumerate(sorted(hf.gates))}

    cases, agree = [], {"logits_max_rel_err": 0.0, "router_max_abs_err": 0.0, "topk_equal": True,
                        "weights_max_abs_err": 0.0, "greedy_equal": True,
                        "generate_equals_argmax": True, "router_module": []}
    for rc in ref["cases"]:
        ids = rc["tokens"]
        logits, routers, module_agree = hf.forward(ids)
        agree["router_module"].append(module_agree)
        agree["logits_max_rel_err"] = max(agree["logits_max_rel_err"],
                                          rel_err(logits.double(), torch.tensor(rc["logits"]).double()))
        entries = []
        for l, (raw, i, w) in sorted(routers.items()):
            entries.append({"layer": l, "moe_layer": moe_index[l], "logits": raw.tolist(),
                            "topk": i.tolist(), "weights": w.tolist()})
        by_layer = {e["layer"]: e for e in rc["router"]}
        assert set(by_layer) == set(routers), f"{name}: router layers {sorted(routers)} vs ref"
        for e in entries:
            r = by_layer[e["layer"]]
            agree["router_max_abs_err"] = max(agree["router_max_abs_err"], float(
                (torch.tensor(e["logits"]).double() - torch.tensor(r["logits"]).double()).abs().max()))
            agree["topk_equal"] &= e["topk"] == r["topk"]
            agree["weights_max_abs_err"] = max(agree["weights_max_abs_err"], float(
                (torch.tensor(e["weights"]).double() - torch.tensor(r["weights"]).double()).abs().max()))
        manual, gen = hf.greedy(ids, len(rc["greedy"]))
        agree["greedy_equal"] &= manual == rc["greedy"]
        agree["generate_equals_argmax"] &= gen == manual
        cases.append({"tokens": ids, "logits": logits.tolist(), "router": entries, "greedy": manual})
        log(f"  case of {len(ids)} tokens: greedy {manual} (numpy ref {rc['greedy']}, generate {gen})")

    gpu_check = None
    if gpu and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        hf.to("cuda")
        rel, same = 0.0, True
        for c in cases:
            logits, routers, _ = hf.forward(c["tokens"])
            rel = max(rel, rel_err(logits.double(), torch.tensor(c["logits"]).double()))
            for e in c["router"]:
                same &= routers[e["layer"]][1].tolist() == e["topk"]
        gpu_check = {"device": torch.cuda.get_device_name(0), "max_rel_diff": rel, "topk_equal": same}
        hf.to("cpu")

    meta = {"generator": "tools/ref/hf_family_refs.py", "model_class": type(hf.model).__name__,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "python": sys.version.split()[0], "dtype": "float32", "device": "cpu",
            "attn_implementation": "eager", "experts_implementation": "eager",
            "loading_info": hf.loading, "weights_round_trip": weights,
            "vs_numpy_reference": agree, "gpu_crosscheck": gpu_check,
            "numpy_reference_seed": ref["meta"].get("seed")}
    os.makedirs(os.path.join(out_dir, name), exist_ok=True)
    with open(os.path.join(out_dir, name, "hf.json"), "w") as f:
        f.write(to_json({"config": cfg, "meta": meta, "cases": cases}))
    summary = {k: v for k, v in agree.items() if k != "router_module"}
    log(name, "vs numpy:", summary, "gpu:", gpu_check)
    return summary, weights, hf.loading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", default="tests/data/ref")
    ap.add_argument("--out", required=True)
    ap.add_argument("--no-gpu", action="store_true")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--only", nargs="*", choices=NAMES, help="subset of the checkpoints")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.use_deterministic_algorithms(True)
    ok = True
    for name in [n for n in NAMES if not a.only or n in a.only]:
        summary, weights, loading = run_one(name, a.ref, a.out, not a.no_gpu)
        ok &= (summary["topk_equal"] and summary["greedy_equal"]
               and summary["logits_max_rel_err"] < 1e-4 and not weights.get("missing")
               and not weights.get("differ") and not any(loading.get("missing_keys", [])))
    log("ALL OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
