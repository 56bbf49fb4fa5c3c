#!/usr/bin/env python3
"""Communication frequency and message size, measured: time to target of asgd with fixed
(message size, send interval) settings against the load balancer (--balance auto), on
emulated links of several bandwidths.

Experiments (--experiments, default grid,hetero,drop), each for every model of --models
(mlp,kmeans):

  grid    for each link bandwidth of --bandwidths (1e10,1e9,1e8,1e7 bytes/s; every link,
          latency --latency 5e-5 s), --workers (2) workers: every fixed setting of the grid
          --messages (1,1/8,1/64 of the state; 1 = the whole state) x --intervals (1,4,16
          steps), run with --balance off --message-size M --send-interval K, and
          --balance auto. Per bandwidth: the best fixed setting, the default fixed setting
          (whole state every step), auto, auto/best and auto/default. The issue's criteria:
          on every bandwidth auto within 15% of the best fixed setting (auto/best <= 1.15)
          and never later than the default (auto/default <= 1).
  hetero  --hetero-workers (4) workers, every link --hetero-bandwidth (1e8) bytes/s except
          the pair --hetero-pair (0,1), both directions, --hetero-factor (10) times slower (a
          link-bandwidth matrix in a temporary TOML config file): auto against every fixed
          setting of the grid applied to all pairs (with a fixed setting each message goes
          to a peer drawn uniformly).
  drop    --workers workers, links at --drop-from (1e9) bytes/s that become --drop-to (2e7)
          at --drop-at seconds (--link-change); without --drop-at, half of the run time of
          auto on the same links without the drop (a calibration run per round, also the
          no-drop control). Settings --drop-settings (auto,default). Per run: worker steps/s
          before and after the drop from the evaluation lines (the steps at the drop
          interpolated between the evaluations around it), after/before (the issue asks
          >= 0.9 for auto, worker 0 and the slowest worker) and whether the target is still
          reached. The runs' metrics are kept (for bench/plot.py --mode balance).

Models: mlp = Fashion-MNIST, MLP 784-256-256-10, batch 64, lr --lr (0.1), until worker 0
reaches --target (0.85) test accuracy or --max-seconds (60) pass (--epochs 1000), evaluating
every --eval-every (100) steps; time to target = the summary's time_to_target_s. kmeans =
--kmeans-dataset (blobs:200000,32,64), --clusters 64, batch 64, lr --kmeans-lr (20),
--merge average, --kmeans-epochs (10) epochs, evaluating every --kmeans-eval-every (200)
steps; time to target = wall time to worker 0's first
evaluation with objective (test loss) <= --kmeans-target, by default reference * (1 +
--tolerance (0.05)), where the reference is the level a run settles at (the median of worker
0's objective over the second half of its evaluations; median over rounds) of --workers
workers with the default fixed setting on unlimited links (--kmeans-reference ideal; 'local':
one worker --algo local at the same settings). bench/kmeans.py's race is --kmeans-lr 3
--kmeans-eval-every 5 --kmeans-epochs 1 --kmeans-target 16.37 (1.02 of the lowest objective
one worker reaches on most seeds) --common='--test-fraction 0.02' (bench/README.md). Every
configuration runs --rounds (3) times, alternated, seeds --seed + r; medians, a missed
target counting as infinitely slow.

--settings M:K,... (grid, hetero): exactly these fixed settings instead of --messages x
--intervals, e.g. a longer run of an earlier run's leading settings (1:16,1/64:1,1/8:4).

--baseline BUILD (grid, hetero): auto also runs with BUILD's bin/asgd (an earlier commit's
build), as the setting "baseline", alternated with the others and with the same options: a
change to the controller measured against the controller before it in one script, where
the machine's drift between sessions cannot pass for the change. Its row's auto/this_paired
is this build's auto over the baseline's; it is never the best fixed setting.

--mpi runs the same under `mpirun --oversubscribe --bind-to none -np N` (N = the workers of
the experiment, one per rank; the MPI transport emulates the links); the outputs get
"_mpi" in their names. Options this driver does not know (e.g. --rho 0.3, --peers
bandwidth) go to the auto runs only; --common to every run.

Writes OUT_<model>.json (grid), OUT_hetero_<model>.json, OUT_drop_<model>.json with PNGs next
to them (OUT = --out without .json, default bench/results/comm_study).

    bench/comm_study.py [--experiments grid,hetero,drop] [--models mlp,kmeans]
        [--bandwidths 1e10,1e9,1e8,1e7] [--latency 5e-5] [--messages 1,1/8,1/64]
        [--intervals 1,4,16] [--workers 2] [--mpi] [--rounds 3] [--max-seconds 60]
        [--quick] [--baseline BUILD] [asgd options for the auto runs]
    bench/comm_study.py --reanalyze RESULT.json...   (the comparisons again, from the stored
        runs: after a change to how they are computed)
    bench/comm_study.py --pool OUT.json RESULT.json RESULT.json...   (grid results of the
        same experiment as one of all their rounds: tables and comparisons over them all)
"""
import json
import math
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from fractions import Fraction

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import plot  # noqa: E402
import runs  # noqa: E402
import study  # noqa: E402

EXPERIMENTS = ("grid", "hetero", "drop")
MODELS = ("mlp", "kmeans")
WITHIN_BEST = 1.15  # the issue: auto within 15% of the best fixed setting
CURVE_KEYS = ("worker", "time_s", "step", "samples", "test_accuracy", "test_loss",
              "messages_accepted", "messages_rejected")  # of worker 0's evaluations, in the JSON
# The JSON keeps the curves of the first CURVE_ROUNDS rounds, each at most CURVE_POINTS
# evaluations (evenly strided, the last kept): K-Means evaluated every 5 steps over 15 rounds
# made a 28 MB file otherwise. Times to target come from every evaluation, in memory.
CURVE_ROUNDS = 3
CURVE_POINTS = 100


def stored_run(rec, model):
    """The record as it goes into the JSON: study.public with its time and samples to target
    and its curve thinned (or dropped after the first CURVE_ROUNDS rounds)."""
    out = study.public(rec)
    out["time_to_target_s"] = model.time_to_target(rec)
    out["samples_to_target"] = model.samples_to_target(rec)
    curve = out.get("curve")
    if not curve:
        return out
    if rec.get("round", 0) >= CURVE_ROUNDS:
        out["curve"] = None
        return out
    n = len(next(iter(curve.values())))
    if n > CURVE_POINTS:
        # CURVE_POINTS - 1 strided points and the last
        stride = math.ceil((n - 1) / (CURVE_POINTS - 1))
        keep = list(range(0, n - 1, stride)) + [n - 1]
        out["curve"] = {k: [v[i] for i in keep] for k, v in curve.items()}
    return out


# ----------------------------------------------------------------------------------------
# Command line.

def message_fraction(text, option):
    """One message size as a fraction of the state, in (0, 1]; `option` names it in errors."""
    try:
        f = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        f = None
    if f is None or not 0 < f <= 1:
        raise SystemExit(f"{option}: {text.strip()} is not a fraction of the state in (0, 1]")
    return f


def fractions(text):
    return sorted({message_fraction(v, "--messages") for v in text.split(",") if v.strip()},
                  reverse=True)


def settings_list(text):
    """--settings "M:K,...": fixed (message fraction, interval) pairs, in the order given."""
    out = []
    for v in (v.strip() for v in text.split(",")):
        if not v:
            continue
        m, sep, k = v.partition(":")
        if not sep or not k.strip().isdigit() or int(k) < 1:
            raise SystemExit(f"--settings: {v} is not MESSAGE:INTERVAL, an interval of at least "
                             "1 (e.g. 1/8:4)")
        out.append((message_fraction(m, "--settings"), int(k)))
    if not out:
        raise SystemExit("--settings: no setting given")
    return list(dict.fromkeys(out))


def ints(text):
    return sorted({int(v) for v in text.split(",") if v.strip()})


def names(text, known, what):
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in chosen if v not in known]
    if bad or not chosen:
        raise SystemExit(f"--{what}: unknown {', '.join(bad) or '(none)'}; known: "
                         f"{', '.join(known)}")
    return chosen


def arguments():
    ap = study.parser(__doc__, "comm_study")
    ap.set_defaults(rounds=3, build=None, out=None)
    ap.add_argument("--experiments", default=",".join(EXPERIMENTS),
                    help="which of grid, hetero, drop (default all)")
    ap.add_argument("--models", default=",".join(MODELS), help="mlp, kmeans (default both)")
    ap.add_argument("--bandwidths", default="1e10,1e9,1e8,1e7",
                    help="grid: link bandwidths, bytes/s")
    ap.add_argument("--latency", type=float, default=5e-5, help="link latency, seconds")
    ap.add_argument("--messages", default="1,1/8,1/64",
                    help="fixed message sizes as fractions of the state (1: whole state)")
    ap.add_argument("--intervals", default="1,4,16", help="fixed send intervals, steps")
    ap.add_argument("--settings", metavar="M:K,...",
                    help="grid, hetero: exactly these fixed settings (e.g. 1:16,1/64:1,1/8:4) "
                         "instead of --messages x --intervals; for a longer run of an earlier "
                         "run's leading settings")
    ap.add_argument("--workers", type=int, default=2, help="workers of grid and drop")
    ap.add_argument("--mpi", action="store_true",
                    help="one rank per worker under mpirun instead of threads of one process")
    ap.add_argument("--mpirun", default="mpirun", help="the mpirun to use with --mpi")
    ap.add_argument("--max-seconds", type=float, default=60, help="wall-time cap of each run")
    ap.add_argument("--baseline", metavar="BUILD",
                    help="grid, hetero: also run auto with BUILD/bin/asgd (an earlier build), "
                         "as the setting 'baseline'")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke test: bandwidths 1e9,1e7, messages 1,1/64, intervals 1,16, "
                         "1 round, cap 30 s (explicit options win)")
    g = ap.add_argument_group("mlp")
    g.add_argument("--lr", type=float, default=0.1)
    g.add_argument("--target", type=float, default=0.85, help="test accuracy to reach")
    g.add_argument("--eval-every", type=int, default=100)
    g = ap.add_argument_group("kmeans")
    g.add_argument("--kmeans-dataset", default="blobs:200000,32,64")
    g.add_argument("--clusters", type=int, default=64)
    g.add_argument("--kmeans-lr", type=float, default=20)
    g.add_argument("--kmeans-epochs", type=float, default=10)
    g.add_argument("--kmeans-eval-every", type=int, default=200)
    g.add_argument("--kmeans-reference", choices=["ideal", "local"], default="ideal",
                   help="ideal: --workers workers, default fixed setting, unlimited links; "
                        "local: one worker --algo local")
    g.add_argument("--kmeans-target", type=float,
                   help="objective to reach (default: reference * (1 + tolerance))")
    g.add_argument("--tolerance", type=float, default=0.05)
    g = ap.add_argument_group("hetero")
    g.add_argument("--hetero-workers", type=int, default=4)
    g.add_argument("--hetero-bandwidth", type=float, default=1e8, help="bytes/s")
    g.add_argument("--hetero-factor", type=float, default=10, help="the slow pair's slow-down")
    g.add_argument("--hetero-pair", default="0,1", help="the slow pair of workers")
    g.add_argument("--with-local", action="store_true",
                   help="also run the workers with --algo local (no messages): what the "
                        "messages bring; not a fixed setting, so not in the comparison")
    g = ap.add_argument_group("drop")
    g.add_argument("--drop-from", type=float, default=1e9, help="bytes/s before the drop")
    g.add_argument("--drop-to", type=float, default=2e7, help="bytes/s after the drop")
    g.add_argument("--drop-at", type=float,
                   help="seconds into training (default: half a calibration run's time)")
    g.add_argument("--drop-settings", default="auto,default",
                   help="auto and/or default (whole state every step)")

    quick_defaults = {"bandwidths": "1e9,1e7", "messages": "1,1/64", "intervals": "1,16",
                      "rounds": 1, "max_seconds": 30}
    given = {a.split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--")}
    args, extra = study.parse(ap)
    if args.quick:
        for k, v in quick_defaults.items():
            if "--" + k.replace("_", "-") not in given:
                setattr(args, k, v)
    args.experiments = names(args.experiments, EXPERIMENTS, "experiments")
    args.models = names(args.models, MODELS, "models")
    args.drop_settings = names(args.drop_settings, ("auto", "default"), "drop-settings")
    args.bandwidths = study.floats(args.bandwidths)
    args.messages = fractions(args.messages)
    args.intervals = ints(args.intervals)
    if args.settings is not None:
        args.settings = settings_list(args.settings)
        args.messages = sorted({f for f, _ in args.settings}, reverse=True)
        args.intervals = sorted({k for _, k in args.settings})
    args.hetero_pair = ints(args.hetero_pair)
    if (len(args.hetero_pair) != 2 or min(args.hetero_pair) < 0
            or max(args.hetero_pair) >= args.hetero_workers):
        ap.error("--hetero-pair: two distinct workers below --hetero-workers")
    if args.workers < 2 or args.hetero_workers < 2:
        ap.error("--workers and --hetero-workers must be at least 2")
    if not args.intervals or min(args.intervals) < 1 or not args.messages:
        ap.error("--intervals must be >= 1; --messages and --intervals must not be empty")
    if args.out is None:
        args.out = os.path.join(runs.ROOT, "bench", "results",
                                "comm_study_mpi.json" if args.mpi else "comm_study.json")
    args.build = pick_build(args.build, args.mpi)
    return args, extra


def pick_build(build, mpi):
    """BUILD/bin/asgd; without --build, build/ or else build-host/, the first whose `asgd
    train` has the load balancer (and, with --mpi, whose `asgd info` says MPI yes)."""
    candidates = [build] if build else [os.path.join(runs.ROOT, "build"),
                                         os.path.join(runs.ROOT, "build-host")]
    why = []
    for b in candidates:
        path = os.path.join(b, "bin", "asgd")
        if not os.path.exists(path):
            why.append(f"{path} missing")
            continue
        helptext = subprocess.run([path, "train", "--help"], capture_output=True,
                                  text=True).stdout
        info = subprocess.run([path, "info"], capture_output=True, text=True).stdout
        if "--balance" not in helptext or "--link-change" not in helptext:
            why.append(f"{path} has no load balancer (--balance, --link-change)")
        elif mpi and "MPI yes" not in info:
            why.append(f"{path} is built without MPI")
        else:
            if b != candidates[0]:
                print(f"note: {'; '.join(why)}: using {path}", file=sys.stderr)
            return b
    raise SystemExit("no usable asgd: " + "; ".join(why) + " (build, or pass --build DIR)")


# ----------------------------------------------------------------------------------------
# Running asgd train, in one process or under mpirun.

def mpi_env():
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


class Runner:
    def __init__(self, args):
        self.args = args
        self.binary = runs.asgd_binary(args.build)
        self.info = self.describe(self.binary)
        self.baseline = runs.asgd_binary(args.baseline) if args.baseline else None
        self.baseline_info = self.describe(self.baseline) if self.baseline else None

    @staticmethod
    def describe(binary):
        return subprocess.run([binary, "info"], capture_output=True,
                              text=True).stdout.splitlines()[:1]

    def placement(self, workers):
        """The arguments that set the number of workers. Under mpirun the ranks do, but
        --workers N (= ranks) is passed all the same: asgd checks a link-bandwidth matrix
        against --workers before it counts the ranks, so without it a 4 x 4 matrix fails
        with 'a link matrix has 4 rows for 1 workers'."""
        return ["--workers", workers]

    def run(self, cfg, round_index, seed, keep_dir=None):
        """One run; the record has the summary, all metrics lines (in memory, `_metrics`),
        worker 0's evaluations as columns (`curve`) and, with the balancer, a digest of its
        decisions; a failed run has `error`."""
        rec = {k: v for k, v in cfg.items() if k not in ("args", "files")}
        rec.update(round=round_index, seed=seed, args=cfg["args"] + ["--seed", str(seed)])
        with tempfile.TemporaryDirectory() as tmp:
            for name, text in cfg.get("files", {}).items():
                with open(os.path.join(tmp, name), "w") as f:
                    f.write(text)
            targs = [a.replace("{tmp}", tmp) for a in rec["args"]]
            summary = os.path.join(tmp, "summary.json")
            metrics = os.path.join(tmp, "metrics.jsonl")
            cmd = [cfg.get("binary", self.binary), "train", "--no-progress", "--summary", summary,
                   "--metrics", metrics, *targs]
            env = None
            if self.args.mpi:
                cmd = [self.args.mpirun, "--oversubscribe", "--bind-to", "none", "-np",
                       str(cfg["workers"]), *cmd]
                env = mpi_env()
            rec["command"] = " ".join(shlex.quote(c) for c in cmd)
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                      timeout=cfg.get("timeout", self.args.max_seconds + 120))
            except subprocess.TimeoutExpired:
                rec.update(error="timed out", summary=None, curve=None, _metrics=[])
                return rec
            if done.returncode != 0 or not os.path.exists(summary):
                if "training diverged" not in done.stderr:
                    # Not an outcome of the setting but a run that could not run: stop
                    # before a table or result file with missing figures is written.
                    raise SystemExit(f"{rec['command']}\nfailed (exit code {done.returncode}); "
                                     f"the study stops:\n{done.stderr}")
                lines = [l for l in done.stderr.splitlines() if l.strip()]
                # mpirun ends with its own banner: the rank's error is the line to keep
                lines = [l for l in lines if "error" in l.lower()] or lines
                rec.update(error=lines[-1] if lines else f"exit status {done.returncode}",
                           summary=None, curve=None, _metrics=[])
                return rec
            with open(summary) as f:
                rec["summary"] = json.load(f)
            if "binary" not in cfg:  # the baseline's commit is in baseline_info
                runs.note_binary_commit(rec["summary"].get("commit"))
            records = plot.load_run(metrics) if os.path.exists(metrics) else []
        if rec["summary"].get("workers") != cfg["workers"]:
            raise SystemExit(f"{rec['command']}\nran {rec['summary'].get('workers')} "
                             f"worker(s), not {cfg['workers']}")
        evals = plot.evaluation_lines(records)
        curve = study.curve(evals, workers=(0, -1))
        rec["curve"] = {k: v for k, v in curve.items() if k in CURVE_KEYS}
        rec["_metrics"] = records
        lines = plot.balance_lines(records)
        if lines:
            rec["balance"] = digest(lines, rec["summary"].get("train_seconds"))
        if keep_dir:
            os.makedirs(keep_dir, exist_ok=True)
            path = os.path.join(keep_dir, f"{cfg['name']}_r{round_index}.jsonl")
            study.write_metrics(records, path)
            rec["metrics_file"] = path
        return rec

    def sweep(self, configs, rounds, seed, keep_dir=None, describe=None, label=""):
        """Every configuration `rounds` times, alternated within each round."""
        study.check_configs(configs)
        out = {c["name"]: [] for c in configs}
        total, done = len(configs) * rounds, 0
        for r in range(rounds):
            for c in configs:
                rec = self.run(c, r, seed + r, keep_dir)
                out[c["name"]].append(rec)
                done += 1
                note = rec["error"] if "error" in rec else (describe(rec) if describe
                                                            else "done")
                print(f"[{label}{done}/{total}] {c['name']} round {r}: {note}",
                      file=sys.stderr, flush=True)
        return out


# ----------------------------------------------------------------------------------------
# The load balancer's decisions.

def weighted_median(pairs):
    pairs = sorted((v, w) for v, w in pairs if w > 0 and v is not None)
    total = sum(w for _, w in pairs)
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= total / 2:
            return v
    return None


def digest(lines, end_s=None):
    """Per link (worker -> peer): decisions logged, changes of the setting, the distinct
    settings, the time-weighted median message, interval and bandwidth estimate (each
    decision holds until the next one of that link, the last until `end_s`), and the last
    decision."""
    links = {}
    for r in lines:
        links.setdefault((r["worker"], r["peer"]), []).append(r)
    out = []
    for (w, p), mine in sorted(links.items()):
        mine.sort(key=lambda r: r["time_s"])
        end = max(end_s or 0, mine[-1]["time_s"])
        spans = [(b["time_s"] if i + 1 < len(mine) else end) - a["time_s"]
                 for i, (a, b) in enumerate(zip(mine, mine[1:] + [mine[-1]]))]
        if sum(spans) <= 0:
            spans = [1.0] * len(mine)
        settings = [(r["message"], r["interval"]) for r in mine]
        changes = sum(a != b for a, b in zip(settings, settings[1:]))
        bw = [(math.inf if r.get("bandwidth_bytes_per_s") is None
               else r["bandwidth_bytes_per_s"], s) for r, s in zip(mine, spans)]
        out.append({
            "worker": w, "peer": p, "decisions": len(mine), "changes": changes,
            "distinct_settings": len(set(settings)),
            "message": weighted_median([(r["message"], s) for r, s in zip(mine, spans)]),
            "interval": weighted_median([(r["interval"], s) for r, s in zip(mine, spans)]),
            "bandwidth_bytes_per_s": _finite(weighted_median(bw)),  # None: ideal
            "busy": weighted_median([(r["busy"], s) for r, s in zip(mine, spans)]),
            "last": {k: mine[-1].get(k) for k in ("time_s", "message", "interval",
                                                   "bandwidth_bytes_per_s", "latency_s",
                                                   "backlog", "step_s", "busy")}})
    return out


def _finite(v):
    return None if v is None or math.isinf(v) else v


def typical(rec, links=None):
    """Median over the chosen links (default: worker 0's) of the digest's message, interval."""
    d = rec.get("balance") or []
    chosen = [x for x in d if (links is None and x["worker"] == 0)
              or (links is not None and (x["worker"], x["peer"]) in links)]
    if not chosen:
        return None, None
    return (runs.median([x["message"] for x in chosen]),
            runs.median([x["interval"] for x in chosen]))


# ----------------------------------------------------------------------------------------
# Models and times to target.

class Model:
    def __init__(self, name, args, runner):
        self.name, self.args, self.runner = name, args, runner
        a = args
        if name == "mlp":
            self.train_args = [*study.MLP, "--lr", a.lr, "--target-accuracy", a.target,
                               "--eval-every", a.eval_every, "--epochs", 1000,
                               "--max-seconds", a.max_seconds]
            self.describe = (f"Fashion-MNIST, mlp 784-256-256-10, batch 64, lr {a.lr:g}, "
                             f"target accuracy {a.target:g}, eval every {a.eval_every}, "
                             f"cap {a.max_seconds:g} s")
        else:
            self.train_args = ["--dataset", a.kmeans_dataset, "--model", "kmeans",
                               "--clusters", a.clusters, "--batch", 64, "--lr", a.kmeans_lr,
                               "--merge", "average", "--epochs", a.kmeans_epochs,
                               "--eval-every", a.kmeans_eval_every,
                               "--max-seconds", a.max_seconds]
            self.describe = (f"K-Means {a.kmeans_dataset}, K={a.clusters}, batch 64, lr "
                             f"{a.kmeans_lr:g}, merge average, {a.kmeans_epochs:g} epochs, "
                             f"eval every {a.kmeans_eval_every}, cap {a.max_seconds:g} s")
        self.train_args = [str(x) for x in self.train_args] + [str(x) for x in a.common]
        self.threshold = None
        self.reference = None
        self.reference_runs = []
        self.parameters = self._parameters()

    def _parameters(self):
        """The model's parameter count, from a one-step run of one worker."""
        a = [x for x in self.train_args]
        for opt in ("--epochs", "--eval-every", "--max-seconds", "--target-accuracy"):
            if opt in a:
                i = a.index(opt)
                del a[i:i + 2]
        rec = self.runner.run(study.config(f"{self.name}_size", a + [
            "--epochs", "0.0001", "--eval-every", "100000000", "--algo", "local",
            *self.runner.placement(1)], workers=1), 0, self.args.seed)
        if "error" in rec:
            raise SystemExit(f"{self.name}: the size probe failed: {rec['error']}\n"
                             f"{rec['command']}")
        return int(rec["summary"]["parameters"])

    def prepare(self, workers):
        """K-Means: the reference objective and the threshold (once per model)."""
        if self.name != "kmeans" or self.threshold is not None:
            return
        a = self.args
        if a.kmeans_target is not None:
            self.threshold = a.kmeans_target
            return
        if a.kmeans_reference == "local":
            cfg = study.config("kmeans_reference_local", self.train_args + [
                "--algo", "local", *self.runner.placement(1)], workers=1)
        else:
            cfg = study.config("kmeans_reference_ideal", self.train_args + [
                *self.runner.placement(workers), "--balance", "off", "--message-size", 0,
                "--send-interval", 1], workers=workers)
        res = self.runner.sweep([cfg], a.rounds, a.seed, label="reference ")
        recs = res[cfg["name"]]
        self.reference_runs = [study.public(r) for r in recs]
        self.reference = study.median_of(recs, plateau)
        if self.reference is None:
            raise SystemExit("kmeans: every reference run failed: "
                             + "; ".join(r.get("error", "") for r in recs))
        self.threshold = self.reference * (1 + a.tolerance)
        print(f"# kmeans reference ({a.kmeans_reference}) objective {self.reference:.4f}: "
              f"target <= {self.threshold:.4f}", file=sys.stderr)

    def target_text(self):
        if self.name == "mlp":
            return f"test accuracy >= {self.args.target:g}"
        how = ("given" if self.args.kmeans_target is not None else
               f"plateau of the {self.args.kmeans_reference} reference {self.reference:.4f} "
               f"+ {100 * self.args.tolerance:g}%")
        return f"objective <= {self.threshold:.4f} ({how})"

    def hit(self, line):
        if self.name == "mlp":
            return (line.get("test_accuracy") or 0) >= self.args.target
        return line.get("test_loss") is not None and line["test_loss"] <= self.threshold

    def point(self, rec):
        if "error" in rec:
            return None
        return next((m for m in plot.evaluation_lines(rec.get("_metrics") or [])
                     if m.get("worker") == 0 and self.hit(m)), None)

    def time_to_target(self, rec):
        if "error" in rec:
            return None
        if self.name == "mlp":
            return study.time_to_target(rec)
        p = self.point(rec)
        return None if p is None else p["time_s"]

    def samples_to_target(self, rec):
        p = self.point(rec)
        return None if p is None else p["samples"]


def plateau(rec):
    """The level a run settles at: the median objective (test loss) of worker 0's
    evaluations in the second half of the run (a single final value of K-Means at lr 20 is
    too noisy: it varies by +-20% from one evaluation to the next)."""
    evals = [m for m in plot.evaluation_lines(rec.get("_metrics") or [])
             if m.get("worker") == 0 and m.get("test_loss") is not None]
    if not evals:
        return study.summary_value(rec, "final_objective")
    end = evals[-1]["time_s"]
    return runs.median([m["test_loss"] for m in evals if m["time_s"] >= end / 2])


def paired_with_auto(model, rows, results, auto_name):
    """Adds to each fixed row the rounds in which auto reached the target sooner than it, out
    of the rounds both ran (round r of every setting runs on seed + r, so a pair shares its
    data, split and start; a miss is infinitely slow). With medians this close the count says
    whether auto is ahead by more than chance: 13 of 25, or 20 of 25."""
    def times(name):
        return {r["round"]: (model.time_to_target(r) or math.inf) for r in results[name]}
    auto = times(auto_name)
    for row in rows:
        if row["setting"] == "auto":
            continue
        t = times(row["name"])
        common = sorted(set(t) & set(auto))
        row["auto_faster_rounds"] = sum(auto[k] < t[k] for k in common)
        row["paired_rounds"] = len(common)
        row["auto_ratio_ci"] = ratio_interval([auto[k] for k in common],
                                              [t[k] for k in common])
        paired = paired_ratios([auto[k] for k in common], [t[k] for k in common])
        row["auto_paired_ratio"] = runs.median(paired) if paired else None
        row["auto_paired_ci"] = median_interval(paired)


def paired_ratios(auto_times, times):
    """auto / setting in each round, paired by seed: a round's seed sets its data, shard and
    start, and on the MLP the time to target moves by a third from one seed to the next while
    the settings of one seed lie within a few percent of each other. The median of these is
    the ratio with the seeds' own spread taken out, which a ratio of medians keeps. A miss is
    infinitely slow: auto alone missing is inf, the setting alone 0, both 1 (a tie)."""
    return [1.0 if math.isinf(a) and math.isinf(b) else time_ratio(a, b)
            for a, b in zip(auto_times, times)]


def time_ratio(a, b):
    """a / b of two times to target, a miss (inf) counting as infinitely slow: inf where a
    missed, 0 where only b did."""
    return math.inf if math.isinf(a) else 0.0 if math.isinf(b) else a / b


def bootstrap_interval(n, statistic, level=0.9, resamples=2000):
    """The ends of the middle `level` of statistic(picks) over `resamples` draws of n round
    indices with replacement; None with fewer than 2 rounds. Seeded: the same runs give the
    same interval."""
    if n < 2:
        return None
    rng = random.Random(0x5EED)
    values = sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(resamples))
    tail = (1 - level) / 2
    return [values[int(tail * (resamples - 1))], values[int((1 - tail) * (resamples - 1))]]


def median_interval(values, level=0.9, resamples=2000):
    """A bootstrap interval of the median of `values` (paired_ratios)."""
    return bootstrap_interval(len(values), lambda picks: runs.median([values[i] for i in picks]),
                              level, resamples)


def ratio_interval(auto_times, times, level=0.9, resamples=2000):
    """A bootstrap interval of median(auto) / median(setting): rounds resampled with
    replacement as pairs (round r of both ran on seed + r), `level` of the resampled ratios
    between its ends. How far a ratio of medians is from 1 only means something next to how
    much it moves when the rounds are drawn again: with fifteen 10 ms K-Means races a ratio of
    1.09 was within it. None with fewer than 2 pairs; an end is inf where resamples in which
    auto missed the target more often than not lie beyond it."""
    return bootstrap_interval(
        len(times), lambda picks: time_ratio(runs.median([auto_times[i] for i in picks]),
                                             runs.median([times[i] for i in picks])),
        level, resamples)


def per_second(rec, key, denominator="train_seconds"):
    s = rec.get("summary")
    if not s or not s.get(denominator) or s.get(key) is None:
        return None
    return s[key] / s[denominator]


def row_of(model, recs):
    """One table row: medians over rounds (a miss counts as infinitely slow)."""
    ok = [r for r in recs if "error" not in r]
    row = {"rounds": len(recs), "failed": len(recs) - len(ok),
           "errors": sorted({r["error"] for r in recs if "error" in r}),
           "reached": sum(model.time_to_target(r) is not None for r in ok),
           "time_to_target_s": study.median_or_none([model.time_to_target(r) for r in recs]),
           "samples_to_target": study.median_or_none([model.samples_to_target(r)
                                                      for r in recs]),
           "steps_per_s": study.median_of(recs, lambda r: per_second(r, "steps")),
           "bytes_per_s": study.median_of(recs, lambda r: per_second(r, "bytes_sent")),
           "messages_sent": study.median_of(recs, lambda r: study.summary_value(
               r, "messages_sent")),
           "messages_accepted": study.median_of(recs, lambda r: study.summary_value(
               r, "messages_accepted")),
           "messages_rejected": study.median_of(recs, lambda r: study.summary_value(
               r, "messages_rejected")),
           "final_test_accuracy": study.median_of(recs, lambda r: study.summary_value(
               r, "final_test_accuracy")),
           "final_objective": study.median_of(recs, lambda r: study.summary_value(
               r, "final_objective"))}
    ms = [typical(r) for r in ok if r.get("balance")]
    ms = [(m, k) for m, k in ms if m is not None and k is not None]
    if ms:
        row["auto_message"] = runs.median([m for m, _ in ms if m is not None])
        row["auto_interval"] = runs.median([k for _, k in ms if k is not None])
        row["auto_changes"] = runs.median([sum(x["changes"] for x in r["balance"])
                                           for r in ok if r.get("balance")])
    return row


# ----------------------------------------------------------------------------------------
# Settings.

def bw_text(b):
    for unit, f in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if b >= f:
            return f"{b / f:g} {unit}"
    return f"{b:g} B/s"


def frac_text(f):
    return "whole" if f == 1 else f"1/{f.denominator}" if f.numerator == 1 else str(f)


def frac_tag(f):
    return "whole" if f == 1 else f"{f.numerator}of{f.denominator}"


def message_elements(f, n):
    """--message-size for a fraction of the state (0: the whole state)."""
    return 0 if f == 1 else max(1, round(n * f.numerator / f.denominator))


def fixed_settings(args):
    if args.settings is not None:
        return list(args.settings)
    return [(f, k) for f in args.messages for k in args.intervals]


def settings_field(args):
    """The JSON's "settings": the --settings list, None for the whole product (so that such
    a result pools only with results of the same list)."""
    return None if args.settings is None else [f"{f}:{k}" for f, k in args.settings]


# Not a setting of the grid: the same workers with --algo local, which send nothing. Next to the
# others (hetero --with-local) it says what the messages bring: where it is as fast as every
# setting, the target does not need them, and the best a controller can do is to spend nothing.
LOCAL = "local"
# Not a setting either: auto with the --baseline build's binary.
BASELINE = "baseline"


def is_fixed(setting):
    return setting not in ("auto", LOCAL, BASELINE)


def is_auto(setting):
    return setting in ("auto", BASELINE)


def auto_settings(args):
    return ["auto"] + ([BASELINE] if args.baseline else [])


def baseline_fields(setting, runner):
    return {"binary": runner.baseline} if setting == BASELINE else {}


def setting_args(setting, n):
    if is_auto(setting):
        return ["--balance", "auto"]
    if setting == LOCAL:
        return ["--algo", "local"]
    f, k = setting
    return ["--balance", "off", "--message-size", message_elements(f, n), "--send-interval", k]


def setting_text(setting):
    if setting == LOCAL:
        return "local (no messages)"
    if setting == BASELINE:
        return "auto (baseline)"
    return f"m={frac_text(setting[0])}, k={setting[1]}" if is_fixed(setting) else setting


def setting_tag(setting):
    return f"m{frac_tag(setting[0])}_k{setting[1]}" if is_fixed(setting) else setting


DEFAULT = (Fraction(1), 1)  # the fixed default: the whole state every step


def describe_for(model):
    def describe(rec):
        t = model.time_to_target(rec)
        m, k = typical(rec)
        extra = f" (auto: m~{m:.0f}, k~{k:g})" if m is not None and k is not None else ""
        return (f"{t:.2f} s to target" if t is not None else "target not reached") + extra
    return describe


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def out_path(args, *parts):
    base = os.path.splitext(args.out)[0]
    return "_".join([base, *parts]) + ".json"


def rel(paths, out):
    return [os.path.relpath(p, os.path.dirname(os.path.abspath(out))) for p in paths]


def common_payload(args, model, extra, runner):
    return {"model": model.name, "model_settings": model.describe,
            "parameters": model.parameters, "target": model.target_text(),
            "kmeans_reference_objective": model.reference,
            "kmeans_threshold": model.threshold,
            "kmeans_reference_runs": model.reference_runs or None,
            "latency_s": args.latency, "mpi": args.mpi, "rounds": args.rounds,
            "seed": args.seed, "max_seconds": args.max_seconds, "auto_options": extra,
            "common_options": args.common, "asgd_binary": runner.binary,
            "asgd_info": runner.info, "baseline_binary": runner.baseline,
            "baseline_info": runner.baseline_info}


def fmt_ratio(r, lower_bound=False):
    if r is None:
        return "n/a"
    return (">=" if lower_bound else "") + ("inf" if math.isinf(r) else f"{r:.2f}")


def fmt_ci(ci):
    """A ratio's bootstrap interval (ratio_interval), as 0.88-1.03."""
    return "n/a" if not ci else f"{fmt_ratio(ci[0])}-{fmt_ratio(ci[1])}"


def print_rows(rows):
    study.print_table(
        [("setting", 18, ""), ("message", 8, ".0f"), ("interval", 8, ".0f"),
         ("reached", 7, ""), ("time_to_target_s", 16, ".3g"), ("samples_to_target", 17, ".0f"),
         ("steps/s", 8, ".0f"), ("MB/s_posted", 11, ".1f"), ("accepted", 8, ".0f"),
         ("rejected", 8, ".0f"), ("auto_m", 7, ".0f"), ("auto_k", 6, ".1f"),
         ("auto_sooner", 11, ""), ("auto/this_paired", 22, "")],
        [[r["setting"], r["message_elements"], r["interval"],
          f"{r['reached']}/{r['rounds']}" + ("!" if r["failed"] else ""), r["time_to_target_s"],
          r["samples_to_target"], r["steps_per_s"],
          None if r["bytes_per_s"] is None else r["bytes_per_s"] / 1e6,
          r["messages_accepted"], r["messages_rejected"], r.get("auto_message"),
          r.get("auto_interval"),
          f"{r['auto_faster_rounds']}/{r['paired_rounds']}" if "paired_rounds" in r else "-",
          fmt_paired(r.get("auto_paired_ratio"), r.get("auto_paired_ci"))
          if "paired_rounds" in r else "-"]
         for r in rows])
    print("# auto_sooner: rounds in which auto reached the target sooner than this setting, "
          "paired by seed; auto/this_paired: the median over rounds of auto's time over this "
          "setting's in the same round, with its 90% bootstrap interval")
    for r in rows:
        if r["failed"]:
            print(f"# !{r['setting']}: {r['failed']}/{r['rounds']} failed: "
                  f"{'; '.join(r['errors'])}")


def fmt_paired(r, ci):
    return "n/a" if r is None else f"{fmt_ratio(r)} ({fmt_ci(ci)})"


def print_paired_verdict(c, label=""):
    print(f"# {label}paired by seed: auto/best {fmt_ratio(c['auto_over_best_paired'])} "
          f"({fmt_ci(c['auto_over_best_paired_ci'])}), auto/default "
          f"{fmt_ratio(c['auto_over_default_paired'])} "
          f"({fmt_ci(c['auto_over_default_paired_ci'])}); auto slower beyond the interval "
          f"than: {' | '.join(c['auto_paired_slower_than']) or 'none'}; faster than: "
          f"{' | '.join(c['auto_paired_faster_than']) or 'none'}")
    if "baseline_s" in c:
        print(f"# {label}{baseline_verdict(c)}")


def baseline_verdict(c):
    return (f"auto/baseline: medians {fmt_ratio(c['auto_over_baseline'])}, paired "
            f"{fmt_ratio(c['auto_over_baseline_paired'])} "
            f"({fmt_ci(c['auto_over_baseline_paired_ci'])})")


def compare(rows):
    """best fixed, default, auto and the ratios, from the rows of one link configuration.
    A missed target is +inf; `cap` stands in for it in ratios, marked as a bound."""
    fixed = [r for r in rows if is_fixed(r["key"])]
    auto = next(r for r in rows if r["setting"] == "auto")
    default = next((r for r in fixed if r["key"] == setting_tag(DEFAULT)), None)
    reached = [r for r in fixed if r["time_to_target_s"] is not None]
    best = min(reached, key=lambda r: r["time_to_target_s"]) if reached else None
    t_auto = auto["time_to_target_s"]
    t_best = best["time_to_target_s"] if best else None
    t_default = default["time_to_target_s"] if default else None
    c = {"best_fixed": best["setting"] if best else None, "best_fixed_s": t_best,
         "default_s": t_default, "auto_s": t_auto,
         "auto_over_best": ratio(t_auto, t_best) if t_auto is not None else None,
         "auto_over_default": ratio(t_auto, t_default) if t_default is not None else None,
         "default_in_grid": default is not None,
         "auto_sooner_than_best_rounds": best.get("auto_faster_rounds") if best else None,
         "auto_sooner_than_default_rounds": (default.get("auto_faster_rounds") if default
                                             else None),
         "auto_over_best_ci": best.get("auto_ratio_ci") if best else None,
         "auto_over_default_ci": default.get("auto_ratio_ci") if default else None,
         "auto_over_best_paired": best.get("auto_paired_ratio") if best else None,
         "auto_over_best_paired_ci": best.get("auto_paired_ci") if best else None,
         "auto_over_default_paired": default.get("auto_paired_ratio") if default else None,
         "auto_over_default_paired_ci": default.get("auto_paired_ci") if default else None,
         "paired_rounds": best.get("paired_rounds") if best else None}
    # Against every fixed setting, by the paired ratio: those auto is slower than beyond the
    # interval (its lower end above 1), those it is faster than beyond it, and the ties.
    c["auto_paired_slower_than"] = [r["setting"] for r in fixed
                                    if r.get("auto_paired_ci") and r["auto_paired_ci"][0] > 1]
    c["auto_paired_faster_than"] = [r["setting"] for r in fixed
                                    if r.get("auto_paired_ci") and r["auto_paired_ci"][1] < 1]
    c["within_15pct_of_best"] = (c["auto_over_best"] is not None
                                 and c["auto_over_best"] <= WITHIN_BEST)
    # None where the default was not run (--settings without 1:1): not measured, not missed.
    c["not_later_than_default"] = (None if default is None else t_auto is not None
                                   and (t_default is None or t_auto <= t_default))
    if best is None and t_auto is not None:  # no fixed setting got there, auto did
        c["within_15pct_of_best"] = True
    baseline = next((r for r in rows if r["key"] == BASELINE), None)
    if baseline is not None:
        c["baseline_s"] = baseline["time_to_target_s"]
        c["auto_over_baseline"] = (ratio(t_auto, c["baseline_s"])
                                   if t_auto is not None else None)
        c["auto_over_baseline_paired"] = baseline.get("auto_paired_ratio")
        c["auto_over_baseline_paired_ci"] = baseline.get("auto_paired_ci")
    return c


# ----------------------------------------------------------------------------------------
# Experiment: the grid.

def grid_experiment(args, extra, runner, model):
    n = model.parameters
    model.prepare(args.workers)
    settings = fixed_settings(args) + auto_settings(args)
    configs = []
    for bw in args.bandwidths:
        for s in settings:
            configs.append(study.config(
                f"bw{bw:g}_{setting_tag(s)}",
                model.train_args + runner.placement(args.workers)
                + ["--link-bandwidth", bw, "--link-latency", args.latency]
                + setting_args(s, n) + (extra if is_auto(s) else []),
                workers=args.workers, bandwidth=bw, setting=setting_text(s),
                key=setting_tag(s), **baseline_fields(s, runner)))
    print(f"# {model.name} grid: {len(configs)} configurations x {args.rounds} round(s), "
          f"at most about {len(configs) * args.rounds * (args.max_seconds + 3) / 60:.0f} min",
          file=sys.stderr)
    results = runner.sweep(configs, args.rounds, args.seed, args.keep_metrics,
                           describe_for(model), label=f"{model.name} grid ")

    tables, comparisons = {}, []
    print(f"\n# comm_study grid, {model.name}: {model.describe}; {args.workers} workers"
          f"{' (mpirun ranks)' if args.mpi else ''}, latency {args.latency:g} s, "
          f"target {model.target_text()}, {args.rounds} round(s), medians; state {n} "
          "elements")
    if extra:
        print(f"# pass-through to the auto runs: {' '.join(extra)}")
    for bw in args.bandwidths:
        rows = []
        for c in configs:
            if c["bandwidth"] != bw:
                continue
            s = next(x for x in settings if setting_tag(x) == c["key"])
            rows.append({"name": c["name"], "setting": c["setting"], "key": c["key"],
                         "message_fraction": str(s[0]) if is_fixed(s) else None,
                         "message_elements": (n if s[0] == 1 else message_elements(s[0], n))
                         if is_fixed(s) else None,
                         "interval": s[1] if is_fixed(s) else None,
                         **row_of(model, results[c["name"]])})
        paired_with_auto(model, rows, results, f"bw{bw:g}_auto")
        tables[f"{bw:g}"] = rows
        print(f"\n# link {bw_text(bw)} ({bw:g} B/s), latency {args.latency:g} s")
        print_rows(rows)
        cmp_ = {"bandwidth": bw, **compare(rows)}
        comparisons.append(cmp_)

    print(f"\n# {model.name}: auto against the best fixed setting and the default (whole "
          "state every step); criteria: auto/best <= 1.15 and auto/default <= 1; 90%_best "
          "and 90%_default: bootstrap intervals of those ratios, rounds paired by seed; "
          "paired_*: the median over rounds of auto's time over that setting's in the same "
          "round (seed), with its 90% interval")
    study.print_table(
        [("bandwidth", 10, ""), ("best_fixed", 16, ""), ("best_s", 7, ".3g"),
         ("default_s", 9, ".3g"), ("auto_s", 7, ".3g"), ("auto/best", 9, ""),
         ("auto/default", 12, ""), ("90%_best", 10, ""), ("90%_default", 11, ""),
         ("paired_best", 20, ""), ("paired_default", 20, ""),
         ("within15%", 9, ""), ("not_later", 9, "")],
        [[bw_text(c["bandwidth"]), c["best_fixed"], c["best_fixed_s"], c["default_s"],
          c["auto_s"], fmt_ratio(c["auto_over_best"]),
          fmt_ratio(c["auto_over_default"]) if c["default_s"] is not None else
          ("<1 (default missed)" if c["auto_s"] is not None else "n/a"),
          fmt_ci(c["auto_over_best_ci"]), fmt_ci(c["auto_over_default_ci"]),
          fmt_paired(c["auto_over_best_paired"], c["auto_over_best_paired_ci"]),
          fmt_paired(c["auto_over_default_paired"], c["auto_over_default_paired_ci"]),
          yes_no(c["within_15pct_of_best"]), yes_no(c["not_later_than_default"])] for c in comparisons])
    measured = [c["not_later_than_default"] for c in comparisons
                if c["not_later_than_default"] is not None]
    verdict = {"within_15pct_everywhere": all(c["within_15pct_of_best"] for c in comparisons),
               "never_later_than_default": all(measured) if measured else None}
    if not any(c["default_in_grid"] for c in comparisons):
        print("# note: the default (whole state, k=1) is not in the grid")
    print(f"# criteria met: within 15% of best on every bandwidth: "
          f"{yes_no(verdict['within_15pct_everywhere'])}; never later than the "
          f"default: {yes_no(verdict['never_later_than_default'])}")
    if runner.baseline:
        print(f"# baseline: {runner.baseline} ({' '.join(runner.baseline_info)})")
        for c in comparisons:
            if "baseline_s" in c:
                print(f"# {bw_text(c['bandwidth'])}: {baseline_verdict(c)}")

    out = out_path(args, model.name)
    plots = []
    png = os.path.splitext(out)[0] + ".png"
    try:
        plots.append(plot_grid(args, model, tables, comparisons, png))
        print(f"wrote {png}")
    except Exception as e:  # noqa: BLE001  (a plot must not cost the measurements)
        print(f"plotting {png} failed: {e!r}", file=sys.stderr)
    autos = [study.representative(results[f"bw{bw:g}_auto"], model.time_to_target)
             for bw in args.bandwidths]
    png = os.path.splitext(out)[0] + "_balance.png"
    try:
        usable = [(r, bw) for r, bw in zip(autos, args.bandwidths) if r.get("_metrics")]
        if usable:
            plot.plot_balance([r["_metrics"] for r, _ in usable], png,
                              labels=[f"auto, links {bw_text(bw)}" for _, bw in usable],
                              title=f"{model.name}: the load balancer's estimates and "
                                    "settings (round nearest the median)")
            plots.append(png)
            print(f"wrote {png}")
    except Exception as e:  # noqa: BLE001
        print(f"plotting {png} failed: {e!r}", file=sys.stderr)
    runs.write_result(out, "comm_study", {
        "experiment": "grid", **common_payload(args, model, extra, runner),
        "workers": args.workers, "bandwidths": args.bandwidths,
        "messages": [str(f) for f in args.messages], "intervals": args.intervals,
        "settings": settings_field(args),
        "tables": tables, "comparisons": comparisons, "criteria": verdict,
        "plots": rel(plots, out),
        "runs": [stored_run(r, model) for c in configs
                 for r in results[c["name"]]]})
    return verdict


def plot_grid(args, model, tables, comparisons, out):
    """Per bandwidth a heat map message size x interval of the median time to target (the
    best fixed setting boxed, the default dashed, auto's typical (m, k) a star, its time in
    the title); below, grouped bars of best fixed / default / auto per bandwidth."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.colors
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    from matplotlib.patches import Rectangle

    n = model.parameters
    fr, iv = args.messages, args.intervals
    nb = len(args.bandwidths)
    fig = plt.figure(figsize=(max(9, 3.6 * nb), 8.2))
    gs = fig.add_gridspec(2, nb, height_ratios=[1.25, 1])
    times = [r["time_to_target_s"] for rows in tables.values() for r in rows
             if r["time_to_target_s"] is not None]
    lo, hi = (min(times), max(times)) if times else (1, 10)
    norm = matplotlib.colors.LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 1.01)
    cmap = plt.get_cmap("viridis_r").copy()
    cmap.set_bad("lightgrey")
    image = None
    for j, (bw, c) in enumerate(zip(args.bandwidths, comparisons)):
        ax = fig.add_subplot(gs[0, j])
        rows = tables[f"{bw:g}"]
        grid = [[math.nan] * len(iv) for _ in fr]
        for a, f in enumerate(fr):
            for b, k in enumerate(iv):
                r = next((x for x in rows if x["key"] == setting_tag((f, k))), None)
                if r is None:  # --settings left this cell of the product out
                    ax.text(b, a, "-", ha="center", va="center", fontsize=8)
                    continue
                t = r["time_to_target_s"]
                grid[a][b] = math.nan if t is None else t
                ax.text(b, a, "miss" if t is None else f"{t:.2f}", ha="center", va="center",
                        fontsize=8, color="black" if t is None or norm(t) < 0.6 else "white")
                if r["setting"] == c["best_fixed"]:
                    ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, lw=2.5,
                                           ec="red"))
                if (f, k) == DEFAULT:
                    ax.add_patch(Rectangle((b - 0.45, a - 0.45), 0.9, 0.9, fill=False, lw=1.5,
                                           ec="black", ls="--"))
        image = ax.imshow(grid, norm=norm, cmap=cmap, aspect="auto")
        auto = next(x for x in rows if x["key"] == "auto")
        if auto.get("auto_message") and auto.get("auto_interval"):
            y = _position(math.log(auto["auto_message"]),
                          [math.log(n * float(f)) for f in fr])
            x = _position(math.log(auto["auto_interval"]), [math.log(k) for k in iv])
            ax.plot([x], [y], marker="*", ms=16, mfc="orange", mec="black",
                    label=f"auto's typical m~{auto['auto_message']:.0f}, "
                          f"k~{auto['auto_interval']:g}")
            ax.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, -0.42))
        ta = c["auto_s"]
        ax.set_title(f"{bw_text(bw)}: auto " + ("miss" if ta is None else f"{ta:.2f} s")
                     + f"\nauto/best {fmt_ratio(c['auto_over_best'])}, auto/default "
                     + (fmt_ratio(c["auto_over_default"]) if c["default_s"] is not None
                        else "-"), fontsize=9)
        ax.set_xticks(range(len(iv)))
        ax.set_xticklabels([str(k) for k in iv])
        ax.set_yticks(range(len(fr)))
        ax.set_yticklabels([frac_text(f) for f in fr])
        ax.set_xlabel("send interval k (steps)")
        if j == 0:
            ax.set_ylabel("message size (of the state)")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    if image is not None:
        bar = fig.colorbar(image, cax=fig.add_axes([0.89, 0.5, 0.015, 0.38]))
        bar.ax.yaxis.set_major_formatter(plain)
        bar.ax.yaxis.set_minor_formatter(plain)
        bar.set_label("time to target (s), median")
    ax = fig.add_subplot(gs[1, :])
    width = 0.26
    cap = args.max_seconds
    for i, (key, label, colour) in enumerate((("best_fixed_s", "best fixed", "tab:blue"),
                                              ("default_s", "default (whole, k=1)", "grey"),
                                              ("auto_s", "auto", "tab:orange"))):
        # A default that --settings left out of the grid is no bar, not a miss.
        shown = [(j + (i - 1) * width, c[key]) for j, c in enumerate(comparisons)
                 if key != "default_s" or c.get("default_in_grid", True)]
        if not shown:
            continue
        xs, vals = zip(*shown)
        ax.bar(xs, [cap if v is None else v for v in vals], width, color=colour, label=label,
               hatch=None)
        for x, v in zip(xs, vals):
            if v is None:
                ax.text(x, cap, "miss", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(nb))
    ax.set_xticklabels([bw_text(b) for b in args.bandwidths])
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_ylabel("time to target (s), median")
    ax.set_xlabel("link bandwidth (every link)")
    ax.grid(True, axis="y", alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.suptitle(f"{model.name}: time to target per fixed (message, interval) and auto; "
                 f"red box: best fixed, dashed: default", fontsize=10)
    fig.subplots_adjust(hspace=0.55, wspace=0.35, top=0.9, bottom=0.08, left=0.08, right=0.86)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _position(v, ticks):
    """Fractional index of v among monotonic tick values (linear between them, clamped half
    a cell outside)."""
    if len(ticks) == 1:
        return 0.0
    inc = ticks[-1] > ticks[0]
    t = ticks if inc else ticks[::-1]
    if v <= t[0]:
        pos = max(-0.45, -(t[0] - v) / max(t[1] - t[0], 1e-12))
    elif v >= t[-1]:
        pos = len(t) - 1 + min(0.45, (v - t[-1]) / max(t[-1] - t[-2], 1e-12))
    else:
        i = next(i for i in range(len(t) - 1) if t[i] <= v <= t[i + 1])
        pos = i + (v - t[i]) / max(t[i + 1] - t[i], 1e-12)
    return pos if inc else len(t) - 1 - pos


# ----------------------------------------------------------------------------------------
# Experiment: heterogeneous links.

def hetero_matrix(args):
    w = args.hetero_workers
    slow = args.hetero_bandwidth / args.hetero_factor
    a, b = args.hetero_pair
    return [[0.0 if i == j else slow if {i, j} == {a, b} else args.hetero_bandwidth
             for j in range(w)] for i in range(w)]


def hetero_experiment(args, extra, runner, model):
    n = model.parameters
    w = args.hetero_workers
    model.prepare(args.workers)
    matrix = hetero_matrix(args)
    toml = "link-bandwidth = [\n" + "".join(
        "  [" + ", ".join(f"{v:.6g}" if v else "0.0" for v in row) + "],\n"
        for row in matrix) + "]\n"
    settings = fixed_settings(args) + auto_settings(args) + ([LOCAL] if args.with_local else [])
    configs = [study.config(
        f"hetero_{setting_tag(s)}",
        model.train_args + runner.placement(w) + ["--config", "{tmp}/links.toml",
                                                  "--link-latency", args.latency]
        + setting_args(s, n) + (extra if is_auto(s) else []),
        workers=w, setting=setting_text(s), key=setting_tag(s), files={"links.toml": toml},
        **baseline_fields(s, runner))
        for s in settings]
    print(f"# {model.name} hetero: {len(configs)} configurations x {args.rounds} round(s)",
          file=sys.stderr)
    results = runner.sweep(configs, args.rounds, args.seed, args.keep_metrics,
                           describe_for(model), label=f"{model.name} hetero ")
    rows = []
    for c, s in zip(configs, settings):
        rows.append({"name": c["name"], "setting": c["setting"], "key": c["key"],
                     "message_fraction": str(s[0]) if is_fixed(s) else None,
                     "message_elements": (n if s[0] == 1 else message_elements(s[0], n))
                     if is_fixed(s) else None,
                     "interval": s[1] if is_fixed(s) else None,
                     **row_of(model, results[c["name"]])})
    paired_with_auto(model, rows, results, "hetero_auto")
    a, b = args.hetero_pair
    slow_links = {(a, b), (b, a)}
    fast_links = {(i, j) for i in range(w) for j in range(w) if i != j} - slow_links
    auto_recs = [r for r in results["hetero_auto"] if "error" not in r and r.get("balance")]
    per_link = {}
    for name, links in (("slow_pair", slow_links), ("other_links", fast_links)):
        ms = [typical(r, links) for r in auto_recs]
        bws = [[x["bandwidth_bytes_per_s"] for x in r["balance"]
                if (x["worker"], x["peer"]) in links and x["bandwidth_bytes_per_s"] is not None]
               for r in auto_recs]
        bws = [runs.median(b) for b in bws if b]
        per_link[name] = {
            "message": runs.median([m for m, _ in ms if m is not None]) if ms else None,
            "interval": runs.median([k for _, k in ms if k is not None]) if ms else None,
            "bandwidth_estimate": runs.median(bws) if bws else None,
            "configured_bandwidth": (args.hetero_bandwidth / args.hetero_factor
                                     if name == "slow_pair" else args.hetero_bandwidth)}
    cmp_ = compare(rows)
    print(f"\n# comm_study hetero, {model.name}: {model.describe}; {w} workers"
          f"{' (mpirun ranks)' if args.mpi else ''}, links {bw_text(args.hetero_bandwidth)} "
          f"except {a}<->{b} at {bw_text(args.hetero_bandwidth / args.hetero_factor)}, "
          f"latency {args.latency:g} s, target {model.target_text()}, {args.rounds} "
          "round(s), medians; fixed settings apply to every pair")
    print_rows(sorted(rows, key=lambda r: (r["time_to_target_s"] is None,
                                           r["time_to_target_s"] or 0)))
    print(f"# best fixed {cmp_['best_fixed']} {fmt(cmp_['best_fixed_s'], '.3g')} s, default "
          f"{fmt(cmp_['default_s'], '.3g')} s, auto {fmt(cmp_['auto_s'], '.3g')} s: auto/best "
          f"{fmt_ratio(cmp_['auto_over_best'])} (90% interval "
          f"{fmt_ci(cmp_['auto_over_best_ci'])}), auto/default "
          f"{fmt_ratio(cmp_['auto_over_default'])} (90% interval "
          f"{fmt_ci(cmp_['auto_over_default_ci'])})")
    print_paired_verdict(cmp_)
    for name, v in per_link.items():
        print(f"# auto on the {name.replace('_', ' ')}: estimate "
              f"{fmt(v['bandwidth_estimate'], '.3g')} B/s (configured "
              f"{v['configured_bandwidth']:.3g}), typical m {fmt(v['message'], '.0f')}, k "
              f"{fmt(v['interval'], 'g')}")

    out = out_path(args, "hetero", model.name)
    base = os.path.splitext(out)[0]
    plots = []
    try:
        plots.append(plot_bars(rows, base + ".png", args.max_seconds,
                               f"{model.name}, {w} workers, {a}<->{b} "
                               f"{args.hetero_factor:g}x slower: time to target"))
        print(f"wrote {plots[-1]}")
    except Exception as e:  # noqa: BLE001
        print(f"plotting {base}.png failed: {e!r}", file=sys.stderr)
    rep = study.representative(results["hetero_auto"], model.time_to_target)
    if rep.get("_metrics"):
        try:
            plots.append(plot.plot_balance([rep["_metrics"]], base + "_balance.png",
                                           labels=[f"auto, round {rep['round']}"],
                                           title=f"{model.name}: heterogeneous links"))
            print(f"wrote {plots[-1]}")
            configured = {"bandwidth_gb_per_s": [[None if i == j else v / 1e9
                                                  for j, v in enumerate(row)]
                                                 for i, row in enumerate(matrix)],
                          "description": "the link-bandwidth matrix of the runs"}
            plots.append(plot.plot_matrix([configured, rep["_metrics"]],
                                          base + "_matrix.png",
                                          labels=["configured", "auto's estimates"]))
            print(f"wrote {plots[-1]}")
        except Exception as e:  # noqa: BLE001
            print(f"plotting {base} balance/matrix failed: {e!r}", file=sys.stderr)
    runs.write_result(out, "comm_study", {
        "experiment": "hetero", **common_payload(args, model, extra, runner), "workers": w,
        "link_bandwidth_matrix": matrix, "slow_pair": args.hetero_pair,
        "messages": [str(f) for f in args.messages], "intervals": args.intervals,
        "settings": settings_field(args),
        "table": rows, "comparison": cmp_, "auto_per_link": per_link,
        "plots": rel(plots, out),
        "runs": [stored_run(r, model) for c in configs
                 for r in results[c["name"]]]})


def yes_no(v):
    return "n/a" if v is None else "yes" if v else "no"


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def plot_bars(rows, out, cap, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = sorted(rows, key=lambda r: (r["time_to_target_s"] is None,
                                       r["time_to_target_s"] or 0))
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(rows) + 2), 4.8))
    vals = [r["time_to_target_s"] for r in rows]
    colours = ["tab:orange" if r["key"] == "auto" else "tab:green" if r["key"] == LOCAL else
               "grey" if r["key"] == setting_tag(DEFAULT) else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), [cap if v is None else v for v in vals], color=colours)
    for i, v in enumerate(vals):
        ax.text(i, cap if v is None else v, "miss" if v is None else f"{v:.3g}",
                ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["setting"] for r in rows], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("time to target (s), median")
    ax.set_title(title + "\norange: auto, grey: default, green: no messages", fontsize=10)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------------------
# Experiment: a link drop.

def steps_at(points, t):
    """Steps at time t, linear between the evaluations around it (points sorted by time,
    starting from (0, 0))."""
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if t0 <= t <= t1:
            return s0 + (s1 - s0) * ((t - t0) / (t1 - t0) if t1 > t0 else 1.0)
    return None


def rates(rec, change_at):
    """Per worker: steps/s before the change (from the start of training) and after it (to
    the worker's last evaluation), and after/before."""
    out = {}
    evals = plot.evaluation_lines(rec.get("_metrics") or [])
    for w in sorted({m["worker"] for m in evals if isinstance(m.get("worker"), int)
                     and m["worker"] >= 0}):
        pts = [(0.0, 0.0)] + sorted((m["time_s"], m["step"]) for m in evals
                                    if m.get("worker") == w)
        s_c = steps_at(pts, change_at)
        end_t, end_s = pts[-1]
        if s_c is None or end_t <= change_at or change_at <= 0:
            out[w] = {"before": None, "after": None, "ratio": None}
            continue
        before = s_c / change_at
        after = (end_s - s_c) / (end_t - change_at)
        out[w] = {"before": before, "after": after, "ratio": after / before if before else None,
                  "after_window_s": end_t - change_at}
    return out


def drop_experiment(args, extra, runner, model):
    n = model.parameters
    w = args.workers
    model.prepare(w)
    links = ["--link-bandwidth", args.drop_from, "--link-latency", args.latency]
    out = out_path(args, "drop", model.name)
    base = os.path.splitext(out)[0]
    keep = args.keep_metrics or base + "_metrics"
    calibration = []
    drop_at = args.drop_at
    control = study.config("drop_none_auto", model.train_args + runner.placement(w) + links
                           + setting_args("auto", n) + extra, workers=w, setting="auto",
                           key="auto", drop=False)
    if drop_at is None:
        res = runner.sweep([control], args.rounds, args.seed, keep, describe_for(model),
                           label=f"{model.name} drop calibration ")
        calibration = res[control["name"]]
        lengths = [study.summary_value(r, "train_seconds") for r in calibration
                   if "error" not in r]
        if not lengths:
            raise SystemExit("drop: every calibration run failed: "
                             + "; ".join(r["error"] for r in calibration))
        drop_at = runs.median(lengths) / 2
        print(f"# {model.name} drop: calibration runs last {runs.median(lengths):.2f} s "
              f"(median): the links drop at {drop_at:.2f} s", file=sys.stderr)
    change = ["--link-change", f"{drop_at:.4g}:{args.drop_to:g}:{args.latency:g}"]
    settings = [("auto" if s == "auto" else DEFAULT) for s in args.drop_settings]
    configs = [study.config(f"drop_{'auto' if s == 'auto' else 'default'}",
                            model.train_args + runner.placement(w) + links + change
                            + setting_args(s, n) + (extra if s == "auto" else []),
                            workers=w, setting=setting_text(s), key=setting_tag(s), drop=True)
               for s in settings]
    results = runner.sweep(configs, args.rounds, args.seed, keep, describe_for(model),
                           label=f"{model.name} drop ")
    if calibration:
        results[control["name"]] = calibration
        configs = [control] + configs

    def summarise(c):
        recs = results[c["name"]]
        per = [rates(r, drop_at) for r in recs if "error" not in r]
        w0 = [p.get(0, {}).get("ratio") for p in per]
        slowest = [min((v["ratio"] for v in p.values() if v["ratio"] is not None),
                       default=None) for p in per]
        return {"name": c["name"], "setting": c["setting"], "drop": c["drop"],
                **row_of(model, recs),
                "rate_before_w0": study.median_of(
                    [r for r in recs if "error" not in r],
                    lambda r: rates(r, drop_at).get(0, {}).get("before")),
                "rate_after_w0": study.median_of(
                    [r for r in recs if "error" not in r],
                    lambda r: rates(r, drop_at).get(0, {}).get("after")),
                "ratio_w0": runs.median([x for x in w0 if x is not None]) if any(
                    x is not None for x in w0) else None,
                "ratio_slowest": runs.median([x for x in slowest if x is not None]) if any(
                    x is not None for x in slowest) else None,
                "ratio_w0_per_round": w0, "ratio_slowest_per_round": slowest}

    rows = [summarise(c) for c in configs]
    print(f"\n# comm_study drop, {model.name}: {model.describe}; {w} workers"
          f"{' (mpirun ranks)' if args.mpi else ''}, links {bw_text(args.drop_from)} -> "
          f"{bw_text(args.drop_to)} at {drop_at:.2f} s, latency {args.latency:g} s, target "
          f"{model.target_text()}, {args.rounds} round(s), medians")
    print("# steps/s before the drop (0 .. drop) and after it (drop .. last evaluation), "
          "worker 0; ratio = after / before (worker 0; slowest worker); the 'none' row is "
          "the same split of a run without the drop")
    study.print_table(
        [("setting", 8, ""), ("drop", 5, ""), ("reached", 7, ""), ("time_to_target_s", 16, ".2f"),
         ("steps/s_before", 14, ".0f"), ("steps/s_after", 13, ".0f"), ("ratio_w0", 8, ".3f"),
         ("ratio_slowest", 13, ".3f"), ("auto_m", 7, ".0f"), ("auto_k", 6, ".1f")],
        [[r["setting"], "yes" if r["drop"] else "none",
          f"{r['reached']}/{r['rounds']}" + ("!" if r["failed"] else ""),
          r["time_to_target_s"], r["rate_before_w0"], r["rate_after_w0"], r["ratio_w0"],
          r["ratio_slowest"], r.get("auto_message"), r.get("auto_interval")] for r in rows])
    auto = next((r for r in rows if r["drop"] and r["setting"] == "auto"), None)
    verdict = None
    if auto:
        verdict = {"step_rate_kept": auto["ratio_w0"] is not None and auto["ratio_w0"] >= 0.9
                   and (auto["ratio_slowest"] or 0) >= 0.9,
                   "target_reached": auto["reached"] == auto["rounds"]}
        print(f"# auto after the drop: step rate ratio worker 0 {fmt(auto['ratio_w0'], '.3f')}"
              f", slowest {fmt(auto['ratio_slowest'], '.3f')} (>= 0.9: "
              f"{'yes' if verdict['step_rate_kept'] else 'no'}); target reached in "
              f"{auto['reached']}/{auto['rounds']} rounds")

    plots = []
    reps = [(study.representative(results[c["name"]], model.time_to_target), c) for c in configs]
    reps = [(r, c) for r, c in reps if r.get("_metrics")]
    if reps:
        labels = [f"{c['setting']}, " + ("drop" if c["drop"] else "no drop") for _, c in reps]
        try:
            plots.append(plot.plot_balance(
                [r["_metrics"] for r, _ in reps], base + "_balance.png", labels=labels,
                change_at=[drop_at if c["drop"] else None for _, c in reps],
                title=f"{model.name}: links {bw_text(args.drop_from)} -> "
                      f"{bw_text(args.drop_to)} at {drop_at:.2f} s"))
            print(f"wrote {plots[-1]}")
            plots.append(plot.plot_runs(
                [r["_metrics"] for r, _ in reps], base + ".png", labels=labels,
                y="accuracy" if model.name == "mlp" else "objective",
                logy=model.name == "kmeans",
                target=args.target if model.name == "mlp" else model.threshold,
                title=f"{model.name}: links drop to {bw_text(args.drop_to)} at "
                      f"{drop_at:.2f} s"))
            print(f"wrote {plots[-1]}")
        except Exception as e:  # noqa: BLE001
            print(f"plotting {base} failed: {e!r}", file=sys.stderr)
    runs.write_result(out, "comm_study", {
        "experiment": "drop", **common_payload(args, model, extra, runner), "workers": w,
        "drop_from": args.drop_from, "drop_to": args.drop_to, "drop_at_s": drop_at,
        "drop_at_given": args.drop_at is not None, "table": rows, "criteria": verdict,
        "metrics_dir": os.path.relpath(keep, os.path.dirname(os.path.abspath(out))),
        "plots": rel(plots, out),
        "runs": [stored_run(r, model) for c in configs
                 for r in results[c["name"]]]})


# ----------------------------------------------------------------------------------------

class StoredRuns:
    """The stored runs of a result JSON stand in for a model: each keeps its time to target."""
    @staticmethod
    def time_to_target(rec):
        return rec.get("time_to_target_s")


def reanalyze(paths):
    """Recomputes the paired statistics and comparisons of grid and hetero result files from
    the runs they store (no run is repeated), and writes them back with a "reanalyzed" note
    (the commit of this script); the measuring commit and binary stay as they were."""
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        results = {}
        for r in doc.get("runs", []):
            results.setdefault(r["name"], []).append(r)
        if doc.get("experiment") == "grid":
            comparisons = []
            for bw, rows in doc["tables"].items():
                auto = next(r["name"] for r in rows if r["setting"] == "auto")
                paired_with_auto(StoredRuns, rows, results, auto)
                comparisons.append({"bandwidth": float(bw), **compare(rows)})
            doc["comparisons"] = comparisons
            print(f"# {path}: grid, {doc['model']}, {doc['rounds']} round(s)")
            for c in comparisons:
                print_paired_verdict(c, f"{bw_text(c['bandwidth'])}: ")
        elif doc.get("experiment") == "hetero":
            paired_with_auto(StoredRuns, doc["table"], results, "hetero_auto")
            doc["comparison"] = compare(doc["table"])
            print(f"# {path}: hetero, {doc['model']}, {doc['rounds']} round(s), target "
                  f"{doc['target']}")
            print_paired_verdict(doc["comparison"])
        else:
            print(f"# {path}: a {doc.get('experiment')} result has no comparison to redo")
            continue
        doc["reanalyzed"] = {"commit": runs.commit(),
                             "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(path, "w") as f:
            json.dump(doc, f, indent=2)


class PooledRuns(StoredRuns):
    @staticmethod
    def samples_to_target(rec):
        return rec.get("samples_to_target")


# What must agree for grid results to be pooled: the same experiment on the same model, links
# and settings, run the same way.
POOL_KEYS = ("experiment", "model", "model_settings", "parameters", "target", "kmeans_threshold",
             "latency_s", "mpi", "seed", "max_seconds", "auto_options", "common_options",
             "workers", "bandwidths", "messages", "intervals", "settings")


def pool(out, paths):
    """Writes to `out` one grid result holding the runs of every grid result in `paths`: the
    rounds of the second file follow those of the first, and so on, so that a pair (auto and a
    setting on one seed) stays within the file, the session, that ran both. The tables,
    paired statistics and comparisons are computed again over all rounds. Meant for results
    of the same controller (the binaries' commits are listed, and the README says which code
    each ran); refuses files whose experiments differ (POOL_KEYS). The --baseline row is
    pooled where every file ran the same baseline, and left out otherwise."""
    docs = []
    for path in paths:
        with open(path) as f:
            docs.append(json.load(f))
    first = docs[0]
    for path, doc in zip(paths, docs):
        if doc.get("experiment") != "grid":
            raise SystemExit(f"{path}: a {doc.get('experiment')} result; only grid results pool")
        differ = [k for k in POOL_KEYS if doc.get(k) != first.get(k)]
        if differ:
            raise SystemExit(f"{path} differs from {paths[0]} in {', '.join(differ)}: not the "
                             f"same experiment, so its rounds cannot be pooled")
    pooled = {k: v for k, v in first.items()
              if k not in ("runs", "tables", "comparisons", "criteria", "plots", "reanalyzed",
                           "commit", "when", "binary_commits", "rounds", "machine")}
    pooled["pooled_from"] = [{"file": os.path.basename(path), "commit": doc.get("commit"),
                              "binary_commits": doc.get("binary_commits"),
                              "machine": doc.get("machine"), "when": doc.get("when"),
                              "rounds": doc.get("rounds")} for path, doc in zip(paths, docs)]
    pooled["commit"] = runs.commit()
    pooled["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    baselines = {json.dumps(doc.get("baseline_info")) for doc in docs}
    same_baseline = len(baselines) == 1
    if not same_baseline:
        print("# the files ran different baselines (or none): the baseline rows are left out")
        pooled["baseline_binary"] = pooled["baseline_info"] = None
    pooled["runs"] = []
    offset = 0
    for path, doc in zip(paths, docs):
        for r in doc["runs"]:
            pooled["runs"].append(dict(r, round=r["round"] + offset,
                                       source=os.path.basename(path)))
        offset += doc["rounds"]
    pooled["rounds"] = offset
    results = {}
    for r in pooled["runs"]:
        results.setdefault(r["name"], []).append(r)
    pooled["tables"], comparisons = {}, []
    for bw, rows in first["tables"].items():
        table = []
        for row in rows:
            if row["key"] == BASELINE and not same_baseline:
                continue
            keep = {k: row[k] for k in ("name", "setting", "key", "message_fraction",
                                        "message_elements", "interval") if k in row}
            table.append({**keep, **row_of(PooledRuns, results[row["name"]])})
        auto = next(r["name"] for r in table if r["setting"] == "auto")
        paired_with_auto(PooledRuns, table, results, auto)
        pooled["tables"][bw] = table
        comparisons.append({"bandwidth": float(bw), **compare(table)})
    pooled["comparisons"] = comparisons
    with open(out, "w") as f:
        json.dump(pooled, f, indent=2)
    print(f"# {out}: grid, {pooled['model']}, {offset} rounds pooled from {len(paths)} files")
    for c in comparisons:
        print(f"# {bw_text(c['bandwidth'])}: medians: auto/best {fmt_ratio(c['auto_over_best'])}"
              f" (best {c['best_fixed']}), auto/default {fmt_ratio(c['auto_over_default'])}")
        print_paired_verdict(c, f"{bw_text(c['bandwidth'])}: ")


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--reanalyze":
        reanalyze(sys.argv[2:])
        return
    if len(sys.argv) > 4 and sys.argv[1] == "--pool":
        pool(sys.argv[2], sys.argv[3:])
        return
    args, extra = arguments()
    runner = Runner(args)
    for model_name in args.models:
        model = Model(model_name, args, runner)
        if "grid" in args.experiments:
            grid_experiment(args, extra, runner, model)
        if "hetero" in args.experiments:
            hetero_experiment(args, extra, runner, model)
        if "drop" in args.experiments:
            drop_experiment(args, extra, runner, model)


if __name__ == "__main__":
    main()
