#!/usr/bin/env bash
# The README's first command: installs what is missing, builds into build/ and trains the
# default model (MLP 784-256-256-10) on Fashion-MNIST until 85% test accuracy.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
mkdir -p runs
exec build/bin/asgd train --dataset fashion-mnist --model mlp --hidden 256,256 --batch 64 \
  --lr 0.05 --threads 1 --target-accuracy 0.85 \
  --metrics runs/quickstart.jsonl --summary runs/quickstart.json "$@"
