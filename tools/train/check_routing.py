#!/usr/bin/env python3
"""Diagnostic: expert usage and load-balancing loss of a saved bundle on training batches, in eval and
train mode, with and without autocast (why the training-time aux loss and held-out usage disagree)."""
import sys
import numpy as np
import torch
sys.path.insert(0, "tools/train")
from train import RouterTap, load_balance_loss  # noqa: E402
from transformers import MixtralForCausalLM  # noqa: E402

data, bundle = sys.argv[1], sys.argv[2]
m = MixtralForCausalLM.from_pretrained(bundle, dtype=torch.float32).cuda()
ids = torch.from_numpy(np.fromfile(f"{data}/train.u16", dtype="<u2").astype(np.int64))
g = torch.Generator().manual_seed(1)
off = torch.randint(0, ids.numel() - 600, (32,), generator=g)
x = ids[off.unsqueeze(1) + torch.arange(512)].cuda()
xc = x.contiguous()
for mode in ("eval", "train"):
    getattr(m, mode)()
    for ac in (False, True):
        for inp, name in ((x, "batch"), (xc[:1], "one row"), (xc[:, :64], "64 tokens")):
            tap = RouterTap(m)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=ac):
                out = m(input_ids=inp, use_cache=False, output_router_logits=True)
                aux = load_balance_loss(tap.logits(), 8)
            u = torch.stack([torch.bincount(r.float().topk(2, -1).indices.reshape(-1), minlength=8)
                             for r in tap.logits()]).double()
            tap.remove()
            hf = getattr(out, "aux_loss", None)
            print(f"{mode} autocast={ac} {name}: aux {aux.item():.4f} hf {None if hf is None else round(hf.item(), 4)}"
                  f" usage max/mean {[round(v, 2) for v in (u.max(1).values / u.mean(1)).tolist()]}"
                  f" P0 {[round(v, 3) for v in tap.logits()[0].float().softmax(-1).mean(0).tolist()]}")
