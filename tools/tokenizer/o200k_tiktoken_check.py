#!/usr/bin/python3
"""The o200k fixture (tests/data/tokenizers/o200k_refs.json, written by the reimplementation
tools/tokenizer/o200k_reference.py) against the real tiktoken, where it is installed; its
o200k_harmony built from the committed ranks file (no download). Prints the cases, corpus lines
and whole file that agree.

Usage: tools/tokenizer/o200k_tiktoken_check.py REPO_ROOT
"""
import base64, json, os, sys
import tiktoken
import tiktoken_ext.openai_public as op

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from o200k_reference import corpus_texts, fnv1a64  # the fixture's own line split and hash

root = sys.argv[1]
d = root + "/tests/data/tokenizers/"
ranks = {}
for line in open(d + "o200k_base.tiktoken", "rb"):
    if line.strip():
        tok, rank = line.split()
        ranks[base64.b64decode(tok)] = int(rank)
op.load_tiktoken_bpe = lambda *a, **k: ranks
name = "o200k_harmony" if hasattr(op, "o200k_harmony") else "o200k_base"
enc = tiktoken.Encoding(**getattr(op, name)())
print("tiktoken", tiktoken.__version__, name, enc.n_vocab)
refs = json.load(open(d + "o200k_refs.json"))
bad = 0
for i, c in enumerate(refs["cases"]):
    text = bytes.fromhex(c["hex"]).decode("utf-8", "replace")
    ids = enc.encode(text, allowed_special="all")
    plain = enc.encode_ordinary(text)
    if ids != c["ids"] or plain != c["ids_plain"]:
        bad += 1
        print("case", i, repr(text[:60]), "ids", ids == c["ids"], "plain", plain == c["ids_plain"])
corpus = open(d + refs["corpus"]["file"], encoding="utf-8").read()
texts = corpus_texts(corpus)
lines_bad = sum(1 for t, want in zip(texts, refs["corpus"]["lines"])
                if [len(x := enc.encode(t, allowed_special="all")), fnv1a64(x)] != want)
whole = enc.encode(corpus, allowed_special="all")
print(f"cases: {len(refs['cases']) - bad} of {len(refs['cases'])} equal; corpus lines: "
      f"{len(texts) - lines_bad} of {len(texts)} equal; whole file equal: "
      f"{[len(whole), fnv1a64(whole)] == refs['corpus']['whole']}")
