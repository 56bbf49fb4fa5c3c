#!/usr/bin/env python3
"""The fault study: every kind of fault asgd claims to survive, injected into a real run on
Fashion-MNIST, with what happened and whether training still reached its target.

Model MLP 784-256-256-10, batch 64, --lr 0.1, target 0.85 test accuracy (worker 0), at most
--max-seconds per run. In one process: 4 worker threads. Under mpirun: 4 ranks.

  reference          no fault, asgd and asgd-nofilter
  byzantine KIND     worker 3 sends adversarial states (--adversary 3:KIND[:SCALE]): random,
                     scaled, nan, negate, noise; asgd beside asgd-nofilter
  nan divergence     a NaN appears in worker 1's state (--fault nan:1:STEP); --on-divergence
                     restore, and stop
  worker exception   worker 2's thread fails (--fault throw:2:STEP); then --resume
  process kill       the process is SIGKILLed (--fault kill:0:STEP); then --resume
  rank stall         (mpirun) rank 2 is SIGSTOPped for --stall-seconds, then continued
  rank kill          (mpirun) rank 0 is SIGKILLed (--fault kill:0:STEP); then --resume
  wire faults        (mpirun) rank 1 damages every 2nd message it sends: corrupt, forge-offset,
                     forge-length, forge-fingerprint, replay

    bench/faults.py [--build build] [--max-seconds 60] [--only NAME,...] [--no-mpi]
                    [--out bench/results/faults.json]
Writes the table (Markdown) to stdout and, with every run's summary, to the JSON file.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import runs  # noqa: E402

MODEL = ["--model", "mlp", "--hidden", "256,256", "--batch", "64", "--lr", "0.1",
         "--target-accuracy", "0.85", "--eval-every", "100", "--epochs", "1000",
         "--balance", "off"]
MPI_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


class Runner:
    def __init__(self, binary, max_seconds, tmp):
        self.binary = binary
        self.max_seconds = max_seconds
        self.tmp = tmp
        self.count = 0

    def run(self, args, mpi_ranks=0, during=None):
        """Runs `asgd train`; returns rc, wall seconds, summary (or None), stderr tail."""
        self.count += 1
        summary = os.path.join(self.tmp, f"s{self.count}.json")
        cmd = [self.binary, "train", "--no-progress", "--summary", summary,
               "--max-seconds", str(self.max_seconds), *MODEL, *map(str, args)]
        env = dict(os.environ, **MPI_ENV)
        if mpi_ranks:
            cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(mpi_ranks), *cmd]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, start_new_session=True)
        if during:
            during(proc)
        try:
            out, _ = proc.communicate(timeout=self.max_seconds * 3 + 120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += "\n(killed by the study: the run hung)"
        wall = time.monotonic() - start
        result = None
        if proc.returncode == 0 and os.path.exists(summary):
            with open(summary) as f:
                result = json.load(f)
        tail = [l for l in out.splitlines() if l.strip()][-3:]
        print(f"  rc {proc.returncode}, {wall:.1f} s: {' '.join(cmd[-12:])}", file=sys.stderr)
        return proc.returncode, wall, result, tail


def reached(s):
    return s is not None and s.get("time_to_target_s") is not None


def describe(s):
    if s is None:
        return "-"
    return (f"accepted {s['messages_accepted']}, rejected {s['messages_rejected']}, "
            f"non-finite {s['messages_nonfinite']}")


def row(fault, injected, happened, ok, s, wall, extra=None):
    r = {"fault": fault, "injected": injected, "what_happened": happened,
         "reached_target": ok,
         "time_to_target_s": s.get("time_to_target_s") if s else None,
         "final_test_accuracy": s.get("final_test_accuracy") if s else None,
         "wall_s": round(wall, 2)}
    if extra:
        r.update(extra)
    print(f"| {fault} | {injected} | {happened} | {'yes' if ok else 'no'} |", file=sys.stderr)
    return r


def error_line(tail):
    """The run's error without the source location that precedes it."""
    for line in reversed(tail):
        if "error" in line or "signal" in line or "Killed" in line:
            line = re.sub(r"^asgd: error: \S+\.(cpp|h|cu):\d+: ", "", line.strip())
            return line[:150]
    return tail[-1].strip()[:150] if tail else ""


def interrupted(r, args, fault, name, injected, first, mpi_ranks=0):
    """A run that `fault` interrupts (checkpoints every 100 steps), then the same run resumed
    from its checkpoint. `first(rc, wall, tail)` says how the interrupted run ended."""
    ck = os.path.join(r.tmp, name.replace(" ", "_") + "_ck")
    checkpoints = ["--checkpoint-dir", ck, "--checkpoint-every", "100"]
    rc, wall, _, tail = r.run([*args, "--fault", fault, *checkpoints], mpi_ranks=mpi_ranks)
    rc2, wall2, s2, _ = r.run([*args, *checkpoints, "--resume", ck], mpi_ranks=mpi_ranks)
    return row(name, injected,
               f"{first(rc, wall, tail)}; resumed from step "
               f"{s2['resumed_step'] if s2 else '?'}, exit {rc2}", reached(s2), s2, wall + wall2)


def in_process(r, only):
    rows = []
    w = ["--workers", "4"]
    if want(only, "reference"):
        for algo in ("asgd", "asgd-nofilter"):
            rc, wall, s, _ = r.run([*w, "--algo", algo])
            rows.append(row("none (reference)", f"--algo {algo}",
                            f"exit {rc}; {describe(s)}", reached(s), s, wall))
    if want(only, "byzantine"):
        for kind in ("random:1", "scaled:10", "nan", "negate", "noise:1"):
            for algo in ("asgd", "asgd-nofilter"):
                rc, wall, s, tail = r.run([*w, "--algo", algo, "--adversary", f"3:{kind}"])
                happened = f"exit {rc}; {describe(s)}" if s else error_line(tail)
                rows.append(row(f"Byzantine worker: {kind.split(':')[0]}",
                                f"--algo {algo} --adversary 3:{kind}", happened, reached(s), s,
                                wall, {"algo": algo, "adversary": kind}))
    if want(only, "nan"):
        rc, wall, s, _ = r.run([*w, "--fault", "nan:1:500", "--on-divergence", "restore"])
        restores = s["divergence_restores"] if s else None
        rows.append(row("NaN divergence", "--fault nan:1:500 --on-divergence restore",
                        f"exit {rc}; worker 1 restored {restores} time(s) to its last good "
                        f"state, step size halved", reached(s), s, wall))
        rc, wall, s, tail = r.run([*w, "--fault", "nan:1:500"])
        rows.append(row("NaN divergence", "--fault nan:1:500 --on-divergence stop",
                        f"exit {rc} after {wall:.1f} s: {error_line(tail)}", reached(s), s, wall))
    if want(only, "exception"):
        rows.append(interrupted(
            r, w, "throw:2:400", "worker exception", "--fault throw:2:400, then --resume",
            lambda rc, wall, tail: f"exit {rc} after {wall:.1f} s: {error_line(tail)}"))
    if want(only, "kill"):
        rows.append(interrupted(
            r, w, "kill:0:700", "process killed", "--fault kill:0:700 (SIGKILL), then --resume",
            lambda rc, wall, tail: f"killed by SIGKILL (exit {rc}) after {wall:.1f} s"))
    return rows


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rank_pids(mpirun_pid):
    """The asgd processes under mpirun, in rank order (OMPI_COMM_WORLD_RANK)."""
    ranks = {}
    for pid in children(mpirun_pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
            ranks[int(env[b"OMPI_COMM_WORLD_RANK"])] = pid
        except (OSError, KeyError, ValueError):
            pass
    return ranks


def across_ranks(r, only, stall_seconds):
    rows = []
    np = 4
    if want(only, "stall"):
        window = {}
        metrics = os.path.join(r.tmp, "stall_metrics.jsonl")

        def stall(proc):
            deadline = time.monotonic() + 60
            ranks = {}
            while len(ranks) < np and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.2)
                ranks = rank_pids(proc.pid)
            if len(ranks) < np:
                return
            # Into training: rank 0's first evaluation line.
            while proc.poll() is None and time.monotonic() < deadline and (
                    not os.path.exists(metrics) or os.path.getsize(metrics) == 0):
                time.sleep(0.05)
            window["first_eval"] = time.monotonic()
            time.sleep(0.5)
            os.kill(ranks[2], signal.SIGSTOP)
            window["stop"] = time.monotonic()
            time.sleep(stall_seconds)
            os.kill(ranks[2], signal.SIGCONT)
            window["cont"] = time.monotonic()
        rc, wall, s, _ = r.run(["--metrics", metrics], mpi_ranks=np,
                               during=stall)
        # Rank 0's steps per second before and during the stall, on its own clock (its first
        # evaluation line is the common point of the two clocks).
        rate = {}
        try:
            with open(metrics) as f:
                points = [json.loads(l) for l in f if '"event"' not in l]
            t0 = points[0]["time_s"]
            stop = t0 + window["stop"] - window["first_eval"]
            cont = t0 + window["cont"] - window["first_eval"]

            def steps_per_s(a, b):
                inside = [p for p in points if a <= p["time_s"] <= b]
                if len(inside) < 2:
                    return None
                return (inside[-1]["step"] - inside[0]["step"]) / (inside[-1]["time_s"] - inside[0]["time_s"])
            rate = {"before": steps_per_s(t0, stop), "during": steps_per_s(stop, cont)}
        except (OSError, KeyError, IndexError, ValueError):
            pass
        if rate.get("before") and rate.get("during"):
            seen = (f"rank 0 stepped {rate['during']:.0f}/s during the stall vs "
                    f"{rate['before']:.0f}/s before ({rate['during'] / rate['before']:.2f})")
        else:
            seen = "rank 0 reached the target before or without a measurable stall window"
        rows.append(row("rank stalled", f"SIGSTOP rank 2 for {stall_seconds:.0f} s, then SIGCONT",
                        f"exit {rc}; {seen}; job ended normally after SIGCONT", reached(s), s,
                        wall, {"rank0_steps_per_s": rate}))
    if want(only, "rankkill"):
        rows.append(interrupted(
            r, [], "kill:0:600", "rank killed", "--fault kill:0:600 (SIGKILL rank 0), then --resume",
            lambda rc, wall, tail: f"job ended, exit {rc}, {wall:.1f} s: {error_line(tail)}",
            mpi_ranks=np))
    if want(only, "wire"):
        for kind, label in (("corrupt", "corrupted message"), ("forge-offset", "forged header"),
                            ("forge-length", "forged header"),
                            ("forge-fingerprint", "forged header"), ("replay", "replayed message")):
            rc, wall, s, _ = r.run(["--fault", f"{kind}:1:2"], mpi_ranks=np)
            counted = {k: v for k, v in (s or {}).get("wire_rejections", {}).items() if v}
            rows.append(row(label, f"--fault {kind}:1:2 (every 2nd message of rank 1)",
                            f"exit {rc}; rejected on arrival: {counted or 'none'}", reached(s),
                            s, wall, {"wire_rejections": counted}))
    return rows


def want(only, name):
    return not only or name in only


def markdown(rows):
    lines = ["| fault | injected | what happened | reached 0.85 | time to 0.85 (s) |",
             "|---|---|---|---|---|"]
    for x in rows:
        t = x["time_to_target_s"]
        lines.append(f"| {x['fault']} | `{x['injected']}` | {x['what_happened']} | "
                     f"{'yes' if x['reached_target'] else 'no'} | "
                     f"{'-' if t is None else f'{t:.1f}'} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--max-seconds", type=float, default=60)
    ap.add_argument("--stall-seconds", type=float, default=5)
    ap.add_argument("--only", default="", help="comma-separated: reference,byzantine,nan,"
                    "exception,kill,stall,rankkill,wire")
    ap.add_argument("--no-mpi", action="store_true")
    ap.add_argument("--out", default=os.path.join(runs.ROOT, "bench", "results", "faults.json"))
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    binary = runs.asgd_binary(a.build)
    tmp = tempfile.mkdtemp(prefix="asgd_faults_")
    try:
        r = Runner(binary, a.max_seconds, tmp)
        rows = in_process(r, only)
        if not a.no_mpi and shutil.which("mpirun"):
            rows += across_ranks(r, only, a.stall_seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = markdown(rows)
    print(table)
    runs.write_result(a.out, "faults", {
        "dataset": "fashion-mnist", "model": "mlp 784-256-256-10", "batch": 64, "lr": 0.1,
        "target": 0.85, "workers": 4, "max_seconds": a.max_seconds, "rows": rows,
        "table_markdown": table})


if __name__ == "__main__":
    main()
