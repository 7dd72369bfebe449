#!/usr/bin/env bash
# Trains the bundled model's SentencePiece BPE tokenizer (Debian's spm_train, SentencePiece 0.1.97) on the
# training split only. Llama-like settings: unk 0, bos 1, eos 2, no pad, byte fallback, digits split,
# dummy prefix, identity normalisation (the corpus is already NFKC-normalised by assemble.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-$ROOT/data/corpus/tokenizer}"
mkdir -p "$OUT"
spm_train --input="$ROOT/data/corpus/train.txt" --model_prefix="$OUT/tokenizer" \
  --model_type=bpe --vocab_size=8000 --byte_fallback=true --character_coverage=0.9999 \
  --split_digits=true --add_dummy_prefix=true --remove_extra_whitespaces=false \
  --allow_whitespace_only_pieces=true --normalization_rule_name=identity \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --max_sentence_length=16384 \
  --input_sentence_size=0 --shuffle_input_sentence=false --random_seed=1234 --num_threads=2
