#!/usr/bin/python3
"""An independent reference for the o200k_harmony tokenizer (GPT-OSS), written from tiktoken's
documented algorithm, not from epwa's C++: split the text at special tokens, cut each piece with
the o200k regex (Python's `regex` module, as tiktoken's pattern is written for), then merge each
chunk's bytes by rank: repeatedly join the adjacent pair whose concatenation has the lowest rank
(leftmost on ties) until no pair is a token. A chunk that is itself a token is that token.

Writes tests/data/tokenizers/o200k_refs.json: for each test text, its UTF-8 bytes (hex) and the
expected ids; tests/tokenizer/test_o200k.cpp compares epwa with them.

Usage: tools/tokenizer/o200k_reference.py [RANKS] [OUT]
"""
import base64
import json
import os
import sys

import regex

# tiktoken's o200k_base pat_str (the same in o200k_harmony).
PATTERN = "|".join([
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"\p{N}{1,3}",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"\s*[\r\n]+",
    r"\s+(?!\S)",
    r"\s+",
])

# o200k_harmony's special tokens as the release's tokenizer.json lists them (200018 is
# <|endofprompt|> there; the other ids up to 201087 are <|reserved_N|>).
NAMED = {
    199998: "<|startoftext|>", 199999: "<|endoftext|>", 200002: "<|return|>",
    200003: "<|constrain|>", 200005: "<|channel|>", 200006: "<|start|>", 200007: "<|end|>",
    200008: "<|message|>", 200012: "<|call|>", 200018: "<|endofprompt|>",
}
SPECIALS = {NAMED.get(i, f"<|reserved_{i}|>"): i for i in range(199998, 201088)}


def load_ranks(path):
    ranks = {}
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            tok, rank = line.split()
            ranks[base64.b64decode(tok, validate=True)] = int(rank)
    return ranks


def merge(chunk, ranks):
    if chunk in ranks:
        return [ranks[chunk]]
    parts = [chunk[i:i + 1] for i in range(len(chunk))]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return [ranks[p] for p in parts]


def encode_ordinary(text, ranks):
    ids = []
    for m in regex.finditer(PATTERN, text):
        ids += merge(m.group(0).encode("utf-8"), ranks)
    return ids


def encode(text, ranks):
    """All special tokens allowed (the HF `parse_special` default)."""
    special_re = "|".join(regex.escape(s) for s in sorted(SPECIALS, key=len, reverse=True))
    ids, pos = [], 0
    for m in regex.finditer(special_re, text):
        ids += encode_ordinary(text[pos:m.start()], ranks)
        ids.append(SPECIALS[m.group(0)])
        pos = m.end()
    return ids + encode_ordinary(text[pos:], ranks)


TEXTS = [
    "",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing   ",
    "tabs\tand\t\ttabs\n\nnew lines\r\nCRLF\r\n\r\n",
    "         \n    indented\n\t\t}\n",
    "I'm sure you'RE right; WE'LL see. They'd've said DON'T",
    "HTTPServer parseJSON getHTTPResponseCode iPhone McDonald's",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < n; ++i) { x[i] = y[i] * 2.5f; } // done\n",
    "<html><body class=\"a-b\">x &amp; y</body></html>",
    "path/to/file.txt and C:\\Windows\\System32 and https://example.com/a?b=c&d=e",
    "1 12 123 1234 12345 1234567890 3.14159 -42 1,000,000 2026-12-06",
    "١٢٣ ٤٥٦ and ১২৩ and ½ ² Ⅻ",
    "日本語のテキストと中文文本，还有한국어 텍스트.",
    "مرحبا بالعالم! هذا نص عربي.",
    "नमस्ते दुनिया, यह हिंदी पाठ है।",
    "Ελληνικά και русский текст и Українська.",
    "emoji 😀👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 keycap 1️⃣ heart ❤️",
    "café naïve résumé (precomposed) vs cafe\u0301 (decomposed)",
    "zero\u200bwidth\u200djoiner and soft\u00adhyphen and BOM\ufeff",
    "!!!???...,,,;;;---___===+++***///\\\\\\",
    "    \n\n\n    \n",
    "a\n\nb\r\n\r\nc\r\rd",
    "x" * 300,
    " " * 40 + "end",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "<|start|>user<|message|>What is 2+2?<|end|><|start|>assistant",
    "<|start|>assistant<|channel|>final<|message|>4<|return|>",
    "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>"
    "{\"city\":\"Paris\"}<|call|>",
    "text<|endoftext|>more<|startoftext|> and <|reserved_200100|> and <|endofprompt|>",
    "<|start|user> <|notatoken|> <|start |> almost specials",
]

# Invalid UTF-8 (bytes): tiktoken takes Python str, so these are encoded after Python's
# errors="replace" (one U+FFFD per maximal invalid subsequence), which is what epwa does to bytes.
RAW = [
    b"bad \xff byte",
    b"truncated \xe6\x97 char",
    b"overlong \xc0\xaf and surrogate \xed\xa0\x80 end",
    b"\x80\x80\x80",
]


def fnv1a64(ids):
    h = 0xcbf29ce484222325
    for i in ids:
        for byte in i.to_bytes(4, "little"):
            h = ((h ^ byte) * 0x100000001b3) & 0xffffffffffffffff
    return f"{h:016x}"


def corpus_texts(corpus):
    """The corpus cut into lines, each with its "\n" (the last without, when it has none)."""
    parts = corpus.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(here, "..", "..", "tests", "data", "tokenizers")
    ranks_path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(data, "o200k_base.tiktoken")
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(data, "o200k_refs.json")
    ranks = load_ranks(ranks_path)
    assert len(ranks) == 199998 and sorted(ranks.values()) == list(range(199998))
    cases = []
    # ids: specials in the text parsed; ids_plain: the text as plain text (encode_ordinary);
    # decoded_hex: what decoding the ids gives back (the text with U+FFFD replacements).
    for b in [t.encode("utf-8") for t in TEXTS] + RAW:
        t = b.decode("utf-8", "replace")
        cases.append({"hex": b.hex(), "ids": encode(t, ranks), "ids_plain": encode_ordinary(t, ranks),
                      "decoded_hex": t.encode("utf-8").hex()})
    # A larger corpus, kept small in the fixture: per line (with its "\n") the token count and a
    # 64-bit FNV-1a of the ids (little-endian int32s), then the same for the whole file.
    with open(os.path.join(data, "train.txt"), encoding="utf-8") as f:
        corpus = f.read()
    texts = corpus_texts(corpus)
    lines = [[len(ids), fnv1a64(ids)] for ids in (encode(t, ranks) for t in texts)]
    whole = encode(corpus, ranks)
    out = {"source": "tools/tokenizer/o200k_reference.py", "cases": cases,
           "corpus": {"file": "train.txt", "lines": lines, "whole": [len(whole), fnv1a64(whole)]}}
    with open(out_path, "w") as f:
        json.dump(out, f, indent=0, ensure_ascii=False)
        f.write("\n")
    print(f"{out_path}: {len(cases)} cases")


if __name__ == "__main__":
    main()
