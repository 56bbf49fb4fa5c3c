#!/usr/bin/env bash
# Installs the Debian 12 packages asgd needs that are missing; a no-op when all are present.
#   scripts/install_deps.sh          build, test and train
#   scripts/install_deps.sh --bench  also PyTorch and matplotlib for the comparisons in bench/
# The CUDA toolkit is optional and not installed here: with nvcc on PATH (or in
# /usr/local/cuda) the CUDA backend is built as well.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-openmp-dev zlib1g-dev libxxhash-dev libfmt-dev nlohmann-json3-dev
  libtomlplusplus-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin
  clang libclang-rt-dev libomp-dev  # scripts/fuzz.sh: libFuzzer and OpenMP for clang
  dataset-fashion-mnist
)
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3 python3-torch python3-numpy python3-matplotlib)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install_deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
