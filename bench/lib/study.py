"""Shared code of the convergence studies (convergence.py, links.py, kmeans.py, filter.py): the
common command line, runs of `asgd train` that keep their metrics, configurations repeated
over rounds, medians in which a run that missed its target counts as infinitely slow,
fixed-width tables and the curve plots."""
import argparse
import json
import math
import os
import shlex
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import plot  # noqa: E402
import runs  # noqa: E402

ALGOS = ("asgd", "asgd-nofilter", "sync", "simu", "local")
ASGD_ALGOS = ("asgd", "asgd-nofilter")  # the runs that take the pass-through options
MLP = ["--dataset", "fashion-mnist", "--model", "mlp", "--hidden", "256,256", "--batch", 64]


def parser(doc, name):
    """The options every study has; the driver adds its own."""
    ap = argparse.ArgumentParser(
        description=doc.split("\n")[0], allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Options this driver does not know are passed to `asgd train` (see the "
               "driver's description for which runs get them).")
    ap.add_argument("--build", default=os.path.join(runs.ROOT, "build"),
                    help="build folder holding bin/asgd (default: build)")
    ap.add_argument("--out", default=os.path.join(runs.ROOT, "bench", "results", f"{name}.json"),
                    help="result JSON; the plots go next to it (.png, _samples.png)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeats of every configuration, alternated; medians are reported")
    ap.add_argument("--seed", type=int, default=1, help="round r runs with --seed SEED+r")
    ap.add_argument("--common", default="",
                    help="asgd options for every run, one quoted string, e.g. "
                         "--common='--backend cuda'")
    ap.add_argument("--keep-metrics", metavar="DIR",
                    help="also keep every run's metrics file here (for bench/plot.py)")
    return ap


def parse(ap):
    """(args, pass-through asgd options); args.common becomes a list. Makes sure matplotlib
    is there before anything runs (see plot.ensure_matplotlib)."""
    plot.ensure_matplotlib()
    args, extra = ap.parse_known_args()
    if extra and not extra[0].startswith("--"):
        ap.error(f"unexpected argument {extra[0]!r}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.common = shlex.split(args.common)
    return args, extra


def floats(text):
    return [float(v) for v in text.split(",") if v.strip()]


def algos(text):
    chosen = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in chosen if a not in ALGOS]
    if unknown:
        raise SystemExit(f"unknown algorithm(s) {', '.join(unknown)}; known: {', '.join(ALGOS)}")
    return chosen


def option_names(args):
    return [str(a).split("=", 1)[0] for a in args if str(a).startswith("--")]


def check_configs(configs):
    """Refuses, before anything runs, a configuration that sets an option twice (asgd would
    stop with an error; the pass-through options may not set what the study varies)."""
    for c in configs:
        names = option_names(c["args"]) + ["--seed"]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise SystemExit(f"{c['name']}: {', '.join(twice)} set twice; the study sets "
                             "it itself, do not pass it through")


def config(name, args, **fields):
    """One configuration: a name (unique, also the metrics file name), the asgd arguments
    and the fields that describe it in the tables and the JSON."""
    return {"name": name, "args": [str(a) for a in args], **fields}


def balance_auto_unless_given(extra):
    """The pass-through options with --balance auto in front unless they set --balance: the
    asgd runs then communicate as `asgd train` does by default (runs.train() would otherwise
    fix the communication with --balance off)."""
    return extra if "--balance" in option_names(extra) else ["--balance", "auto", *extra]


def lr_grid(common, algos, workers, lrs, extra):
    """(groups, configs): the 1-worker local run and `workers` workers of each of `algos`,
    each at every step size of `lrs`; `extra` goes to the multi-worker asgd runs only.
    Configurations are named ALGO_wWORKERS_lrLR and carry algo, workers and lr."""
    groups = [("local", 1)] + [(a, workers) for a in algos]
    configs = []
    for algo, w in groups:
        for lr in lrs:
            own = extra if w > 1 and algo in ASGD_ALGOS else []
            configs.append(config(f"{algo}_w{w}_lr{lr:g}",
                                  common + ["--workers", w, "--algo", algo, "--lr", lr, *own],
                                  algo=algo, workers=w, lr=lr))
    return groups, configs


def best_per_group(rows, groups, time_key, tiebreak, ratio_keys):
    """Each (algo, workers) of `groups` at its best step size: the row of `rows` with the
    lowest rows[time_key] (None: never got there, last), ties by tiebreak(row) (lower first).
    Each copy gets, for every (key, name) of ratio_keys, name = its key / the first group's
    (the single worker's), or None where either is missing."""
    def order(r):
        return (r[time_key] if r[time_key] is not None else math.inf, tiebreak(r))
    best = [dict(min((r for r in rows if r["algo"] == algo and r["workers"] == workers),
                     key=order)) for algo, workers in groups]
    single = best[0]
    for b in best:
        for key, name in ratio_keys:
            both = b[key] is not None and single[key] is not None and single[key] > 0
            b[name] = b[key] / single[key] if both else None
    return best


def curve(metrics, workers=(0, -1)):
    """The evaluations of the given workers, one list per key (compact in the JSON)."""
    lines = [m for m in metrics if m.get("worker") in workers and "event" not in m]
    keys = sorted({k for m in lines for k in m})
    return {k: [m.get(k) for m in lines] for k in keys}


def run_one(binary, cfg, round_index, seed, keep_dir=None):
    """One `asgd train` run. A run that diverged is recorded with its error (an outcome of
    its step size); any other failure (bad options, no device, missing data) ends the study
    with asgd's error, before a result file with missing figures can be written."""
    rec = {k: v for k, v in cfg.items() if k != "args"}
    rec.update(round=round_index, seed=seed, args=cfg["args"] + ["--seed", str(seed)])
    try:
        summary = runs.train(binary, rec["args"], metrics=True)
    except runs.RunFailed as e:
        if not e.diverged:
            raise SystemExit(f"{cfg['name']} round {round_index} could not run; the study "
                             f"stops (nothing written):\n{e}")
        rec.update(error=e.reason, summary=None, curve=None, _metrics=[])
        return rec
    metrics = summary.pop("metrics")
    rec.update(summary=summary, curve=curve(metrics), _metrics=metrics)
    if keep_dir:
        os.makedirs(keep_dir, exist_ok=True)
        write_metrics(metrics, os.path.join(keep_dir, f"{cfg['name']}_r{round_index}.jsonl"))
    return rec


def sweep(binary, configs, args, describe=None):
    """Runs every configuration args.rounds times, alternating them within each round so
    that machine noise hits all; returns {name: [record per round]}. One line per run goes
    to stderr (the table goes to stdout)."""
    check_configs(configs)
    out = {c["name"]: [] for c in configs}
    total, done = len(configs) * args.rounds, 0
    for r in range(args.rounds):
        for c in configs:
            rec = run_one(binary, c, r, args.seed + r, args.keep_metrics)
            out[c["name"]].append(rec)
            done += 1
            note = rec["error"] if "error" in rec else (describe(rec) if describe else "done")
            print(f"[{done}/{total}] {c['name']} round {r}: {note}", file=sys.stderr, flush=True)
    return out


def public(rec):
    """The record as it goes into the JSON (without the in-memory metrics)."""
    return {k: v for k, v in rec.items() if not k.startswith("_")}


def summary_value(rec, key):
    s = rec.get("summary")
    return None if s is None else s.get(key)


def deciding_worker(rec):
    """The worker whose evaluations stop a run at the target: the averaged model (-1) for
    simu with several workers, else worker 0 (as in runtime/trainer.cpp)."""
    s = rec["summary"]
    return -1 if s["algo"] == "simu" and s["workers"] > 1 else 0


def first_point(rec, predicate):
    """The first evaluation of the deciding worker that satisfies predicate(line)."""
    if not rec.get("_metrics"):
        return None
    w = deciding_worker(rec)
    return next((m for m in rec["_metrics"] if m.get("worker") == w and predicate(m)), None)


def samples_to_target(rec, target):
    p = first_point(rec, lambda m: (m.get("test_accuracy") or 0) >= target)
    return None if p is None else p["samples"]


def median_or_none(values):
    """Median where None counts as +infinity (a run that did not get there); None if the
    median itself is infinite or there is nothing."""
    xs = [math.inf if v is None else v for v in values]
    if not xs:
        return None
    m = runs.median(xs)
    return None if math.isinf(m) or math.isnan(m) else m


def median_of(records, get):
    """Median of get(record) over the records that did not fail (None if all failed)."""
    xs = [get(r) for r in records if "error" not in r]
    xs = [x for x in xs if x is not None]
    return runs.median(xs) if xs else None


def representative(records, get):
    """The round whose get(record) is nearest the median (None counting as +inf): the run to
    plot for a configuration."""
    ok = [r for r in records if "error" not in r] or records
    m = median_or_none([get(r) for r in ok])
    m = math.inf if m is None else m

    def distance(r):
        v = get(r)
        v = math.inf if v is None else v
        return 0 if v == m else abs(v - m)
    return min(ok, key=distance)


def time_to_target(rec):
    return summary_value(rec, "time_to_target_s")


def target_row(recs, target, keys):
    """One table row for the runs `recs` of a configuration: rounds, failures, how many reached
    the target, median time and samples to it, and the median of each summary key."""
    ok = [r for r in recs if "error" not in r]
    row = {"rounds": len(recs), "failed": len(recs) - len(ok),
           "reached": sum(time_to_target(r) is not None for r in ok),
           "time_to_target_s": median_or_none([time_to_target(r) for r in recs]),
           "samples_to_target": median_or_none(
               [samples_to_target(r, target) if "error" not in r else None for r in recs])}
    for key in keys:
        row[key] = median_of(recs, lambda r, k=key: summary_value(r, k))
    return row


def cell(value, spec):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return format(value, spec) if spec else str(value)


def print_table(columns, rows):
    """nccl-tests-like: a '#' header line, then right-aligned fixed-width columns.
    columns: [(header, width, format spec)]; rows: lists of raw values (None prints '-')."""
    header = " ".join(f"{h:>{w}}" for h, w, _ in columns)
    print("#" + (header[1:] if header.startswith(" ") else header))
    for row in rows:
        print(" ".join(f"{cell(v, spec):>{w}}" for v, (_, w, spec) in zip(row, columns)))


def write_metrics(metrics, path):
    with open(path, "w") as f:
        for m in metrics:
            f.write(json.dumps(m) + "\n")


def png_paths(out):
    base = os.path.splitext(out)[0]
    return base + ".png", base + "_samples.png"


def plot_records(records, labels, out, **kw):
    """Plots the records' curves against wall time (OUT.png) and samples (OUT_samples.png)
    with bench/plot.py, from metrics files in a temporary folder; returns the paths written."""
    usable = [(r, l) for r, l in zip(records, labels) if r.get("_metrics")]
    paths_out = png_paths(out)
    if not usable:
        print("nothing to plot: every run failed", file=sys.stderr)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (r, _) in enumerate(usable):
            files.append(os.path.join(tmp, f"{i}.jsonl"))
            write_metrics(r["_metrics"], files[-1])
        written = []
        for path, x in zip(paths_out, ("time", "samples")):
            try:  # a plot must not cost the measurements: the JSON is written after this
                plot.plot_runs(files, path, labels=[l for _, l in usable], x=x, **kw)
            except Exception as e:  # noqa: BLE001
                print(f"plotting {path} failed: {e!r}", file=sys.stderr)
                continue
            written.append(path)
            print(f"wrote {path}")
    return written
