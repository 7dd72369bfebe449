#!/usr/bin/env bash
# Runs the epwa demo with the weights loaded in 4 bits (EPW_LOAD_IN_4BIT=true), after checking what
# it needs. Extra arguments go to `epwa demo`. EPWA_BIN may name another epwa binary.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "run_4bit.sh: $*" >&2; exit 1; }

bin="${EPWA_BIN:-build/epwa}"
if [[ ! -x "$bin" ]]; then
  command -v cmake >/dev/null || die "cmake not found: run scripts/setup.sh (Debian 12) first"
  command -v ninja >/dev/null || die "ninja not found: run scripts/setup.sh (Debian 12) first"
  echo "run_4bit.sh: $bin not built yet; building it (scripts/build.sh)" >&2
  scripts/build.sh || die "build failed; see the messages above"
fi
[[ -x "$bin" ]] || die "$bin still missing after the build"

model="${EPW_MODEL_PATH:-models/epwa-tiny-moe}"
[[ -e "$model" ]] || die "model not found: $model (set EPW_MODEL_PATH to a HF folder or .gguf file)"

avail_kb=$(awk '/MemAvailable/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
if [[ "$avail_kb" -gt 0 && "$avail_kb" -lt 262144 ]]; then
  echo "run_4bit.sh: warning: only $((avail_kb / 1024)) MiB of memory available" >&2
fi

export EPW_LOAD_IN_4BIT=true
export EPW_MODEL_PATH="$model"
echo "run_4bit.sh: EPW_LOAD_IN_4BIT=true EPW_MODEL_PATH=$model $bin demo $*" >&2
exec "$bin" demo "$@"
