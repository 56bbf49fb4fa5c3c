#!/usr/bin/env bash
# Runs `asgd bench-link` and checks its output.
#   bench_link.sh run       MPIEXEC ASGD RANKS   quick sweep on RANKS ranks: exit 0, a table per
#                                                ordered pair, N x N matrices in the JSON, every
#                                                #wrong 0, every bandwidth > 0
#   bench_link.sh corrupt   MPIEXEC ASGD RANKS   with injected corruption: non-zero exit and
#                                                #wrong > 0 (the data check is live)
#   bench_link.sh no_mpirun ASGD                 without mpirun: non-zero exit and a one-line
#                                                error that says how to launch it
#   bench_link.sh mismatch  MPIEXEC ASGD         2 ranks given different sizes (an MPMD
#                                                launch): non-zero exit and one error naming
#                                                the flag, before anything is sent
#   bench_link.sh bad_json  MPIEXEC ASGD         --json naming a directory: non-zero exit and
#                                                one error naming --json, before anything is
#                                                measured
set -uo pipefail
mode=$1
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

fail() {
  echo "FAIL: $*"
  for f in out err; do [[ -s $dir/$f ]] && { echo "--- std$f:"; cat "$dir/$f"; }; done
  exit 1
}

case "$mode" in
  run | corrupt)
    mpiexec=$1 asgd=$2 ranks=$3
    extra=()
    # --quick runs 2 + 20 round trips per size, so every 11th message is the 11th and the last
    # one of each size in each direction: the last is the one the untimed whole-buffer check
    # sees, and for large sizes the only check that can see the flipped byte.
    [[ $mode == corrupt ]] && extra=(--inject-corruption 11)
    "$mpiexec" --oversubscribe --bind-to none -np "$ranks" "$asgd" bench-link --quick \
      --max-size 64K --json "$dir/result.json" "${extra[@]}" >"$dir/out" 2>"$dir/err"
    status=$?
    if [[ $mode == corrupt ]]; then
      ((status != 0)) || fail "bench-link exited 0 although messages were corrupted"
      grep -q "messages failed the data check" "$dir/err" || fail "no data-check error on stderr"
    else
      ((status == 0)) || fail "bench-link exited $status"
    fi
    grep -Eq '^# +size +time_us +GB/s +#wrong$' "$dir/out" || fail "no 'size time_us GB/s #wrong' table"
    tables=$(grep -c '^# rank [0-9]* (.*) -> rank [0-9]* (.*)$' "$dir/out")
    ((tables == ranks * (ranks - 1))) || fail "$tables pair tables, expected $((ranks * (ranks - 1)))"
    python3 - "$dir/result.json" "$ranks" "$mode" <<'EOF' || fail "the JSON does not hold up"
import json, math, sys

path, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path) as f:
    r = json.load(f)
problems = []
def check(cond, what):
    if not cond:
        problems.append(what)

for key in ("asgd_version", "commit", "date", "machine", "settings", "ranks", "pairs"):
    check(key in r, f"no '{key}'")
check(r["machine"].get("cores", 0) >= 1 and r["machine"].get("hostname"), "machine lacks cores/hostname")
check([k["rank"] for k in r["ranks"]] == list(range(n)), "ranks are not 0..N-1")
check(all(k["host"] and k["backend"] and k["device"] for k in r["ranks"]), "a rank lacks host/backend/device")
check(len(r["pairs"]) == n * (n - 1), f"{len(r['pairs'])} pairs, expected {n * (n - 1)}")
check(sorted((p["from"], p["to"]) for p in r["pairs"]) ==
      sorted((i, j) for i in range(n) for j in range(n) if i != j), "not every ordered pair")
for name in ("bandwidth_gb_per_s", "latency_us"):
    m = r[name]
    check(len(m) == n and all(len(row) == n for row in m), f"{name} is not {n}x{n}")
    for i in range(n):
        for j in range(n):
            v = m[i][j]
            if i == j:
                check(v is None, f"{name}[{i}][{i}] is {v}, expected null")
            else:
                check(isinstance(v, (int, float)) and math.isfinite(v) and v > 0,
                      f"{name}[{i}][{j}] = {v}")
wrong = 0
for p in r["pairs"]:
    pts = p["results"]
    check(len(pts) > 1 and [q["bytes"] for q in pts] == sorted(q["bytes"] for q in pts),
          f"pair {p['from']}->{p['to']}: sizes not increasing")
    for q in pts:
        check(q["time_us"] > 0 and q["gb_per_s"] > 0 and q["iterations"] >= 1,
              f"pair {p['from']}->{p['to']} at {q['bytes']} B: {q}")
        wrong += q["wrong"]
    check(p["bandwidth_gb_per_s"] > 0 and p["latency_us"] > 0, f"pair {p['from']}->{p['to']}: no fit")
check(wrong == r["wrong"], f"#wrong sums to {wrong} but the total says {r['wrong']}")
if mode == "run":
    check(wrong == 0, f"{wrong} messages failed the data check")
else:
    for p in r["pairs"]:
        for q in p["results"]:
            check(q["wrong"] >= 2, f"pair {p['from']}->{p['to']} at {q['bytes']} B: only "
                  f"{q['wrong']} corrupted messages counted")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
    ;;
  no_mpirun)
    asgd=$1
    # Not under a launcher: MPI starts as a singleton of one rank.
    env -u OMPI_COMM_WORLD_SIZE -u PMIX_RANK "$asgd" bench-link --quick >"$dir/out" 2>"$dir/err"
    status=$?
    ((status != 0)) || fail "bench-link exited 0 without mpirun"
    grep -qF 'mpirun -np N asgd bench-link' "$dir/err" || fail "the error does not say how to launch it"
    [[ $(grep -c '^asgd: error:' "$dir/err") -eq 1 ]] || fail "expected one error line"
    ;;
  mismatch)
    mpiexec=$1 asgd=$2
    "$mpiexec" --oversubscribe --bind-to none -np 1 "$asgd" bench-link --quick --max-size 64K : \
      -np 1 "$asgd" bench-link --quick --max-size 1M >"$dir/out" 2>"$dir/err"
    status=$?
    ((status != 0)) || fail "bench-link exited 0 with different sizes on the two ranks"
    grep -q -- '--max-size' "$dir/err" || fail "the error does not name --max-size"
    grep -q -- '1048576' "$dir/err" || fail "the error does not give rank 1's value"
    [[ $(grep -c '^asgd: error:' "$dir/err") -eq 1 ]] || fail "expected one error line"
    grep -q '^# rank' "$dir/out" && fail "pairs were measured"
    ;;
  bad_json)
    mpiexec=$1 asgd=$2
    "$mpiexec" --oversubscribe --bind-to none -np 2 "$asgd" bench-link --quick --max-size 64K \
      --json "$dir" >"$dir/out" 2>"$dir/err"
    status=$?
    ((status != 0)) || fail "bench-link exited 0 with --json naming a directory"
    grep -q -- "--json '$dir' is a directory" "$dir/err" || fail "the error does not say what is wrong with --json"
    [[ $(grep -c '^asgd: error:' "$dir/err") -eq 1 ]] || fail "expected one error line"
    grep -q '^# rank' "$dir/out" && fail "pairs were measured"
    ;;
  *)
    echo "unknown mode $mode" >&2
    exit 2
    ;;
esac
echo "PASS: bench-link $mode"
