#!/usr/bin/env python3
"""A stalled rank must not stall the others: a 4-rank `asgd train` under mpirun, one rank
stopped with SIGSTOP for 5 s in the middle, then resumed with SIGCONT.

Every rank logs an evaluation every --eval-every steps (time and step), so each rank's step
rate can be read before the stall, during it and after it. Reported: per running rank, the
step rate during the stall as a fraction of the rate before it (the issue asks >= 0.9), and
whether the whole job still finished normally.

  bench/mpi_stall.py [--build build] [--ranks 4] [--stalled 2] [--stop-at 8] [--stall 5]

Note: on a machine with fewer cores than ranks the ranks share cores, so a stopped rank frees
CPU time for the others and their rate may rise during the stall; the point measured is that
nobody waits for the stopped rank.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import runs  # noqa: E402


def rank_pids(mpirun_pid, ranks, deadline):
    """The PIDs of the ranks started by mpirun (read from OMPI_COMM_WORLD_RANK)."""
    while time.time() < deadline:
        found = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
            if ppid == mpirun_pid and b"OMPI_COMM_WORLD_RANK" in env:
                found[int(env[b"OMPI_COMM_WORLD_RANK"])] = int(pid)
        if len(found) == ranks:
            return found
        time.sleep(0.05)
    raise SystemExit(f"could not find the {ranks} ranks of mpirun {mpirun_pid}")


def rate(points, t0, t1):
    """Steps per second between the evaluations nearest to t0 and t1."""
    inside = [p for p in points if t0 <= p["time_s"] <= t1]
    if len(inside) < 2:
        return float("nan")
    a, b = inside[0], inside[-1]
    return (b["step"] - a["step"]) / (b["time_s"] - a["time_s"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(runs.ROOT, "build"))
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--stalled", type=int, default=2, help="the rank to stop")
    ap.add_argument("--stop-at", type=float, default=8.0, help="seconds after start-up")
    ap.add_argument("--stall", type=float, default=5.0, help="seconds stopped")
    ap.add_argument("--run-seconds", type=float, default=20.0)
    ap.add_argument("--out", default=os.path.join(runs.ROOT, "bench", "results", "mpi_stall.json"))
    args = ap.parse_args()
    binary = runs.asgd_binary(args.build)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.jsonl")
        summary = os.path.join(tmp, "s.json")
        # Each rank bound to a core (two per core on a 2-core machine), so that the scheduler
        # does not shuffle CPU time between ranks and the per-rank rates are comparable.
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "core:overload-allowed", "-np", str(args.ranks), binary,
               "train", "--model", "mlp", "--hidden", "256,256", "--batch", "64", "--lr", "0.05",
               "--epochs", "1000", "--max-seconds", str(args.run_seconds), "--eval-every", "50",
               "--balance", "off",
               "--metrics", metrics, "--summary", summary, "--no-progress"]
        job = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        pids = rank_pids(job.pid, args.ranks, time.time() + 30)
        # The ranks' training clocks start after data loading; wait for the first evaluation,
        # or for the job to end early (an error: say it, with the job's output).
        deadline = time.time() + 120
        while not os.path.exists(metrics) or os.path.getsize(metrics) == 0:
            if job.poll() is not None or time.time() > deadline:
                if job.poll() is None:
                    job.kill()
                output, _ = job.communicate()
                raise SystemExit(f"{' '.join(cmd)}\nended (exit code {job.returncode}) or sent "
                                 f"no evaluation within 120 s:\n{output}")
            time.sleep(0.05)
        first_eval = time.time()
        time.sleep(args.stop_at)
        stop_wall = time.time()
        os.kill(pids[args.stalled], signal.SIGSTOP)
        time.sleep(args.stall)
        os.kill(pids[args.stalled], signal.SIGCONT)
        cont_wall = time.time()
        output, _ = job.communicate(timeout=args.run_seconds + 120)
        finished = job.returncode == 0 and os.path.exists(summary)

        per_rank = {}
        for r in range(args.ranks):
            path = metrics if r == 0 else os.path.join(tmp, f"m.rank{r}.jsonl")
            with open(path) as f:
                per_rank[r] = [json.loads(line) for line in f]
        # Wall clock to training clock: rank 0's first evaluation was seen at `first_eval`.
        t_first = per_rank[0][0]["time_s"]
        stop_t = t_first + (stop_wall - first_eval)
        cont_t = t_first + (cont_wall - first_eval)
        rows = []
        for r, points in per_rank.items():
            before = rate(points, stop_t - args.stall, stop_t)
            during = rate(points, stop_t + 0.2, cont_t - 0.2)
            after = rate(points, cont_t + 0.5, cont_t + 0.5 + args.stall)
            rows.append({"rank": r, "stalled": r == args.stalled, "steps_per_s_before": before,
                         "steps_per_s_during": during, "steps_per_s_after": after,
                         "during_over_before": during / before if before > 0 else None,
                         "final_step": points[-1]["step"]})
    print(f"{'rank':>4} {'before':>10} {'during':>10} {'after':>10} {'during/before':>14}")
    for row in rows:
        mark = " (stopped)" if row["stalled"] else ""
        print(f"{row['rank']:>4} {row['steps_per_s_before']:>10.1f} {row['steps_per_s_during']:>10.1f} "
              f"{row['steps_per_s_after']:>10.1f} {row['during_over_before'] or 0:>14.2f}{mark}")
    others = [row["during_over_before"] for row in rows if not row["stalled"]]
    worst = min(others)
    running = [row for row in rows if not row["stalled"]]
    total_before = sum(row["steps_per_s_before"] for row in running)
    total_during = sum(row["steps_per_s_during"] for row in running)
    print(f"worst running rank during the stall: {worst:.2f} of its rate before (target >= 0.9); "
          f"all running ranks together: {total_during / total_before:.2f}; "
          f"job {'finished normally' if finished else 'FAILED'}")
    if not finished:
        print(output)
    runs.write_result(args.out, "mpi_stall", {
        "command": " ".join(cmd), "stalled_rank": args.stalled, "stall_s": args.stall,
        "rows": rows, "worst_ratio": worst, "finished": finished,
        "running_ranks_total_ratio": total_during / total_before,
        "note": "ranks share the machine's cores; a stopped rank frees CPU time for the others"})
    return 0 if finished and worst >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
