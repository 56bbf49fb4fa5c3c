#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz into build-fuzz/ (clang; the fuzzers and asgd_core
# under ASan and UBSan) and runs each on a scratch copy of its seed corpus. Fails on any crash,
# sanitizer report, leak, uncaught exception or hang (an input that runs over 10 s).
#   scripts/fuzz.sh --seconds 20              every target for 20 s each (CI)
#   scripts/fuzz.sh --runs 1000000            every target for a million executions each
#   scripts/fuzz.sh --seconds 60 csv wire     only these (idx libsvm csv config wire checkpoint)
#   --json FILE                               also write the counts as JSON
# A failing input is kept with the fuzzer's log in build-fuzz/fuzz-artifacts/; replay it with
#   build-fuzz/bin/fuzz_TARGET build-fuzz/fuzz-artifacts/TARGET-crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }
seconds="" runs="" json="" targets=()
while (($#)); do
  case "$1" in
    --seconds | --runs | --json)
      [[ $# -ge 2 ]] || { echo "fuzz.sh: $1 needs a value" >&2; exit 2; }
      case "$1" in
        --seconds) seconds="$2" ;;
        --runs) runs="$2" ;;
        --json) json="$2" ;;
      esac
      shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
all=(idx libsvm csv config wire checkpoint)
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ -d tests/fuzz/corpus/$t ]] || { echo "fuzz.sh: no target '$t' (${all[*]})" >&2; exit 2; }
done
[[ -n "$seconds$runs" ]] || seconds=20

scripts/install_deps.sh
cores=$(nproc)  # before OMP_NUM_THREADS=1 below, which nproc obeys
build=build-fuzz
if [[ ! -f $build/build.ninja ]]; then
  # Only this build compiles asgd_core with the sanitizers and coverage instrumentation.
  san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
  CC=clang CXX=clang++ cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS="$san -fno-omit-frame-pointer" -DASGD_CUDA=OFF -DASGD_MPI=OFF \
    -DASGD_NCCL=OFF -DASGD_BUILD_TESTS=OFF -DASGD_BUILD_BENCH=OFF -DASGD_BUILD_FUZZERS=ON
fi
cmake --build $build --parallel "$cores" --target "${targets[@]/#/fuzz_}"

# The readers take paths, so every input goes through a file: on tmpfs where there is one
# (on a disk file system the rewrites cost real I/O, about 10x the executions per second).
scratch=${TMPDIR:-/tmp}
[[ ! -d /dev/shm || ! -w /dev/shm ]] || scratch=/dev/shm
work=$(mktemp -d "$scratch/asgd_fuzz_run.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts=$build/fuzz-artifacts
mkdir -p "$artifacts" "$work/tmp"
# Inputs are far below the text readers' 1 MiB chunk, so extra OpenMP threads would only cost.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}"

limit=()
[[ -z "$runs" ]] || limit+=("-runs=$runs")
[[ -z "$seconds" ]] || limit+=("-max_total_time=$seconds")
failed=() rows=()
printf '%-8s %12s %9s %10s %8s %8s\n' target executions seconds exec/s corpus result
for t in "${targets[@]}"; do
  cp -r "tests/fuzz/corpus/$t" "$work/$t"
  seeds=$(find "$work/$t" -type f | wc -l)
  args=(-timeout=10 -rss_limit_mb=2048 -detect_leaks=1 -print_final_stats=1
        "-artifact_prefix=$artifacts/$t-" "${limit[@]}")
  [[ ! -f tests/fuzz/$t.dict ]] || args+=("-dict=tests/fuzz/$t.dict")
  start=$(date +%s.%N)
  rc=0
  TMPDIR="$work/tmp" "$build/bin/fuzz_$t" "${args[@]}" "$work/$t" >"$work/$t.log" 2>&1 || rc=$?
  elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$work/$t.log" | tail -1)
  execs=${execs:-0}
  rate=$(awk -v n="$execs" -v s="$elapsed" 'BEGIN { printf "%.0f", (s > 0 ? n / s : 0) }')
  corpus=$(find "$work/$t" -type f | wc -l)
  result=ok
  if ((rc != 0)); then
    result="FAIL($rc)"
    failed+=("$t")
    cp "$work/$t.log" "$artifacts/$t.log"
  fi
  printf '%-8s %12s %9s %10s %8s %8s\n' "$t" "$execs" "$elapsed" "$rate" "$corpus" "$result"
  if ((rc != 0)); then
    echo "--- fuzz_$t failed; the end of its log ($artifacts/$t.log):" >&2
    tail -n 60 "$work/$t.log" >&2
  fi
  rows+=("$(printf '    {"target": "%s", "executions": %s, "seconds": %s, "exec_per_s": %s, "crashes": %s, "seed_corpus": %s, "corpus": %s}' \
    "$t" "$execs" "$elapsed" "$rate" "$((rc != 0))" "$seeds" "$corpus")")
done

if [[ -n "$json" ]]; then
  {
    printf '{\n  "commit": "%s",\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    printf '  "clang": "%s",\n' "$(clang++ --version | head -n 1)"
    printf '  "limit": "%s",\n' "${limit[*]}"
    printf '  "options": "-timeout=10 -rss_limit_mb=2048 -detect_leaks=1, ASan+UBSan, OMP_NUM_THREADS=1",\n'
    printf '  "host": "%s, %s cores",\n' "$(uname -m)" "$cores"
    printf '  "date": "%s",\n  "targets": [\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    for i in "${!rows[@]}"; do
      printf '%s%s\n' "${rows[$i]}" "$([[ $i -lt $((${#rows[@]} - 1)) ]] && echo ,)"
    done
    printf '  ]\n}\n'
  } >"$json"
  echo "fuzz.sh: wrote $json"
fi
if ((${#failed[@]})); then
  echo "fuzz.sh: FAILED: ${failed[*]} (inputs and logs in $artifacts/)" >&2
  exit 1
fi
