#!/usr/bin/env bash
# Runs the whole test suite: the file parsers, tokenizers, chat templates and the JSON-schema
# matcher of constrained decoding once more under AddressSanitizer/UBSan, the Model/Context thread
# test under ThreadSanitizer, then every GoogleTest program through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
scripts/build.sh

sanitized=(test_safetensors test_gguf test_tokenizer test_chat test_constrain)
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DEPWA_SANITIZE=ON -DEPWA_BENCH=OFF >/dev/null
cmake --build build-asan -j"$(nproc)" --target "${sanitized[@]}"
for t in "${sanitized[@]}"; do
  echo "== $t (ASan/UBSan)"
  ASAN_OPTIONS=detect_leaks=1 build-asan/tests/"$t" --gtest_brief=1
done

# Several Contexts on one Model from several threads (the Model/Context split) and the batch engine's
# threads, under ThreadSanitizer.
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEPWA_TSAN=ON -DEPWA_BENCH=OFF >/dev/null
cmake --build build-tsan -j"$(nproc)" --target test_model test_serve
echo "== test_model Context.*, test_serve (ThreadSanitizer)"
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_model --gtest_brief=1 --gtest_filter='Context.*'
TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/test_serve --gtest_brief=1

# The CUDA backend compiles where nvcc is installed (CI has no GPU: its tests run on a GPU machine,
# docs/GPU.md).
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
if [ -x "$nvcc" ]; then
  cmake -S . -B build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DEPWA_CUDA=ON -DEPWA_BENCH=OFF \
    -DCMAKE_CUDA_COMPILER="$nvcc" >/dev/null
  echo "== CUDA backend (compile check with $("$nvcc" --version | tail -1))"
  cmake --build build-cuda -j"$(nproc)" --target epwa_backend_gpu
else
  echo "== CUDA backend: not compiled (no nvcc on this machine)"
fi

# The official openai npm client, for the server's client test (pinned by its package-lock.json).
npm ci --prefix tests/serve/openai_client --no-audit --no-fund --loglevel=error

ctest --test-dir build --output-on-failure -j"$(nproc)"
