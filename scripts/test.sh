#!/usr/bin/env bash
# Runs the whole test suite: the file parsers and tokenizers once more under AddressSanitizer/UBSan, then every
# GoogleTest program through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/build.sh

sanitized=(test_safetensors test_gguf test_tokenizer)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DEPWA_SANITIZE=ON -DEPWA_BENCH=OFF >/dev/null
cmake --build build-asan -j"$(nproc)" --target "${sanitized[@]}"
for t in "${sanitized[@]}"; do
  echo "== $t (ASan/UBSan)"
  ASAN_OPTIONS=detect_leaks=1 build-asan/tests/"$t" --gtest_brief=1
done

ctest --test-dir build --output-on-failure -j"$(nproc)"
