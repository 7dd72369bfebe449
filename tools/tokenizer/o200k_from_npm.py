#!/usr/bin/python3
"""Rebuilds tests/data/tokenizers/o200k_base.tiktoken from the npm `tiktoken` package (tiktoken's
JS/WASM build), whose encoders/o200k_base.json holds the same ranks as one string: "! 0" and then
the base64 tokens in rank order, space-separated. Checks the result against tiktoken's published
sha256 for o200k_base.

    npm pack tiktoken@1.0.22 && tar xzf tiktoken-1.0.22.tgz
    tools/tokenizer/o200k_from_npm.py package/encoders/o200k_base.json tests/data/tokenizers/o200k_base.tiktoken
"""
import hashlib
import json
import sys

EXPECTED_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"


def main():
    src, dst = sys.argv[1], sys.argv[2]
    fields = json.load(open(src, encoding="utf-8"))["bpe_ranks"].split(" ")
    if fields[:2] != ["!", "0"]:
        sys.exit(f"{src}: bpe_ranks does not start with \"! 0\"")
    text = "".join(f"{tok} {rank}\n" for rank, tok in enumerate(fields[2:])).encode()
    digest = hashlib.sha256(text).hexdigest()
    if digest != EXPECTED_SHA256:
        sys.exit(f"{src}: sha256 {digest}, expected {EXPECTED_SHA256}")
    open(dst, "wb").write(text)
    print(f"{dst}: {len(fields) - 2} ranks, sha256 {digest}")


if __name__ == "__main__":
    main()
