#!/usr/bin/python3
"""asgd on 2 MPI ranks against PyTorch DistributedDataParallel over gloo: time to 85%.

Fashion-MNIST, MLP 784-256-256-10, batch 64 per rank, plain SGD, 2 ranks on each side.

asgd: `mpirun --oversubscribe --bind-to none -np 2 BUILD/bin/asgd train --model mlp
--hidden 256,256 --batch 64 --lr LR --target-accuracy 0.85 --eval-every E ...`; its time is
the summary's `time_to_target_s` (wall time on rank 0 from the start of training, after
loading the data and building the model, to worker 0's first evaluation at or above the
target, evaluations included). asgd communicates as it does by default (the load balancer);
--asgd-options='--balance off' sends the whole state every step instead.

PyTorch: Debian's python3-torch (OpenBLAS), 2 processes started by torch.multiprocessing.spawn,
process group over gloo on 127.0.0.1 (GLOO_SOCKET_IFNAME=lo unless set: TCP over loopback,
gloo has no shared-memory transport), torch.set_num_threads(1) in each; nn.Sequential of
Linear/ReLU with PyTorch's default initialisation, DistributedDataParallel (defaults), SGD
without momentum, softmax cross-entropy (mean over the batch). The data are normalised as
asgd does by default for IDX files (`--normalize auto` = unit: divide by the largest value
of the training set). Each rank trains on its own half of the training set (a seeded
permutation, rows rank::2, as asgd shards) with a per-epoch random permutation of its half;
rank 0 evaluates the 10000 test rows every E steps (the other rank waits for its verdict),
and its time to target is measured like asgd's: from a barrier after loading the data and
building the model to the end of the first evaluation at or above the target, evaluations
included.

For each step size of --lrs (0.05,0.1,0.2,0.4) each system runs --repeats times (3; 1 with
--quick), alternating; a run stops at the target, at --max-seconds or at --epochs. The table
shows medians in which a run that missed the target counts as infinitely slow. Then the two
comparisons the issue asks for, each `ratio = DDP time / asgd time` (above 1: asgd is
faster) against the bar 2.5: both at lr 0.05, and each at its best lr (smallest median).
When DDP misses the target, its cap stands in for its time and the ratio is a lower bound
(">=").

    bench/ddp_compare.py [--build build] [--lrs 0.05,0.1,0.2,0.4] [--repeats 3] [--quick]
                         [--eval-every 100] [--max-seconds 120]
                         [--out bench/results/ddp_compare.json]
"""
import os
import sys

# One thread for OpenBLAS and OpenMP here, in the spawned ranks and in asgd's (before numpy
# and torch load).
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

SYSTEM_PYTHON = "/usr/bin/python3"


def _ensure_torch():
    """Re-runs the program under Debian's /usr/bin/python3 (python3-torch, python3-numpy) when
    the python3 on PATH (e.g. a pyenv one) has no torch."""
    import importlib.util
    if all(importlib.util.find_spec(m) is not None for m in ("torch", "numpy")):
        return
    if __name__ == "__main__" and os.path.exists(SYSTEM_PYTHON) and \
            os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON):
        print(f"torch is missing for {sys.executable}; running under {SYSTEM_PYTHON}",
              file=sys.stderr, flush=True)
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, os.path.abspath(sys.argv[0]), *sys.argv[1:]])
    sys.exit(f"torch or numpy is missing for {sys.executable}: install python3-torch")


_ensure_torch()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shlex  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import runs  # noqa: E402
from fashion_mnist import fashion_mnist_dir, load_fashion_mnist  # noqa: E402
import study  # noqa: E402

RANKS = 2
BATCH = 64
HIDDEN = (256, 256)
BAR = 2.5
SYSTEMS = ("asgd", "ddp")
TORCH_INIT = ("PyTorch defaults: nn.Linear weights kaiming_uniform_(a=sqrt(5)), i.e. "
              "U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)); "
              "torch.manual_seed(seed) on every rank, DDP broadcasts rank 0's state")
ASGD_INIT = "asgd's Model::init: every tensor U(-1/sqrt(fan_in), 1/sqrt(fan_in)) from --seed"


# ----------------------------------------------------------------------------------------
# The PyTorch side: one process per rank (torch.multiprocessing.spawn).

def mlp():
    layers, width = [], 784
    for h in HIDDEN:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, 10))
    return torch.nn.Sequential(*layers)


def ddp_rank(rank, world, cfg):
    """One rank of a DDP run; rank 0 writes the result to cfg['result']."""
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(cfg["port"])
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=cfg["max_seconds"] + 300))
    try:
        _ddp_train(rank, world, cfg)
    finally:
        dist.destroy_process_group()


def _ddp_train(rank, world, cfg):
    data = cfg["data"]
    seed = cfg["seed"]
    x_all = np.load(os.path.join(data, "x_train.npy"))
    y_all = np.load(os.path.join(data, "y_train.npy"))
    # asgd's shard(): a seeded permutation of all rows, then rows rank, rank + world, ...
    order = np.random.default_rng(seed).permutation(x_all.shape[0])[rank::world]
    x_shard = torch.from_numpy(np.ascontiguousarray(x_all[order]))
    y_shard = torch.from_numpy(np.ascontiguousarray(y_all[order]))
    del x_all, y_all
    if rank == 0:
        x_test = torch.from_numpy(np.load(os.path.join(data, "x_test.npy")))
        y_test = torch.from_numpy(np.load(os.path.join(data, "y_test.npy")))
    rows, batch, lr = x_shard.shape[0], cfg["batch"], cfg["lr"]

    torch.manual_seed(seed)
    model = mlp()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.0)
    sampler = torch.Generator().manual_seed(seed + 1 + 7919 * rank)
    max_steps = max(1, round(cfg["epochs"] * (rows // batch)))
    eval_every, target, cap = cfg["eval_every"], cfg["target"], cfg["max_seconds"]
    verdict = torch.zeros(1, dtype=torch.int64)  # 0 go on, else why rank 0 stops
    reasons = {1: "target", 2: "max-seconds", 3: "epochs", 4: "diverged"}
    history, eval_s, loss_sum, since_eval = [], 0.0, 0.0, 0
    time_to_target, perm, pos, step = None, None, rows, 0

    dist.barrier()
    start = time.perf_counter()
    while True:
        if pos + batch > rows:  # a new epoch of this rank's shard
            perm, pos = torch.randperm(rows, generator=sampler), 0
        idx = perm[pos:pos + batch]
        pos += batch
        x, y = x_shard[idx], y_shard[idx]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ddp(x), y)
        loss.backward()  # DDP averages the gradients over the ranks (gloo allreduce)
        opt.step()
        step += 1
        loss_sum += loss.item()
        since_eval += 1
        if step % eval_every != 0 and step < max_steps:
            continue
        if rank == 0:
            t0 = time.perf_counter()
            with torch.no_grad():
                logits = model(x_test)
                test_loss = F.cross_entropy(logits, y_test).item()
                correct = int((logits.argmax(dim=1) == y_test).sum())
            eval_s += time.perf_counter() - t0
            now = time.perf_counter() - start
            accuracy = correct / y_test.shape[0]
            history.append({"worker": 0, "time_s": now, "step": step, "samples": step * batch,
                            "epoch": step * batch / rows, "train_loss": loss_sum / since_eval,
                            "test_loss": test_loss, "test_accuracy": accuracy})
            loss_sum, since_eval = 0.0, 0
            if not math.isfinite(test_loss):
                verdict[0] = 4
            elif accuracy >= target:
                time_to_target, verdict[0] = now, 1
            elif cap > 0 and now >= cap:
                verdict[0] = 2
            elif step >= max_steps:
                verdict[0] = 3
        dist.broadcast(verdict, src=0)
        if int(verdict[0]) != 0:
            break
    train_s = time.perf_counter() - start
    if rank != 0:
        return
    last = history[-1]
    result = {
        "time_to_target_s": time_to_target, "stop_reason": reasons[int(verdict[0])],
        "steps": step, "samples": step * batch, "train_seconds": train_s,
        "eval_seconds": eval_s, "final_test_accuracy": last["test_accuracy"],
        "final_test_loss": last["test_loss"], "shard_rows": rows,
        "samples_per_s": world * step * batch / (train_s - eval_s) if train_s > eval_s else None,
        "history": history}
    with open(cfg["result"], "w") as f:
        json.dump(result, f)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(lr, seed, args, data_dir):
    """One DDP run of RANKS spawned processes; a record like run_asgd's."""
    rec = {"system": "ddp", "lr": lr, "seed": seed}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"data": data_dir, "seed": seed, "lr": lr, "batch": BATCH, "epochs": args.epochs,
               "eval_every": args.eval_every, "target": args.target,
               "max_seconds": args.max_seconds, "port": free_port(),
               "result": os.path.join(tmp, "result.json")}
        try:
            mp.spawn(ddp_rank, args=(RANKS, cfg), nprocs=RANKS, join=True)
            with open(cfg["result"]) as f:
                result = json.load(f)
        except Exception as e:  # noqa: BLE001  (a rank failed: recorded, counted as a miss)
            lines = [l for l in str(e).splitlines() if l.strip()]
            rec.update(error=lines[-1] if lines else repr(e), time_to_target_s=None, _metrics=[])
            return rec
    history = result.pop("history")
    rec.update(result, curve=study.curve(history, workers=(0,)), _metrics=history)
    if result["stop_reason"] == "diverged":
        rec["error"] = f"training diverged at step {result['steps']} (test loss not finite)"
    return rec


# ----------------------------------------------------------------------------------------
# The asgd side: mpirun -np 2 asgd train.

def asgd_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def speaks_mpi(binary):
    """Whether this asgd runs one worker per rank under mpirun (an MPI build with the MPI
    transport); an older or MPI-less build would train 2 independent single workers."""
    try:
        info = subprocess.run([binary, "info"], capture_output=True, text=True, timeout=60)
        helptext = subprocess.run([binary, "train", "--help"], capture_output=True, text=True,
                                  timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "MPI yes" in info.stdout and "--transport" in helptext.stdout


def pick_binary(build, explicit):
    """BUILD/bin/asgd; without --build: build/, else build-host/ when build/'s is missing or
    cannot run across MPI ranks (built without MPI, or before the MPI transport)."""
    candidates = [build] if explicit else [build, os.path.join(runs.ROOT, "build-host")]
    paths = [os.path.join(b, "bin", "asgd") for b in candidates]
    for path in paths:
        if os.path.exists(path) and speaks_mpi(path):
            if path != paths[0]:
                print(f"note: {paths[0]} is missing or cannot train across MPI ranks (`asgd "
                      f"info`, `asgd train --help`); using {path}", file=sys.stderr)
            return path
    raise SystemExit(f"{' and '.join(paths)}: missing, or cannot train across MPI ranks "
                     "(`asgd info` must say MPI yes, `asgd train --help` list --transport): "
                     "build with MPI (scripts/build.sh) or pass --build DIR")


def asgd_args(lr, seed, args):
    return [*study.MLP, "--lr", lr, "--target-accuracy", args.target,
            "--eval-every", args.eval_every, "--epochs", args.epochs,
            "--max-seconds", args.max_seconds, *args.asgd_options,
            "--seed", seed]


def run_asgd(binary, lr, seed, args):
    """One `mpirun -np 2 asgd train` run; its summary, worker 0's evaluations."""
    targs = [str(a) for a in asgd_args(lr, seed, args)]
    rec = {"system": "asgd", "lr": lr, "seed": seed, "args": targs}
    with tempfile.TemporaryDirectory() as tmp:
        summary_path = os.path.join(tmp, "summary.json")
        metrics_path = os.path.join(tmp, "metrics.jsonl")
        cmd = [args.mpirun, "--oversubscribe", "--bind-to", "none", "-np", str(RANKS), binary,
               "train", *targs, "--summary", summary_path, "--metrics", metrics_path,
               "--no-progress"]
        rec["command"] = " ".join(shlex.quote(c) for c in cmd)
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=asgd_env(),
                                  timeout=args.max_seconds + 300)
        except subprocess.TimeoutExpired:
            rec.update(error="mpirun timed out", time_to_target_s=None, _metrics=[])
            return rec
        if done.returncode != 0 or not os.path.exists(summary_path):
            if "training diverged" not in done.stderr:
                raise SystemExit(f"{rec['command']}\nfailed (exit code {done.returncode}); the "
                                 f"comparison stops:\n{done.stderr}")
            lines = [l for l in done.stderr.splitlines() if l.strip()]
            lines = [l for l in lines if "error" in l.lower()] or lines
            rec.update(error=lines[0] if lines else f"exit status {done.returncode}",
                       time_to_target_s=None, _metrics=[])
            return rec
        with open(summary_path) as f:
            summary = json.load(f)
        runs.note_binary_commit(summary.get("commit"))
        with open(metrics_path) as f:
            metrics = [json.loads(l) for l in f if l.strip()]
    if summary.get("workers") != RANKS:
        raise SystemExit(f"{binary} ran {summary.get('workers')} worker(s) under mpirun -np "
                         f"{RANKS}: it does not train across ranks (an MPI-less build?)")
    rec.update(summary=summary, time_to_target_s=summary.get("time_to_target_s"),
               stop_reason=summary.get("stop_reason"), steps=summary.get("steps"),
               train_seconds=summary.get("train_seconds"),
               eval_seconds=summary.get("eval_seconds"),
               final_test_accuracy=summary.get("final_test_accuracy"),
               samples_per_s=summary.get("samples_per_s"),
               curve=study.curve(metrics, workers=(0,)), _metrics=metrics)
    return rec


# ----------------------------------------------------------------------------------------
# Tables and the comparisons.

def steps_to_target(rec, target):
    for m in rec.get("_metrics") or []:
        if m.get("worker") == 0 and (m.get("test_accuracy") or 0) >= target:
            return m["step"]
    return None


def summarise(recs, target):
    ok = [r for r in recs if "error" not in r]
    times = [r.get("time_to_target_s") if "error" not in r else None for r in recs]
    return {"repeats": len(recs), "failed": len(recs) - len(ok),
            "reached": sum(t is not None for t in times),
            "time_to_target_s": study.median_or_none(times),
            "times": times,
            "steps_to_target": study.median_or_none(
                [steps_to_target(r, target) if "error" not in r else None for r in recs]),
            "final_test_accuracy": study.median_of(recs, lambda r: r.get("final_test_accuracy")),
            "samples_per_s": study.median_of(recs, lambda r: r.get("samples_per_s"))}


def compare(asgd_row, ddp_row, cap, label):
    """ratio = DDP time / asgd time; DDP's cap stands in when it missed (a lower bound)."""
    a, d = asgd_row["time_to_target_s"], ddp_row["time_to_target_s"]
    lower_bound = d is None
    ddp_time = cap if lower_bound else d
    ratio = ddp_time / a if a and ddp_time else None
    met = ratio is not None and ratio >= BAR
    shown = "n/a" if ratio is None else (">=" if lower_bound else "") + f"{ratio:.2f}"
    return {"label": label, "asgd_lr": asgd_row["lr"], "ddp_lr": ddp_row["lr"],
            "asgd_time_to_target_s": a, "ddp_time_to_target_s": d, "ratio": ratio,
            "lower_bound": lower_bound, "bar": BAR, "met": met, "shown": shown}


def reached(row):
    """'k/n' runs that reached the target; '!' when some failed (e.g. diverged)."""
    return f"{row['reached']}/{row['repeats']}" + ("!" if row["failed"] else "")


def best(rows):
    return min(rows, key=lambda r: (r["time_to_target_s"] if r["time_to_target_s"] is not None
                                    else math.inf, -(r["final_test_accuracy"] or 0)))


def describe(rec):
    if "error" in rec:
        return f"failed: {rec['error']}"
    t = rec.get("time_to_target_s")
    acc = rec.get("final_test_accuracy")
    return ((f"{t:.2f} s to target" if t is not None else "target not reached")
            + f" ({rec.get('steps')} steps, stopped by {rec.get('stop_reason')})"
            + (f", final accuracy {acc:.4f}" if acc is not None else ""))


def blas_library():
    """The BLAS shared library this process (torch) has loaded, resolved."""
    torch.mm(torch.ones(2, 2), torch.ones(2, 2))
    try:
        with open("/proc/self/maps") as f:
            libs = {l.split()[-1] for l in f if "blas" in l.lower() and "/" in l}
    except OSError:
        return None
    return sorted({os.path.realpath(p) for p in libs}) or None


def mpirun_version(mpirun):
    try:
        out = subprocess.run([mpirun, "--version"], capture_output=True, text=True, timeout=60)
        return (out.stdout.strip().splitlines() or [None])[0]
    except (OSError, subprocess.TimeoutExpired):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--build", help="build folder holding bin/asgd (default: build, else "
                                    "build-host when build's asgd is missing or has no MPI)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ddp_compare.json"),
                    help="result JSON; the plots go next to it (.png, _samples.png)")
    ap.add_argument("--lrs", default="0.05,0.1,0.2,0.4", help="step sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each (system, lr)")
    ap.add_argument("--quick", action="store_true", help="one run of each (system, lr)")
    ap.add_argument("--seed", type=int, default=1, help="repeat r runs with seed SEED+r")
    ap.add_argument("--target", type=float, default=0.85, help="test accuracy to reach")
    # 100, as convergence.py: at 500 a time to target is rounded up to the next multiple of
    # 500 steps, up to 40% of asgd's ~1,700 steps and nothing of DDP's 1,000 at lr 0.4.
    ap.add_argument("--eval-every", type=int, default=100,
                    help="steps between evaluations, both systems")
    ap.add_argument("--max-seconds", type=float, default=120,
                    help="wall-time cap of each run (DDP checks it at its evaluations)")
    ap.add_argument("--epochs", type=float, default=1000, help="epoch cap (large: time decides)")
    ap.add_argument("--mpirun", default="mpirun", help="the MPI launcher")
    ap.add_argument("--asgd-options", default="",
                    help="more `asgd train` options for the asgd runs, one quoted string, "
                         "e.g. --asgd-options='--message-size 20000'")
    args = ap.parse_args()
    if args.quick:
        args.repeats = 1
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.eval_every < 1:
        ap.error("--eval-every must be at least 1")
    lrs = study.floats(args.lrs)
    if not lrs:
        ap.error("--lrs is empty")
    args.asgd_options = shlex.split(args.asgd_options)
    study.check_configs([study.config("asgd", asgd_args(lrs[0], args.seed, args)[:-2])])
    explicit = args.build is not None
    binary = pick_binary(args.build or os.path.join(runs.ROOT, "build"), explicit)
    if 0.05 not in lrs:
        print("note: lr 0.05 is not in --lrs: no same-step-size comparison", file=sys.stderr)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")

    with tempfile.TemporaryDirectory(prefix="ddp_compare_") as data_dir:
        xtr, ytr, xte, yte, largest = load_fashion_mnist(fashion_mnist_dir())
        for name, arr in (("x_train", xtr), ("y_train", ytr), ("x_test", xte), ("y_test", yte)):
            np.save(os.path.join(data_dir, name + ".npy"), arr)
        shapes = {"train_rows": int(xtr.shape[0]), "test_rows": int(xte.shape[0]),
                  "features": int(xtr.shape[1]), "scaled_by": largest}
        del xtr, ytr, xte, yte

        results = {(s, lr): [] for s in SYSTEMS for lr in lrs}
        total, done = 2 * len(lrs) * args.repeats, 0
        for r in range(args.repeats):
            seed = args.seed + r
            # Alternate which system goes first, so that drifting machine load hits both.
            order = SYSTEMS if r % 2 == 0 else tuple(reversed(SYSTEMS))
            for lr in lrs:
                for system in order:
                    rec = (run_asgd(binary, lr, seed, args) if system == "asgd"
                           else run_ddp(lr, seed, args, data_dir))
                    rec["repeat"] = r
                    results[(system, lr)].append(rec)
                    done += 1
                    print(f"[{done}/{total}] {system} lr {lr:g} repeat {r}: {describe(rec)}",
                          file=sys.stderr, flush=True)

    rows = {s: [] for s in SYSTEMS}
    for s in SYSTEMS:
        for lr in lrs:
            rows[s].append({"system": s, "lr": lr, **summarise(results[(s, lr)], args.target)})

    print(f"# ddp_compare: Fashion-MNIST, mlp 784-256-256-10, batch {BATCH} per rank, "
          f"{RANKS} ranks, plain SGD, target {args.target:g}, eval every {args.eval_every} "
          f"steps, cap {args.max_seconds:g} s, {args.repeats} repeat(s), medians")
    print("# ratio = DDP time to target / asgd time to target (above 1: asgd is faster)")
    table, printed = [], []
    for a, d in zip(rows["asgd"], rows["ddp"]):
        c = compare(a, d, args.max_seconds, f"lr {a['lr']:g}")
        table.append({"lr": a["lr"], "asgd": a, "ddp": d, "ratio": c["ratio"],
                      "ratio_lower_bound": c["lower_bound"]})
        printed.append([a["lr"], reached(a), a["time_to_target_s"], a["steps_to_target"],
                        reached(d), d["time_to_target_s"], d["steps_to_target"], c["shown"]])
    study.print_table(
        [("lr", 5, "g"), ("asgd_reached", 12, ""), ("asgd_median_s", 13, ".2f"),
         ("asgd_steps", 10, ".0f"), ("ddp_reached", 11, ""), ("ddp_median_s", 12, ".2f"),
         ("ddp_steps", 9, ".0f"), ("ratio", 7, "")],
        printed)
    if any(r["failed"] for s in SYSTEMS for r in rows[s]):
        print("# !: some runs failed (see 'error' in the JSON), e.g. diverged")

    comparisons = {}
    if 0.05 in lrs:
        i = lrs.index(0.05)
        comparisons["same_lr"] = compare(rows["asgd"][i], rows["ddp"][i], args.max_seconds,
                                         "both at lr 0.05")
    comparisons["best_vs_best"] = compare(best(rows["asgd"]), best(rows["ddp"]),
                                          args.max_seconds, "each at its best lr")
    print()
    print(f"#{'comparison':>23} {'asgd_lr':>7} {'asgd_s':>7} {'ddp_lr':>6} {'ddp_s':>7} "
          f"{'ratio':>7} {'bar':>4} {'met':>4}")
    for c in comparisons.values():
        a_s = study.cell(c["asgd_time_to_target_s"], ".2f")
        d_s = study.cell(c["ddp_time_to_target_s"], ".2f")
        print(f"{c['label']:>24} {c['asgd_lr']:>7g} {a_s:>7} {c['ddp_lr']:>6g} {d_s:>7} "
              f"{c['shown']:>7} {BAR:>4g} {'yes' if c['met'] else 'no':>4}")

    for s in SYSTEMS:
        b = best(rows[s])
        if len(lrs) > 1 and b["lr"] == max(lrs) and b["time_to_target_s"] is not None:
            print(f"# note: {s}'s best lr {b['lr']:g} is the largest tried; its optimum may lie "
                  "above (add larger step sizes to --lrs)")

    # Curves: the run nearest the median of each system at its best lr (and at 0.05).
    picks = []
    for s in SYSTEMS:
        chosen = [best(rows[s])["lr"]] + ([0.05] if 0.05 in lrs else [])
        for lr in dict.fromkeys(chosen):
            rec = study.representative(results[(s, lr)], lambda r: r.get("time_to_target_s"))
            picks.append((rec, f"{'asgd (MPI)' if s == 'asgd' else 'PyTorch DDP (gloo)'}, "
                               f"{RANKS} ranks, lr {lr:g}"))
    plots = study.plot_records([p[0] for p in picks], [p[1] for p in picks], args.out,
                               target=args.target,
                               title=f"Fashion-MNIST MLP, {RANKS} ranks: asgd against "
                                     "PyTorch DDP")

    machine = runs.machine()
    machine.update(torch=torch.__version__, numpy=np.__version__, torch_blas=blas_library(),
                   mpirun=mpirun_version(args.mpirun))
    sample = next((r for lr in lrs for r in results[("asgd", lr)] if r.get("summary")), None)
    head = subprocess.run(["git", "-C", runs.ROOT, "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    runs.write_result(args.out, "ddp_compare", {
        "machine": machine, "commit_full": head or None,
        "asgd_binary": os.path.relpath(binary, runs.ROOT),
        "asgd_binary_commit": sample["summary"].get("commit") if sample else None,
        "dataset": "fashion-mnist", "data": shapes, "normalize": "unit (asgd's auto for IDX)",
        "model": "mlp 784-256-256-10", "batch_per_rank": BATCH, "ranks": RANKS,
        "optimizer": "SGD, no momentum, no weight decay", "target": args.target,
        "eval_every": args.eval_every, "max_seconds": args.max_seconds, "epochs": args.epochs,
        "lrs": lrs, "repeats": args.repeats, "seed": args.seed,
        "asgd_options": args.asgd_options,
        "asgd": {"launch": f"{args.mpirun} --oversubscribe --bind-to none -np {RANKS}",
                 "init": ASGD_INIT, "threads": 1,
                 "time": "summary time_to_target_s (rank 0)"},
        "ddp": {"backend": "gloo", "launch": "torch.multiprocessing.spawn",
                "gloo_socket_ifname": os.environ.get("GLOO_SOCKET_IFNAME"),
                "init": TORCH_INIT, "threads": "torch.set_num_threads(1) per rank",
                "evaluation": "rank 0, all test rows in one forward; the other rank waits",
                "time": "rank 0, from a barrier after setup to the end of the first "
                        "evaluation at or above the target"},
        "bar": BAR, "table": table, "comparisons": comparisons,
        "plots": [os.path.relpath(p, os.path.dirname(os.path.abspath(args.out)))
                  for p in plots],
        "runs": [study.public(r) for s in SYSTEMS for lr in lrs for r in results[(s, lr)]]})


if __name__ == "__main__":
    main()
