#!/usr/bin/env bash
# The main job: install dependencies, build, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
build/epwa demo
