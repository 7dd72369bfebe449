#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running epwa needs; with --tests also
# what only the tests use (Chromium for the report-rendering test, Node.js and npm for the server's
# openai-client test, pytest, Dask, distributed and pandas for the Python package's tests).
set -euo pipefail
PKGS=(build-essential cmake ninja-build pkg-config git
      libssl-dev nlohmann-json3-dev libcli11-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev
      libopenblas-dev libhwy-dev libsentencepiece-dev sentencepiece libpcre2-dev libicu-dev libcpp-httplib-dev libboost1.81-dev
      python3 python3-dev pybind11-dev python3-numpy)
if [[ "${1:-}" == --tests ]]; then
  PKGS+=(chromium python3-pytest python3-dask python3-distributed python3-pandas openssl)
  # Node.js and npm for the server's openai-client test (the machine's own node is kept).
  command -v node >/dev/null && command -v npm >/dev/null || PKGS+=(nodejs npm)
fi
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
