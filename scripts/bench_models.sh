#!/usr/bin/env bash
# Writes the benchmark models into DIR and optionally runs `epwa bench` over them:
#   scripts/bench_models.sh DIR [--bench] [-- BENCH-ARGS...]
# Files: SHAPE-{f16,q8_0,q4_0,q4_k_m}.gguf (random weights, llama.cpp conventions) for the shapes
# mixtral-l4, olmoe-l4 (Mixtral with OLMoE's sizes, the issue-9 shape), olmoe-1b-7b-l4,
# qwen1.5-moe-a2.7b-l4, qwen3-30b-a3b-l4 and deepseek-moe-16b-l4 (4 layers of the released models).
# Existing files are kept (never rewritten); a file is written as NAME.tmp and renamed when done,
# so an interrupted run leaves no truncated model. Needs ~70 GB of disk for all twenty-four files.
# EPWA (default build/epwa) picks the binary; SHAPES and TYPES narrow the set, e.g.
#   SHAPES=olmoe-l4 TYPES="q4_0 f16" scripts/bench_models.sh /work/bench-models --bench -- -r 3
set -euo pipefail
usage() { echo "usage: $0 DIR [--bench] [-- BENCH-ARGS...]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
dir=$1; shift
bench=0
bench_args=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --bench) bench=1 ;;
    --) shift; bench_args=("$@"); break ;;
    *) usage ;;
  esac
  shift
done
root=$(cd "$(dirname "$0")/.." && pwd)
epwa=${EPWA:-$root/build/epwa}
[[ -x $epwa ]] || { echo "error: $epwa not found (build first, or set EPWA)" >&2; exit 1; }
shapes=${SHAPES:-"mixtral-l4 olmoe-l4 olmoe-1b-7b-l4 qwen1.5-moe-a2.7b-l4 qwen3-30b-a3b-l4 deepseek-moe-16b-l4"}
types=${TYPES:-"f16 q8_0 q4_0 q4_k_m"}
mkdir -p "$dir"

write() {  # write FILE COMMAND...: runs COMMAND with --out/-o FILE.tmp, then renames
  local file=$1; shift
  if [[ -e $file ]]; then echo "keep  $file"; return; fi
  echo "write $file" >&2
  nice -n 10 "$@" "$file.tmp.gguf"
  mv "$file.tmp.gguf" "$file"
}

for shape in $shapes; do
  f16=$dir/$shape-f16.gguf
  write "$f16" "$epwa" make-model --shape "$shape" --type f16 --out
  for t in $types; do
    [[ $t == f16 ]] && continue
    write "$dir/$shape-$t.gguf" "$epwa" quantize --quiet --model "$f16" --type "$t" -o
  done
done

if [[ $bench -eq 1 ]]; then
  for shape in $shapes; do
    for t in $types; do
      f=$dir/$shape-$t.gguf
      echo "== $f" >&2
      # --load auto keeps the stored type when it fits in memory (standard mode would quantize a
      # Mixtral-scale F16 file to 4 bits at load time; docs/LOADING.md).
      nice -n 10 "$epwa" bench --quiet --load auto --model "$f" "${bench_args[@]}"
      echo
    done
  done
fi
