#!/usr/bin/env bash
# `asgd train` under mpirun, one case per call:  train.sh CASE MPIRUN ASGD
# Each case checks the exit status, the messages and the summary that rank 0 writes.
set -euo pipefail
case_name=$1 mpirun=$2 asgd=$3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
launch() { # launch NP ARGS...: runs the job with a hard time bound, output in $work/out
  local np=$1
  shift
  timeout 240 "$mpirun" --oversubscribe --bind-to none -np "$np" "$@" >"$work/out" 2>&1
}
fail() { echo "FAIL ($case_name): $*"; echo "--- output:"; cat "$work/out"; exit 1; }
summary() { python3 -c "import json,sys; d=json.load(open('$work/s.json')); print(eval(sys.argv[1]))" "$1"; }

# A small problem that a few ranks solve in seconds: softmax regression on Fashion-MNIST.
common=(train --model softmax --batch 64 --eval-every 200 --no-progress
        --summary "$work/s.json" --metrics "$work/m.jsonl")
# For the cases that check that messages were exchanged before the target stopped the run: the
# softmax model reaches it in 0.1 s, sometimes before the first messages have passed the
# Parzen window's warm-up; a hidden layer makes the 600 steps take 0.4 s, with ~120 messages.
exchanging=("${common[@]/#softmax/mlp}" --hidden 128)

case $case_name in
asgd_4_ranks)
  launch 4 "$asgd" "${exchanging[@]}" --algo asgd --lr 0.1 --epochs 3 --target-accuracy 0.80 ||
    fail "exit $?"
  [[ $(summary 'd["time_to_target_s"] is not None') == True ]] || fail "target 0.80 not reached"
  [[ $(summary 'd["workers"]') == 4 && $(summary 'len(d["per_worker"])') == 4 ]] ||
    fail "expected 4 workers in the summary"
  [[ $(summary 'd["messages_accepted"] > 0 and d["messages_received"] > 0') == True ]] ||
    fail "no messages were exchanged"
  for r in 1 2 3; do [[ -s $work/m.rank$r.jsonl ]] || fail "rank $r wrote no metrics"; done
  grep -q "4 ranks" "$work/out" || fail "no topology report"
  ;;
sync_2_ranks | simu_2_ranks | local_2_ranks)
  algo=${case_name%%_*}
  launch 2 "$asgd" "${common[@]}" --algo "$algo" --lr 0.1 --epochs 1 || fail "exit $?"
  [[ $(summary 'd["algo"]') == "$algo" ]] || fail "summary names another algorithm"
  [[ $(summary 'd["final_test_accuracy"] > 0.70') == True ]] || fail "accuracy too low"
  [[ $(summary 'd["messages_sent"]') == 0 ]] || fail "$algo sent messages"
  ;;
trace_2_ranks)
  launch 2 "$asgd" "${common[@]}" --lr 0.1 --epochs 0.3 --trace "$work/t.json" || fail "exit $?"
  python3 - "$work/t.json" <<'PY' || fail "bad trace"
import json, sys
events = json.load(open(sys.argv[1]))["traceEvents"]
seen = {(e["pid"], e["name"]) for e in events if e["ph"] == "X"}
for rank in (0, 1):  # both ranks' compute and communication threads are in rank 0's file
    for name in ("step", "gradient", "exchange", "send", "transfer", "receive"):
        assert (rank, name) in seen, f"rank {rank} has no '{name}' slice"
PY
  ;;
rank_killed)
  # A rank that dies (SIGKILL) must not leave the others hanging: the job ends, non-zero,
  # within a bounded time, and says which rank died.
  timeout 120 "$mpirun" --oversubscribe --bind-to none -np 3 "$asgd" "${common[@]}" --lr 0.1 \
    --epochs 1000 --max-seconds 100 >"$work/out" 2>&1 &
  job=$!
  victim=""
  for _ in $(seq 1 600); do  # the ranks appear within seconds; give up after 60 s
    launcher=$(pgrep -P "$job" | head -1 || true)  # timeout -> mpirun -> the ranks
    ranks=$([[ -n $launcher ]] && pgrep -P "$launcher" || true)
    if [[ $(wc -w <<<"$ranks") -ge 3 ]] && grep -q "3 ranks" "$work/out"; then
      victim=$(tail -1 <<<"$ranks")
      break
    fi
    sleep 0.1
  done
  [[ -n $victim ]] || fail "the ranks did not start"
  kill -9 "$victim"
  start=$SECONDS
  if wait "$job"; then fail "the job reported success after a rank was killed"; fi
  elapsed=$((SECONDS - start))
  ((elapsed < 60)) || fail "the job took ${elapsed} s to end after a rank died"
  grep -qi "signal 9\|killed" "$work/out" || fail "the output does not say that a rank was killed"
  ;;
model_mismatch)
  # MPMD: rank 0 and rank 1 are given different hidden layers.
  if launch 1 "$asgd" train --model mlp --hidden 64 --no-progress : \
       -np 1 "$asgd" train --model mlp --hidden 32 --no-progress; then
    fail "a model mismatch between ranks was accepted"
  fi
  n=$(grep -c "the ranks hold different models" "$work/out" || true)
  # Both ranks fail the same check; rank 0 says it once.
  [[ $n -eq 1 ]] || fail "expected the error once (from rank 0), found it $n time(s)"
  grep -q "rank 1: 'mlp 784-32-10'" "$work/out" || fail "the error does not name rank 1's model"
  ;;
settings_mismatch)
  # The same flags but a different training file behind the same name (each rank runs in its
  # own directory, as on two nodes), then a setting that differs, on one rank of three.
  for d in a b; do
    mkdir -p "$work/$d"
    python3 -c "
import random
random.seed(1)
for i in range(300):
    y = i % 3
    print(y, *(round(random.gauss(2.0 * y, 1.0), 4) for _ in range(4)), sep=',')
" >"$work/$d/data.csv"
  done
  sed -i '7s/^\([0-9]\),[^,]*/\1,9.5/' "$work/b/data.csv"
  args=(train --dataset csv:data.csv --model softmax --epochs 1 --no-progress)
  if launch 1 -wdir "$work/a" "$asgd" "${args[@]}" : -np 1 -wdir "$work/a" "$asgd" "${args[@]}" \
       : -np 1 -wdir "$work/b" "$asgd" "${args[@]}"; then
    fail "ranks with different training data were accepted"
  fi
  n=$(grep -c "the ranks were started with different settings" "$work/out" || true)
  [[ $n -eq 1 ]] || fail "expected the error once (from rank 0), found it $n time(s)"
  grep -q "rank 2: training data '270 rows x 4 features, 3 classes, checksum [0-9a-f]*' where rank 0 has" \
    "$work/out" || fail "the error does not name the training data of rank 2"
  grep -q "rank 1:" "$work/out" && fail "rank 1 has rank 0's settings but is named"
  if launch 1 -wdir "$work/a" "$asgd" "${args[@]}" : -np 1 -wdir "$work/a" "$asgd" "${args[@]}" \
       --test-fraction 0.25; then
    fail "ranks with different settings were accepted"
  fi
  grep -q "rank 1: test-fraction '0.25' where rank 0 has '0.1'" "$work/out" ||
    fail "the error does not name the setting that differs"
  # Settings that decide which collective calls a rank makes (the link probe runs only with
  # the balancer, the trace aligns clocks): a difference hung the job; now it is named.
  if launch 1 -wdir "$work/a" "$asgd" "${args[@]}" --send-interval 1 : -np 1 -wdir "$work/a" \
       "$asgd" "${args[@]}"; then
    fail "ranks with and without the balancer were accepted"
  fi
  grep -q "rank 1: balance 'auto' where rank 0 has 'off'" "$work/out" ||
    fail "the error does not name the balancer"
  if launch 1 -wdir "$work/a" "$asgd" "${args[@]}" --trace "$work/t.json" : -np 1 \
       -wdir "$work/a" "$asgd" "${args[@]}"; then
    fail "ranks with and without a trace were accepted"
  fi
  grep -q "rank 1: trace 'off' where rank 0 has 'on'" "$work/out" ||
    fail "the error does not name the trace"
  ;;
straggler_finishes)
  # Rank 0 five times slower: rank 1 ends its epochs long before and waits for rank 0's done
  # frame. Rank 0 keeps sending, so it is not taken for dead however long it takes (the wait
  # timed out from rank 1's own end, after --peer-timeout).
  launch 2 "$asgd" train --dataset blobs:20000,50,4 --model mlp --hidden 64 --epochs 30 \
    --eval-every 2000 --straggler 0:5 --peer-timeout 0.5 --no-progress \
    --summary "$work/s.json" || fail "exit $?"
  [[ $(summary 'd["stop_reason"]') == epochs ]] || fail "did not end by its epochs"
  grep -q "messages sent" "$work/out" || fail "the end line leaves out the messages"
  ;;
transport_local_under_mpirun)
  if launch 2 "$asgd" "${common[@]}" --transport local; then fail "accepted"; fi
  grep -q "transport local, but mpirun started 2 ranks" "$work/out" || fail "unclear error"
  ;;
deterministic_under_mpirun)
  if launch 2 "$asgd" "${common[@]}" --deterministic; then fail "accepted"; fi
  grep -q "deterministic needs one process" "$work/out" || fail "unclear error"
  ;;
rank_killed_resume)
  # A rank SIGKILLed at a random step (--fault kill): the job ends, non-zero, within a bounded
  # time and says which rank died; the last checkpoint is valid, and the job resumed from it
  # reaches the target. The victim is rank 0, the one that writes checkpoints (--checkpoint
  # rank0) and decides the end, so it surely gets to the step where it dies.
  seed=${ASGD_TEST_SEED:-$RANDOM}
  RANDOM=$seed
  step=$((400 + RANDOM % 400))
  echo "seed $seed: rank 0 dies at its step $step"
  ck=(--checkpoint-dir "$work/ck" --checkpoint-every 100)
  start=$SECONDS
  if launch 3 "$asgd" "${common[@]}" "${ck[@]}" --lr 0.1 --epochs 10 --target-accuracy 0.83 \
       --fault "kill:0:$step"; then
    fail "the job reported success after rank 0 was killed"
  fi
  elapsed=$((SECONDS - start))
  ((elapsed < 120)) || fail "the job took ${elapsed} s to end after a rank died"
  grep -q "rank 0 .*signal 9" "$work/out" || fail "the output does not name rank 0"
  "$asgd" checkpoint "$work/ck" >"$work/ck.json" 2>&1 || fail "no valid checkpoint: $(cat "$work/ck.json")"
  # The resumed job's target is lower: 3 softmax ranks on seed 1 peak at about 0.83 (once, at
  # step 3000 of 3120), so reaching 0.83 was luck; 0.815 comes by about step 1200. The first
  # job keeps 0.83 so that it cannot end at its target before rank 0 dies (0.81 at step 600).
  launch 3 "$asgd" "${common[@]}" "${ck[@]}" --lr 0.1 --epochs 10 --target-accuracy 0.815 \
    --resume "$work/ck" || fail "the resumed job failed (exit $?)"
  [[ $(summary 'd["resumed_step"] >= 100') == True ]] || fail "did not resume from a checkpoint"
  [[ $(summary 'd["time_to_target_s"] is not None') == True ]] || fail "target 0.815 not reached"
  ;;
checkpoint_all)
  # --checkpoint all: every rank writes and resumes its own state.
  launch 2 "$asgd" "${common[@]}" --lr 0.1 --epochs 1 --checkpoint all --checkpoint-dir "$work/ck" \
    --checkpoint-every 100 || fail "exit $?"
  for r in 0 1; do
    "$asgd" checkpoint "$work/ck/checkpoint.rank$r.asgd" >"$work/r$r.json" || fail "rank $r: no valid checkpoint"
    grep -q "\"rank\": $r" "$work/r$r.json" || fail "rank $r's file holds another rank"
  done
  [[ ! -e $work/ck/checkpoint.asgd ]] || fail "a shared checkpoint was written as well"
  launch 2 "$asgd" "${common[@]}" --lr 0.1 --epochs 2 --checkpoint all --checkpoint-dir "$work/ck" \
    --resume "$work/ck" || fail "the resumed job failed (exit $?)"
  [[ $(summary 'd["resumed_step"] > 0') == True ]] || fail "did not resume"
  launch 2 "$asgd" "${common[@]}" --lr 0.1 --epochs 2 --resume "$work/ck" && fail "resumed rank0-scope from per-rank files"
  grep -q "no checkpoint at" "$work/out" || fail "unclear error for a missing shared checkpoint"
  ;;
resume_uneven_shards)
  # 3 ranks on 7201 training rows hold shards of 2401, 2400 and 2400 rows; every rank resumes
  # from rank 0's checkpoint (--checkpoint rank0), so the check must not compare shards.
  args=(train --dataset blobs:8001,20,4 --model softmax --batch 32 --eval-every 100 --no-progress
        --summary "$work/s.json" --checkpoint-dir "$work/ck" --checkpoint-every 50)
  launch 3 "$asgd" "${args[@]}" --epochs 2 || fail "exit $?"
  launch 3 "$asgd" "${args[@]}" --epochs 3 --resume "$work/ck" || fail "the resumed job failed (exit $?)"
  [[ $(summary 'd["resumed_step"] > 0 and d["steps"] > d["resumed_step"]') == True ]] ||
    fail "did not continue from the checkpoint"
  ;;
wire_faults)
  # Three ranks damage messages on the wire, each in its own way; the receivers reject and
  # count every one, and training reaches its target.
  launch 4 "$asgd" "${common[@]}" --lr 0.1 --epochs 4 --target-accuracy 0.80 \
    --fault corrupt:1:3 --fault forge-offset:2:2 --fault replay:3:4 || fail "exit $?"
  [[ $(summary 'd["time_to_target_s"] is not None') == True ]] || fail "target 0.80 not reached"
  for reason in checksum-mismatch range-out-of-bounds stale; do
    [[ $(summary "d['wire_rejections']['$reason'] > 0") == True ]] || fail "no $reason rejections counted"
  done
  [[ $(summary 'd["wire_rejections"]["header-checksum"] == 0 and d["wire_rejections"]["bad-magic"] == 0') == True ]] ||
    fail "rejections of kinds nobody injected"
  ;;
adversary_3_ranks)
  # Rank 2 sends NaN states. Its ranges are staged in the MPI transport's lent send buffers
  # and spoiled there: the others receive, test and count them as non-finite, and never merge
  # one; training reaches its target.
  launch 3 "$asgd" "${exchanging[@]}" --lr 0.1 --epochs 3 --target-accuracy 0.80 \
    --adversary 2:nan || fail "exit $?"
  [[ $(summary 'd["time_to_target_s"] is not None') == True ]] || fail "target 0.80 not reached"
  [[ $(summary 'd["messages_nonfinite"] > 0 and d["messages_accepted"] > 0') == True ]] ||
    fail "no NaN message counted, or none accepted"
  [[ $(summary 'd["wire_rejections"] == {} or sum(d["wire_rejections"].values()) == 0') == True ]] ||
    fail "wire rejections: the lent buffers' checksums disagree"
  ;;
rounds_4_ranks)
  # The NCCL transport's round protocol, with payloads over MPI in host memory (--transport
  # rounds): what --transport nccl runs on GPUs, less NCCL itself.
  launch 4 "$asgd" "${exchanging[@]}" --transport rounds --lr 0.1 --epochs 3 --target-accuracy 0.80 ||
    fail "exit $?"
  [[ $(summary 'd["transport"]') == rounds ]] || fail "summary names another transport"
  [[ $(summary 'd["time_to_target_s"] is not None') == True ]] || fail "target 0.80 not reached"
  [[ $(summary 'd["messages_accepted"] > 0 and d["messages_received"] > 0') == True ]] ||
    fail "no messages were exchanged"
  [[ $(summary 'sum(d["wire_rejections"].values())') == 0 ]] || fail "frames were rejected"
  ;;
nccl_without_gpu)
  # Host workers cannot use NCCL: every rank falls back to MPI, and it is said once.
  launch 2 "$asgd" "${common[@]}" --transport nccl --lr 0.1 --epochs 0.5 || fail "exit $?"
  [[ $(grep -c "every rank uses the MPI transport" "$work/out") == 1 ]] || fail "fallback not said once"
  [[ $(summary 'd["transport"]') == mpi ]] || fail "summary names another transport"
  ;;
rounds_wire_fault)
  if launch 2 "$asgd" "${common[@]}" --transport rounds --fault corrupt:1:3; then fail "accepted"; fi
  grep -q "faults on the wire are injected by the MPI transport" "$work/out" || fail "unclear error"
  ;;
*)
  echo "unknown case $case_name"
  exit 2
  ;;
esac
echo "PASS ($case_name)"
