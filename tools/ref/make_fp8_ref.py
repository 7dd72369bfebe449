#!/usr/bin/env python3
"""Builds an FP8 checkpoint in DeepSeek-V3's released layout from the tiny V3 reference checkpoint,
and the same checkpoint dequantized to bf16 as DeepSeek's fp8_cast_bf16.py does, for the engine's
FP8 loading test.

    /usr/bin/python3 tools/ref/make_fp8_ref.py --src tests/data/ref/deepseek3 \\
        --out tests/data/ref/deepseek3_fp8

Writes <out>/{config.json, model.safetensors} (the linear layers' weights as F8_E4M3 with an f32
`<name>_scale_inv` per BLOCK x BLOCK block, quantization_config naming the block; the router, the
correction bias, norms, embeddings and the head as they were, as in the release) and
<out>/bf16/{config.json, model.safetensors} (those weights dequantized: the e4m3 value times its
block's scale in float32, rounded to bf16, ties to even). Needs only numpy.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_family_refs import from_bf16, read_safetensors, to_bf16, write_safetensors  # noqa: E402

BLOCK = 16  # small enough that the tiny matrices have several blocks (the release: 128)
FP8_PARTS = ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "gate_proj",
             "up_proj", "down_proj")


def e4m3_values():
    """The value of each byte 0..255 of float8 e4m3fn (NaN at 0x7f and 0xff, no infinities)."""
    v = np.zeros(256, np.float64)
    for b in range(256):
        e, m = (b >> 3) & 15, b & 7
        if e == 15 and m == 7:
            v[b] = np.nan
            continue
        x = (m / 8) * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7)
        v[b] = -x if b & 0x80 else x
    return v


VALUES = e4m3_values()
POSITIVE = VALUES[:127]  # bytes 0x00..0x7e: 0 .. 448, increasing


def to_e4m3(x):
    """The nearest e4m3fn byte of each value (|x| <= 448; ties to the lower magnitude)."""
    a = np.minimum(np.abs(x), 448.0)
    hi = np.clip(np.searchsorted(POSITIVE, a), 0, 126)
    lo = np.maximum(hi - 1, 0)
    pick = np.where(a - POSITIVE[lo] <= POSITIVE[hi] - a, lo, hi).astype(np.uint8)
    return np.where(x < 0, pick | 0x80, pick).astype(np.uint8)


def quantize(w):
    """(e4m3 bytes, f32 scale_inv per block): the block's largest magnitude maps to 448."""
    rows, cols = w.shape
    sr, sc = -(-rows // BLOCK), -(-cols // BLOCK)
    q = np.zeros(w.shape, np.uint8)
    s = np.ones((sr, sc), np.float32)
    for i in range(sr):
        for j in range(sc):
            blk = w[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK].astype(np.float64)
            amax = np.abs(blk).max()
            s[i, j] = np.float32(amax / 448.0) if amax > 0 else np.float32(1.0)
            q[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] = to_e4m3(blk / s[i, j])
    return q, s


def dequantize(q, s):
    """fp8_cast_bf16.py's weight_dequant: value times its block's scale in float32, then bf16."""
    scale = np.repeat(np.repeat(s, BLOCK, 0), BLOCK, 1)[:q.shape[0], :q.shape[1]]
    return to_bf16(VALUES[q].astype(np.float32) * scale)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    W, _ = read_safetensors(os.path.join(a.src, "model.safetensors"))
    with open(os.path.join(a.src, "config.json")) as f:
        config = json.load(f)
    fp8, bf16, fp8_types, bf16_types = {}, {}, {}, {}
    for name, w in W.items():
        part = name.split(".")[-2] if name.endswith(".weight") else ""
        if w.ndim == 2 and part in FP8_PARTS:
            q, s = quantize(w)
            fp8[name], fp8_types[name] = q, "F8_E4M3"
            fp8[name + "_scale_inv"] = s
            bf16[name], bf16_types[name] = from_bf16(dequantize(q, s)).reshape(w.shape), "BF16"
        else:
            fp8[name] = bf16[name] = w
    assert fp8_types
    os.makedirs(os.path.join(a.out, "bf16"), exist_ok=True)
    write_safetensors(os.path.join(a.out, "model.safetensors"), fp8, dtypes=fp8_types)
    write_safetensors(os.path.join(a.out, "bf16", "model.safetensors"), bf16, dtypes=bf16_types)
    with open(os.path.join(a.out, "bf16", "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    config["quantization_config"] = {"activation_scheme": "dynamic", "fmt": "e4m3",
                                     "quant_method": "fp8", "weight_block_size": [BLOCK, BLOCK]}
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    print(f"wrote {a.out}: {len(fp8_types)} FP8 weights in {BLOCK} x {BLOCK} blocks, and their bf16 "
          "copy")


if __name__ == "__main__":
    main()
