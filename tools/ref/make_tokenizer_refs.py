#!/usr/bin/env python3
"""Trains small tokenizers of every kind epwa reads and writes reference encodings for its tests.

Runs where the reference libraries are installed (HF `tokenizers`, `sentencepiece`; the GPU machine):
    python3 tools/ref/make_tokenizer_refs.py tests/data/tokenizers/train.txt OUTDIR
Writes to OUTDIR:
    llama_spm.model        SentencePiece BPE with byte fallback, Llama settings (identity normalizer)
    llama_bpe_norm.json    that vocabulary as an HF tokenizer.json, classic Llama/Mixtral form
                           (Prepend+Replace normalizer, BPE byte_fallback, <s> template)
    llama_bpe_meta.json    the same with a Metaspace(prepend_scheme=first) pre-tokenizer (newer form)
    gpt2_bl.json           byte-level BPE with the GPT-2 ByteLevel regex
    qwen_bl.json           byte-level BPE, Qwen2 style: NFC, Split(regex) + ByteLevel, chat specials
    refs.json              texts and, per tokenizer, ids without/with specials and decodes
"""
import json
import os
import sys

import sentencepiece as spm
from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

QWEN_RE = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")

LONG = ("The quick brown fox jumps over the lazy dog. " * 3 +
        "Permission is hereby granted, free of charge, to any person obtaining a copy of this "
        "software and associated documentation files (the \"Software\"), to deal in the Software "
        "without restriction.\n\n\tIndented\ttabbed line\r\nwith CRLF   and   runs     of spaces.")

TEXTS = [
    "",
    "a",
    "ab",
    "Hello world",
    "Hello, world! How are you doing today?",
    " leading space",
    "  two leading spaces",
    "trailing space ",
    "tabs\tand\ttabs",
    "multiple    spaces   inside",
    "line one\nline two\n\nline four\r\nwindows",
    "\n\n\n",
    "   ",
    " ",
    "Numbers: 1234567890 3.14159 -42 1,000,000 2024-11-17",
    "Café naïve résumé Ångström façade über Straße",
    "Cafe\u0301 decomposed e\u0301 and A\u030a",
    "日本語のテキストです。中文文本测试。한국어 텍스트",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧 ❤️ 🚀",
    "Mixed: ÀÉÎÕÜ ñ ß ø å æ œ — “quotes” ‘single’ … €100 £5 ¥300",
    "Code: def f(x):\n    return x**2 + 1  # comment\n",
    "it's they're we've I'm you'll he'd IT'S We'Ve",
    "Rare: ☃ ⚙ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 \u00a0nbsp\u2003emspace",
    "Ελληνικά и русский текст",
    "<s>Hello</s>",
    "Hello <s> world </s> end",
    "<|endoftext|>tail",
    "<|im_start|>user\nhi there<|im_end|>\n<|im_start|>assistant\n",
    "think <tool_call>{\"a\": 1}</tool_call> done",
    "<unk> and <0x41> literal",
    "\u2581already\u2581metaspace",
    LONG,
]


def train_spm(train_txt, out):
    prefix = os.path.join(out, "llama_spm")
    spm.SentencePieceTrainer.train(
        input=train_txt, model_prefix=prefix, model_type="bpe", vocab_size=1000, byte_fallback=True,
        split_digits=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, allow_whitespace_only_pieces=True, character_coverage=0.9995,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, max_sentencepiece_length=16, num_threads=8,
        minloglevel=2)
    os.remove(prefix + ".vocab")
    return prefix + ".model"


def llama_json_from_spm(model_path, metaspace):
    """The Llama/Mixtral tokenizer.json form of a SentencePiece BPE model."""
    sp = spm.SentencePieceProcessor(model_file=model_path)
    n = sp.get_piece_size()
    vocab = {sp.id_to_piece(i): i for i in range(n)}
    merges = []
    for i in range(n):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i):
            continue
        p = sp.id_to_piece(i)
        for k in range(1, len(p)):
            a, b = p[:k], p[k:]
            if a in vocab and b in vocab:
                merges.append((i, vocab[a], vocab[b], a, b))
    merges.sort()
    bpe = models.BPE(vocab=vocab, merges=[(m[3], m[4]) for m in merges], unk_token="<unk>",
                     byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(bpe)
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                     split=False)
    else:
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t in ["<unk>", "<s>", "</s>"]])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return tok


def byte_level(train_txt, qwen):
    tok = Tokenizer(models.BPE())
    if qwen:
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN_RE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        specials = ["<|endoftext|>"]
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=1500 if qwen else 1200, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([train_txt], trainer)
    if qwen:  # a non-special added token, as Qwen3 has
        tok.add_tokens([AddedToken("<tool_call>", normalized=False, special=False),
                        AddedToken("</tool_call>", normalized=False, special=False)])
    return tok


def hf_refs(tok):
    out = []
    for t in TEXTS:
        plain = tok.encode(t, add_special_tokens=False).ids
        spec = tok.encode(t, add_special_tokens=True).ids
        out.append({"ids": plain, "ids_special": spec,
                    "decoded": tok.decode(plain, skip_special_tokens=False),
                    "decoded_skip": tok.decode(spec, skip_special_tokens=True)})
    return out


def main():
    train_txt, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    refs = {"texts": TEXTS, "tokenizers": {}}

    model = train_spm(train_txt, out)
    sp = spm.SentencePieceProcessor(model_file=model)
    refs["tokenizers"]["llama_spm"] = {
        "file": "llama_spm.model",
        "encodings": [{"ids": sp.encode(t), "decoded": sp.decode(sp.encode(t))} for t in TEXTS]}

    for name, meta in [("llama_bpe_norm", False), ("llama_bpe_meta", True)]:
        tok = llama_json_from_spm(model, meta)
        tok.save(os.path.join(out, name + ".json"))
        tok = Tokenizer.from_file(os.path.join(out, name + ".json"))  # what the file really says
        refs["tokenizers"][name] = {"file": name + ".json", "encodings": hf_refs(tok)}

    for name, qwen in [("gpt2_bl", False), ("qwen_bl", True)]:
        tok = byte_level(train_txt, qwen)
        tok.save(os.path.join(out, name + ".json"))
        tok = Tokenizer.from_file(os.path.join(out, name + ".json"))
        refs["tokenizers"][name] = {"file": name + ".json", "encodings": hf_refs(tok)}

    import tokenizers
    refs["versions"] = {"tokenizers": tokenizers.__version__, "sentencepiece": spm.__version__}
    with open(os.path.join(out, "refs.json"), "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False, indent=0)
    print("ok", refs["versions"])


if __name__ == "__main__":
    main()
