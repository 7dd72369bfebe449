#!/usr/bin/env python3
"""Writes the token ids the GPU run uses for reference numbers and sample generations, encoded here with
Debian's SentencePiece (the same library the engine links), so both sides start from identical ids.

    make_ref_input.py TOKENIZER_MODEL OUT_JSON
Sequences: BOS alone; BOS + 6 and BOS + 23 pieces of held-out paragraphs (data/heldout/heldout.txt).
Prompts: BOS + the first prompts of data/heldout/prompts.txt.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def enc(model, lines):
    out = subprocess.run(["spm_encode", f"--model={model}", "--output_format=id"], check=True,
                         input="\n".join(lines).encode() + b"\n", capture_output=True).stdout.decode()
    return [[int(t) for t in l.split()] for l in out.strip("\n").split("\n")]


def dec(model, ids):
    return subprocess.run(["spm_decode", f"--model={model}", "--input_format=id"], check=True,
                          input=(" ".join(map(str, ids)) + "\n").encode(), capture_output=True).stdout.decode().strip("\n")


def main():
    model, out = sys.argv[1], sys.argv[2]
    paras = (ROOT / "data/heldout/heldout.txt").read_text(encoding="utf-8").splitlines()
    prompts = (ROOT / "data/heldout/prompts.txt").read_text(encoding="utf-8").splitlines()[:8]
    a, b = enc(model, paras[:2])
    seqs = [{"ids": [1], "text": ""},
            {"ids": [1] + a[:6], "text": dec(model, a[:6])},
            {"ids": [1] + b[:23], "text": dec(model, b[:23])}]
    ps = [{"ids": [1] + ids, "text": t} for t, ids in zip(prompts, enc(model, prompts))]
    Path(out).write_text(json.dumps({"sequences": seqs, "prompts": ps}, indent=1))
    for s in seqs:
        print(len(s["ids"]), repr(s["text"]))


if __name__ == "__main__":
    main()
