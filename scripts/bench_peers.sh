#!/usr/bin/env bash
# Side by side with llama.cpp in one run: for each GGUF file, `epwa bench` and llama.cpp's
# llama-bench run one after the other (same file, threads, prompt and generation lengths), and a
# table of the t/s ratios is printed at the end (tools/bench/peer_table.py):
#   LLAMA_BENCH=/path/llama-bench scripts/bench_peers.sh OUT FILE.gguf... [-- -p 512 -n 128 -r 3 -t 2]
# OUT gets one JSON per run (epwa-NAME.json, llama-NAME.json). EPWA (default build/epwa) picks the
# binary. llama.cpp is built from its public source outside this repository (docs/PERF.md); the
# same script runs ik_llama.cpp's llama-bench, with its own flags in PEER_ARGS (e.g.
# PEER_ARGS="-fa 1 -fmoe 1 -rtr 1") and PEER_NAME=ik_llama.cpp for the table.
set -euo pipefail
usage() { echo "usage: LLAMA_BENCH=... $0 OUT FILE.gguf... [-- BENCH-ARGS]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
out=$1; shift
files=()
while [[ $# -gt 0 && $1 != -- ]]; do files+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
args=("$@")
[[ ${#args[@]} -gt 0 ]] || args=(-p 512 -n 128 -r 3 -t 2)
root=$(cd "$(dirname "$0")/.." && pwd)
epwa=${EPWA:-$root/build/epwa}
llama=${LLAMA_BENCH:?set LLAMA_BENCH to the llama-bench of llama.cpp}
read -r -a peer_args <<< "${PEER_ARGS:-}"
[[ -x $epwa ]] || { echo "error: $epwa not found (build first, or set EPWA)" >&2; exit 1; }
[[ -x $llama ]] || { echo "error: $llama is not executable" >&2; exit 1; }
mkdir -p "$out"
for f in "${files[@]}"; do
  name=$(basename "$f" .gguf)
  echo "== $name: epwa" >&2
  "$epwa" bench --quiet --load auto --json --model "$f" "${args[@]}" > "$out/epwa-$name.json"
  echo "== $name: llama.cpp" >&2
  "$llama" -m "$f" -o json "${args[@]}" "${peer_args[@]}" > "$out/llama-$name.json" ||
    { echo "llama-bench failed on $name" >&2; rm -f "$out/llama-$name.json"; }
done
python3 "$root/tools/bench/peer_table.py" "$out" "${PEER_NAME:-llama.cpp}"
