#!/usr/bin/env bash
# The gpu tier on a machine with a GPU: configures and builds asgd with the CUDA backend, runs
# the tests labelled gpu, with --bench the kernel benchmarks on the GPU beside their peers, and
# last (the slowest) asgd_gpu_tests under compute-sanitizer.
#
#   scripts/gpu_checks.sh [--deps DIR] [--build DIR] [--tools "memcheck racecheck ..."]
#                         [--bench] [--data DIR] [--mpi] [-- EXTRA_CMAKE_ARGS...]
#
#   --deps DIR   headers and libraries packed by scripts/pack_gpu_deps.sh, for a machine that
#                has a compiler, nvcc, cmake and ninja but not our Debian -dev packages
#   --build DIR  build folder (default build-gpu; kept between runs, so a rerun is incremental)
#   --tools      compute-sanitizer tools to run (default "memcheck racecheck synccheck"; "" none)
#   --bench      also build the benchmarks and run on GPU 0: the Parzen test and merge against a
#                device-to-device copy (parzen_bandwidth_cuda.json) and one MLP training step
#                against PyTorch on the same GPU (mlp_step_cuda.json; needs python3 with a
#                CUDA build of torch)
#   --mpi        build the MPI transport (and the NCCL one where the machine has NCCL) too and
#                run the mpi tier, then `mpirun -np 2` and `-np 4 asgd train --backend cuda`
#                (ranks sharing the GPUs) to 85% given --data, the same with --transport nccl
#                where there are 2 GPUs or more (NCCL needs a GPU per rank),
#                and with --bench the MPI transport's bandwidth; Open MPI from the packed
#                dependencies (pack_gpu_deps.sh --mpi) or the machine's own mpirun
#   --data DIR   Fashion-MNIST's IDX files (default /usr/share/datasets/fashion-mnist where it
#                exists): with --bench also time to 85% against PyTorch on the same GPU
#                (gpu_train.json)
#
# Writes to $OUT, or to bench/results/ when OUT is unset:
#   gpu_checks_env.txt        nvidia-smi, driver, toolkit and compiler versions
#   gpu_checks_build.log      configure and build
#   gpu_checks_tests.log      ctest -L gpu;  gpu_checks_tests.xml: its JUnit report
#   gpu_checks_sanitizer.log  every compute-sanitizer run
#   gpu_checks_bench.log      with --bench: the benchmarks' tables (and their JSON files)
#   gpu_checks_mpi.log        with --mpi: ctest -L mpi and the mpirun runs (mpi_cuda_np*.json)
#   gpu_checks_summary.txt    one line per step
# Exits 0 only when every step passed. Without a visible GPU every gpu test skips itself and
# the summary says so.
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
deps=""
build="$repo/build-gpu"
tools="memcheck racecheck synccheck"
cmake_extra=()
bench=0
mpi=0
data=""
[[ -d /usr/share/datasets/fashion-mnist ]] && data=/usr/share/datasets/fashion-mnist

die() {
  echo "gpu_checks: $*" >&2
  exit 2
}

while (($#)); do
  case "$1" in
    --deps) deps="${2:?--deps needs a folder}"; shift 2 ;;
    --build) build="${2:?--build needs a folder}"; shift 2 ;;
    --tools) tools="${2?--tools needs a list}"; shift 2 ;;
    --bench) bench=1; shift ;;
    --data) data="${2:?--data needs a folder}"; shift 2 ;;
    --mpi) mpi=1; shift ;;
    --) shift; cmake_extra=("$@"); break ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

out="${OUT:-$repo/bench/results}"
mkdir -p "$out" "$build" || die "cannot create $out or $build"
out="$(cd "$out" && pwd)"
build="$(cd "$build" && pwd)"
summary="$out/gpu_checks_summary.txt"
: >"$summary"
failed=0

# record STEP RC [NOTE]: one summary line; a nonzero RC fails the run.
record() {
  local verdict=PASS
  if [[ "$2" == skip ]]; then verdict=SKIP; elif (($2 != 0)); then verdict="FAIL (exit $2)"; failed=1; fi
  echo "$1: $verdict${3:+ - $3}" | tee -a "$summary"
}

# The toolkit's tools may not be on PATH on a fresh machine.
for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
  [[ -d "$d" && ":$PATH:" != *":$d:"* ]] && PATH="$PATH:$d"
done
export PATH

# ---------------------------------------------------------------------------------------------
# The machine.
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(uname -srm)"
  echo "commit: ${ASGD_GIT_COMMIT:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)}"
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi
    nvidia-smi --query-gpu=index,name,driver_version,memory.total,compute_cap --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: not found"
  cmake --version | head -1
  ninja --version | sed 's/^/ninja /'
  "${CXX:-c++}" --version | head -1
} 2>&1 | tee "$out/gpu_checks_env.txt"
gpus="$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)"

# ---------------------------------------------------------------------------------------------
# Packed dependencies: CMake finds them through deps.cmake; the loader finds the shared
# libraries through links named by their SONAMEs (the pack stores each library only once).
cmake_args=()
if [[ -n "$deps" ]]; then
  deps="$(cd "$deps" 2>/dev/null && pwd)" || die "--deps folder not found"
  [[ -f "$deps/deps.cmake" && -f "$deps/lib/sonames.txt" ]] ||
    die "$deps was not made by scripts/pack_gpu_deps.sh (no deps.cmake or lib/sonames.txt)"
  cmake_args+=(-C "$deps/deps.cmake")
  runtime="$build/deps-runtime"
  rm -rf "$runtime" && mkdir -p "$runtime"
  while read -r soname rel; do
    ln -s "$deps/$rel" "$runtime/$soname"
  done <"$deps/lib/sonames.txt"
  export LD_LIBRARY_PATH="$runtime${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "gpu_checks: dependencies from $deps"
fi

# Open MPI from the pack: relocated with OPAL_PREFIX; the names CMake and the tests look for
# (mpirun, mpicxx, ...) are links to Debian's *.openmpi programs.
if ((mpi)) && [[ -n "$deps" && -d "$deps/openmpi/usr/bin" ]]; then
  ompi="$deps/openmpi/usr"
  export OPAL_PREFIX="$ompi"
  mkdir -p "$build/mpi-bin"
  for tool in mpirun mpiexec mpicc mpicxx mpic++; do
    ln -sf "$ompi/bin/$tool.openmpi" "$build/mpi-bin/$tool"
  done
  export PATH="$build/mpi-bin:$PATH"
  export LD_LIBRARY_PATH="$ompi/lib/x86_64-linux-gnu:$ompi/lib/x86_64-linux-gnu/openmpi/lib:$LD_LIBRARY_PATH"
  echo "gpu_checks: Open MPI from $ompi"
fi
if ((mpi)); then
  command -v mpirun >/dev/null || die "--mpi: no mpirun (pack_gpu_deps.sh --mpi, or install it)"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  # A machine's own PMIx plugins (another version) must not be loaded or complained about.
  export PMIX_MCA_mca_base_component_show_load_errors=0 PMIX_MCA_pcompress_base_silence_warning=1
fi
# The mpi tier's training cases read Fashion-MNIST where asgd looks for it.
if [[ -n "$data" ]]; then
  data="$(cd "$data" 2>/dev/null && pwd)" || die "--data folder not found"
  export ASGD_FASHION_MNIST_DIR="$data"
fi

# ---------------------------------------------------------------------------------------------
# Configure and build everything (the build runs the test binaries to list their tests).
{
  cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DASGD_CUDA=ON \
    -DASGD_MPI="$( ((mpi)) && echo ON || echo OFF)" -DASGD_NCCL="$( ((mpi)) && echo AUTO || echo OFF)" -DASGD_BUILD_TESTS=ON -DASGD_BUILD_BENCH="$bench" \
    "${cmake_args[@]}" "${cmake_extra[@]}" &&
    cmake --build "$build" --parallel "$(nproc)"
} 2>&1 | tee "$out/gpu_checks_build.log"
build_rc=${PIPESTATUS[0]}
record build "$build_rc"
if ((build_rc != 0)); then
  echo "gpu_checks: the build failed; see $out/gpu_checks_build.log" >&2
  exit 1
fi

# ---------------------------------------------------------------------------------------------
# The gpu tier.
ctest --test-dir "$build" -L gpu --output-on-failure --output-junit "$out/gpu_checks_tests.xml" \
  2>&1 | tee "$out/gpu_checks_tests.log"
tests_rc=${PIPESTATUS[0]}
skipped="$(grep -c '\*\*\*Skipped' "$out/gpu_checks_tests.log" || true)"
note="$gpus GPU(s) visible, $skipped test(s) skipped"
((gpus == 0)) && note="$note: no GPU, so nothing ran on one"
record "gpu tests" "$tests_rc" "$note"

# ---------------------------------------------------------------------------------------------
# The mpi tier, and mpirun with the CUDA backend: every rank takes GPU local_rank % GPUs.
if ((mpi)); then
  ctest --test-dir "$build" -L mpi --output-on-failure 2>&1 | tee "$out/gpu_checks_mpi.log"
  record "mpi tests" "${PIPESTATUS[0]}"
  if ((gpus == 0)); then
    record "mpirun --backend cuda" skip "no GPU"
  elif [[ -z "$data" ]]; then
    record "mpirun --backend cuda" skip "no Fashion-MNIST (--data)"
  else
    for np in 2 4; do
      {
        timeout 300 mpirun --oversubscribe --bind-to none -np "$np" "$build/bin/asgd" train \
          --backend cuda --dataset "idx:$data" --model mlp --hidden 256,256 --batch 64 --lr 0.1 \
          --target-accuracy 0.85 --epochs 20 --summary "$out/mpi_cuda_np$np.json"
      } 2>&1 | tee -a "$out/gpu_checks_mpi.log"
      rc=${PIPESTATUS[0]}
      if ((rc == 0)) && ! grep -q '"time_to_target_s": *[0-9]' "$out/mpi_cuda_np$np.json"; then
        rc=1  # ran, but did not reach the target
      fi
      record "mpirun -np $np asgd train --backend cuda (to 85%)" "$rc"
    done
    # The NCCL transport, GPU to GPU, where the machine has NCCL (its round protocol is tested
    # on every machine over MPI; RoundTransportNccl in the mpi tier above runs it over NCCL).
    if ! grep -q '^#define ASGD_HAVE_NCCL 1' "$build/generated/asgd/config.h" 2>/dev/null; then
      record "mpirun --transport nccl" skip "this machine has no NCCL (the build found none)"
    elif ((gpus < 2)); then
      # NCCL refuses two ranks on one GPU; the trainer would fall back to MPI.
      record "mpirun --transport nccl" skip "NCCL needs a GPU per rank and this machine has $gpus"
    else
      {
        timeout 300 mpirun --oversubscribe --bind-to none -np 2 "$build/bin/asgd" train \
          --backend cuda --transport nccl --dataset "idx:$data" --model mlp --hidden 256,256 \
          --batch 64 --lr 0.1 --target-accuracy 0.85 --epochs 20 --summary "$out/mpi_nccl_np2.json"
      } 2>&1 | tee -a "$out/gpu_checks_mpi.log"
      rc=${PIPESTATUS[0]}
      if ((rc == 0)) && ! grep -q '"time_to_target_s": *[0-9]' "$out/mpi_nccl_np2.json"; then
        rc=1
      fi
      if ((rc == 0)) && ! grep -q '"transport": *"nccl"' "$out/mpi_nccl_np2.json"; then
        rc=1  # fell back to MPI
      fi
      record "mpirun -np 2 asgd train --transport nccl (to 85%)" "$rc"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# Kernel benchmarks on GPU 0, each beside its peer in the same process or script.
if ((bench == 0)); then
  :
elif ((gpus == 0)); then
  record benchmarks skip "no GPU"
else
  {
    "$build/bin/asgd_bench_parzen" --backend cuda --elements $((256 << 20)) --repeats 21 \
      --json "$out/parzen_bandwidth_cuda.json"
  } 2>&1 | tee "$out/gpu_checks_bench.log"
  record "bench parzen (cuda)" "${PIPESTATUS[0]}"
  {
    PYTHONUNBUFFERED=1 python3 "$repo/bench/mlp_step.py" --device cuda --build "$build" \
      --rounds 3 --out "$out/mlp_step_cuda.json"
  } 2>&1 | tee -a "$out/gpu_checks_bench.log"
  record "bench mlp_step (cuda, vs PyTorch)" "${PIPESTATUS[0]}"
  if [[ -n "$data" ]]; then
    {
      PYTHONUNBUFFERED=1 python3 "$repo/bench/gpu_train.py" --build "$build" --data "$data" \
        --out "$out/gpu_train.json"
    } 2>&1 | tee -a "$out/gpu_checks_bench.log"
    record "bench gpu_train (time to 85%, vs PyTorch)" "${PIPESTATUS[0]}"
  else
    record "bench gpu_train" skip "no Fashion-MNIST (--data)"
  fi
  if ((mpi)); then
    {
      mpirun --oversubscribe --bind-to none -np 2 "$build/bin/asgd_bench_mpi_transport" \
        --json "$out/mpi_transport_gpu_machine.json"
    } 2>&1 | tee -a "$out/gpu_checks_bench.log"
    record "bench mpi_transport (vs raw MPI)" "${PIPESTATUS[0]}"
  fi
fi

# ---------------------------------------------------------------------------------------------
# compute-sanitizer over the whole gpu test binary. CudaFaultTest faults a kernel on purpose
# (in a child process) and OutOfRangeOrdinalThrows makes CUDA calls fail on purpose, which the
# sanitizer would rightly report, so they are left out here. racecheck and synccheck look at
# the kernels' shared memory and barriers, which the kernel tests cover; under them the
# training tests (thousands of launches) would take hours, so those run under memcheck only.
sanitizer="$(command -v compute-sanitizer || true)"
: >"$out/gpu_checks_sanitizer.log"
if [[ -z "$sanitizer" ]]; then
  record compute-sanitizer skip "not installed"
elif ((gpus == 0)); then
  record compute-sanitizer skip "no GPU"
else
  for tool in $tools; do
    args=(--tool "$tool" --error-exitcode 86)
    filter='-CudaFaultTest.*:CudaDeviceTest.OutOfRangeOrdinalThrows'
    if [[ "$tool" == memcheck ]]; then
      args+=(--leak-check full)
    else
      filter="$filter:CudaTrainingTest.*"
    fi
    {
      echo "=== compute-sanitizer ${args[*]}"
      "$sanitizer" "${args[@]}" "$build/bin/asgd_gpu_tests" --gtest_filter="$filter"
    } >>"$out/gpu_checks_sanitizer.log" 2>&1
    rc=$?
    tail -n 3 "$out/gpu_checks_sanitizer.log"
    record "compute-sanitizer $tool" "$rc"
  done
fi

echo "gpu_checks: results in $out"
cat "$summary"
exit "$failed"
