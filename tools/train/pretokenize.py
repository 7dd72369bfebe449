#!/usr/bin/env python3
"""Encodes data/corpus/{train,heldout}.txt with the trained tokenizer into flat uint16 token streams.

    pretokenize.py CORPUS_DIR TOKENIZER_MODEL OUT_DIR

Each document (paragraphs separated by empty lines in the corpus files) becomes
BOS + pieces of "para1\\npara2\\n..." + EOS. spm_encode works line by line, so each document is
fed as one line with U+2028 standing for the newline; its byte-fallback triple is then swapped for
the <0x0A> byte piece, which is how SentencePiece encodes a real newline (both are unknown
characters to the BPE model, so the neighbouring pieces are the same).
Writes OUT_DIR/{train,heldout}.u16 (little-endian uint16) and OUT_DIR/meta.json.
"""
import array
import json
import subprocess
import sys
from pathlib import Path

BOS, EOS = 1, 2
NL = 3 + 0x0A                                      # <0x0A>: byte pieces follow unk, bos, eos
SEP = [3 + 0xE2, 3 + 0x80, 3 + 0xA8]               # UTF-8 of U+2028 as byte pieces


def docs(path):
    cur = []
    for line in Path(path).read_text(encoding="utf-8").split("\n"):
        if line:
            cur.append(line)
        elif cur:
            yield "\u2028".join(cur)
            cur = []
    if cur:
        yield "\u2028".join(cur)


def encode(corpus, model, out):
    text = "\n".join(docs(corpus)) + "\n"
    res = subprocess.run(["spm_encode", f"--model={model}", "--output_format=id"], input=text.encode(),
                         capture_output=True, check=True)
    ids = array.array("H")
    ndocs = 0
    for line in res.stdout.decode().split("\n"):
        if not line:
            continue
        toks = [int(t) for t in line.split()]
        fixed, i = [], 0
        while i < len(toks):
            if toks[i:i + 3] == SEP:
                fixed.append(NL)
                i += 3
            else:
                fixed.append(toks[i])
                i += 1
        ids.append(BOS)
        ids.extend(fixed)
        ids.append(EOS)
        ndocs += 1
    assert sys.byteorder == "little"
    with open(out, "wb") as f:
        ids.tofile(f)
    return len(ids), ndocs


def main():
    corpus, model, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    meta = {}
    for part in ("train", "heldout"):
        n, nd = encode(corpus / f"{part}.txt", model, out / f"{part}.u16")
        meta[part] = {"tokens": n, "documents": nd, "bytes": (corpus / f"{part}.txt").stat().st_size}
        print(f"{part}: {n} tokens, {nd} documents, {meta[part]['bytes'] / n:.2f} bytes/token")
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()
