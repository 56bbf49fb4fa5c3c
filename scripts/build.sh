#!/usr/bin/env bash
# Configures (once) and builds asgd into build/ (Release). Extra arguments go to CMake's
# configure step, e.g. scripts/build.sh -DASGD_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -f build/build.ninja || $# -gt 0 ]]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@"
fi
cmake --build build --parallel "$(nproc)"
