#!/usr/bin/env bash
# Builds the host backend with sanitizers and runs tests under them; any report fails.
#   scripts/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer, in build-asan/:
#                              all of asgd_unit_tests, the cli tests and the mpi tier
#   scripts/sanitize.sh tsan   ThreadSanitizer, in build-tsan/: the unit tests that run threads
#                              (TSAN_TESTS) and a short multi-worker run over emulated links
#   scripts/sanitize.sh all    both (the default)
# Every sanitized process writes its reports to a file under <build dir>/sanitizer-reports/,
# so a report fails the run even inside a test that expects a non-zero exit (bad input, a rank
# that aborts). The only suppressions (tests/sanitizers/) name Open MPI's libraries, never asgd
# code; tests/sanitizers/README.md says why each one is there. Each part prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
case $mode in
  asan | tsan | all) ;;
  *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;;
esac
supp=$PWD/tests/sanitizers

# The unit tests whose code runs on several threads: the receive slot under concurrent writers,
# the local transport and its communication thread, the engine with workers on threads (with
# the load balancer's thread), the trainer, the trace recorder's concurrent lanes, the load
# balancer thread, the error slot shared by threads and checkpoint rounds completed on several
# threads.
TSAN_TESTS='MessageSlotTest.*:LocalTransportTest.*:Engine/*:DeterministicTest.*:CustomModelTest.*'
TSAN_TESTS+=':EngineConfigTest.*:TrainerTest.*:TraceRecorder.*:PeerBoard.*:LoadBalancerThread.*'
TSAN_TESTS+=':ErrorTest.SlotKeepsTheFirstErrorOfManyThreads:ResumeTest.*:DivergenceTest.*:FaultTest.*'
TSAN_TESTS+=':CheckpointWriter*:CheckpointRounds.*'

scripts/install_deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# OpenMP and OpenBLAS are not instrumented: with one thread each, their thread pools (whose
# hand-offs TSan cannot see) stay out of the picture. Multi-threaded kernels are the normal
# test run's business.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

timings=()
# step NAME REPORTS COMMAND...: runs and times one part; fails on a non-zero exit or on any
# report written under REPORTS ("-": none expected, a build).
step() {
  local name=$1 reports=$2 t0=$SECONDS status=0
  shift 2
  echo "== sanitize: $name" >&2
  if [[ $reports != - ]]; then rm -rf "$reports" && mkdir -p "$reports"; fi
  "$@" || status=$?
  if [[ $reports != - && -n $(ls -A "$reports") ]]; then
    echo "== sanitize: $name: sanitizer reports" >&2
    for f in "$reports"/*; do echo "--- $f" >&2; cat "$f" >&2; done
    exit 1
  fi
  if ((status != 0)); then
    echo "== sanitize: $name failed (exit $status)" >&2
    exit 1
  fi
  timings+=("$(printf '%-26s %4d s' "$name" $((SECONDS - t0)))")
}

# build DIR FLAGS TARGETS...: configures DIR (extra arguments in cmake_extra) and builds only
# TARGETS. Debug at -O1 keeps assertions and readable stacks at a bearable speed.
cmake_extra=()
build() {
  local dir=$1 flags=$2
  shift 2
  mkdir -p "$dir"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
    -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags" \
    -DASGD_CUDA=OFF -DASGD_BUILD_BENCH=OFF -DASGD_BUILD_TESTS=ON "${cmake_extra[@]}" \
    >"$dir/configure.log" 2>&1 || { cat "$dir/configure.log" >&2; return 1; }
  cmake --build "$dir" --parallel "$(nproc)" --target "$@"
}

run_asan() {
  local dir=build-asan
  local reports=$PWD/$dir/sanitizer-reports
  step "asan+ubsan build" - build $dir \
    "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
    asgd_unit_tests asgd_mpi_tests asgd_cli
  local asan="halt_on_error=1:detect_leaks=1:detect_stack_use_after_return=1"
  asan+=":check_initialization_order=1:strict_init_order=1:log_path=$reports/asan"
  export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"

  # Our own processes: no suppressions at all.
  export ASAN_OPTIONS=$asan LSAN_OPTIONS=""
  step "asan+ubsan unit tests" "$reports" $dir/bin/asgd_unit_tests --gtest_brief=1
  step "asan+ubsan cli tests" "$reports" ctest --test-dir $dir --output-on-failure -L cli

  # Real ranks under mpirun. Open MPI never frees what MPI_Init allocates; those leaks are
  # suppressed by library name, which needs whole allocation stacks: Open MPI is built without
  # frame pointers, so the fast unwinder stops inside it (fast_unwind_on_malloc=0).
  export ASAN_OPTIONS="$asan:fast_unwind_on_malloc=0"
  export LSAN_OPTIONS="suppressions=$supp/lsan.supp:print_suppressions=0"
  step "asan+ubsan mpi tier" "$reports" ctest --test-dir $dir --output-on-failure -L mpi
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
}

run_tsan() {
  local dir=build-tsan
  local reports=$PWD/$dir/sanitizer-reports
  # Files with target_clones are built without TSan's function entry/exit hooks: their ifunc
  # resolvers run before TSan starts (tests/sanitizers/tsan_ifunc.cmake).
  local ifunc
  ifunc=$(grep -rl --include='*.cpp' 'target_clones' comm kernels runtime | tr '\n' ';')
  cmake_extra=(-DCMAKE_PROJECT_INCLUDE="$supp/tsan_ifunc.cmake" -DASGD_TSAN_NO_FUNC_ENTRY="$ifunc")
  step "tsan build" - build $dir "-fsanitize=thread" asgd_unit_tests asgd_cli
  cmake_extra=()
  export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan"
  step "tsan unit tests" "$reports" \
    $dir/bin/asgd_unit_tests --gtest_brief=1 --gtest_filter="$TSAN_TESTS"
  # The unit tests' runs end within the balancer's first period and deliver nothing over an
  # emulated link. This run does both for a few seconds: three workers, the local transport's
  # communication thread delivering over emulated links that change mid-run, the balancer
  # thread re-deciding every 50 ms, metrics and trace written from several threads, checkpoint
  # rounds gathered from every worker thread and written by the checkpoint thread.
  local work=$dir/tsan-train
  rm -rf "$work" && mkdir -p "$work"
  step "tsan train, 3 workers" "$reports" $dir/bin/asgd train --dataset blobs:4000,32,4 \
    --model mlp --hidden 64 --workers 3 --epochs 100000 --max-seconds 5 --eval-every 200 \
    --link-bandwidth 5e7 --link-latency 1e-4 --link-change 2.5:1e7 --no-progress \
    --metrics "$work/m.jsonl" --summary "$work/s.json" --trace "$work/t.json" \
    --checkpoint-dir "$work/ck" --checkpoint-every 300 --on-divergence restore
  unset TSAN_OPTIONS
}

t0=$SECONDS
if [[ $mode == asan || $mode == all ]]; then run_asan; fi
if [[ $mode == tsan || $mode == all ]]; then run_tsan; fi
printf '== sanitize: %s\n' "${timings[@]}" >&2
echo "== sanitize: $mode clean in $((SECONDS - t0)) s" >&2
