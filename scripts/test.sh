#!/usr/bin/env bash
# The README's second command: installs what is missing, builds, and runs every test that this
# machine can run (GPU tests skip themselves without a device). Fails on any failed test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest --test-dir build --output-on-failure --parallel "$(nproc)" "$@"
