#!/usr/bin/env python3
"""Convergence curves of `asgd train --metrics` runs in one PNG.

Top: worker 0's test accuracy (or, for models that are not classifiers such as K-Means, the
objective, i.e. the test loss) against wall time or samples processed by worker 0, one line
per run; the averaged model that `--algo simu` evaluates at the end (worker -1) is a star in
the run's colour. Bottom: worker 0's acceptance rate between consecutive evaluations,

    rate = d accepted / (d accepted + d rejected + d nonfinite)

for the runs whose metrics carry the message counters and that received messages in that
interval (runs that do not communicate have no line).

    bench/plot.py RUN.jsonl [RUN2.jsonl ...] -o out.png [--labels a,b] [--x time|samples]
                  [--y auto|accuracy|objective] [--target 0.85] [--logy] [--title T]

As a module: plot_runs(runs, out, labels=None, x="time", ...), where each run is a path to a
metrics file or the list of its records (dicts).
"""
import argparse
import json
import math
import os
import sys

X_LABELS = {"time": "wall time since the start of training (s)",
            "samples": "samples processed by worker 0"}
X_KEYS = {"time": "time_s", "samples": "samples"}
COUNTERS = ("messages_accepted", "messages_rejected", "messages_nonfinite")


def ensure_matplotlib():
    """Re-runs the program under Debian's /usr/bin/python3 (python3-matplotlib) when the
    python3 on PATH (e.g. a pyenv one) has no matplotlib; exits with a message otherwise."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    system = "/usr/bin/python3"
    if os.path.realpath(sys.executable) != os.path.realpath(system) and os.path.exists(system):
        print(f"matplotlib is missing for {sys.executable}; running under {system}",
              file=sys.stderr, flush=True)
        os.execv(system, [system, os.path.abspath(sys.argv[0]), *sys.argv[1:]])
    sys.exit(f"matplotlib is missing for {sys.executable}: install python3-matplotlib")


def load_metrics(path):
    """The records of a metrics JSON-lines file."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _number(v):
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def is_classifier_run(records):
    """A run of a classifier reports some non-zero test accuracy."""
    return any(_number(r.get("test_accuracy")) and r["test_accuracy"] > 0 for r in records)


def acceptance_rate(records, x="time"):
    """(x, rate) of worker 0 between consecutive evaluations; empty without counters."""
    points, previous = [], None
    for r in records:
        if r.get("worker") != 0 or not all(k in r for k in COUNTERS):
            continue
        if previous is not None:
            d = [r[k] - previous[k] for k in COUNTERS]
            if sum(d) > 0:
                points.append((r[X_KEYS[x]], d[0] / sum(d)))
        previous = r
    return points


def plot_runs(runs, out, labels=None, x="time", y="auto", target=None, logy=False,
              title=None, target_label=None):
    """Draws the runs (paths or lists of records) into the PNG `out`; returns `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    if x not in X_KEYS:
        raise ValueError(f"x must be one of {sorted(X_KEYS)}, not {x!r}")
    loaded = [load_metrics(r) if isinstance(r, str) else list(r) for r in runs]
    if labels is None:
        labels = [os.path.splitext(os.path.basename(r))[0] if isinstance(r, str) else f"run {i}"
                  for i, r in enumerate(runs)]
    if len(labels) != len(loaded):
        raise ValueError(f"{len(labels)} labels for {len(loaded)} runs")
    if y == "auto":
        y = "accuracy" if any(is_classifier_run(r) for r in loaded) else "objective"
    y_key = {"accuracy": "test_accuracy", "objective": "test_loss"}[y]
    x_key = X_KEYS[x]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7.5), sharex=True,
                                      gridspec_kw={"height_ratios": [2.2, 1]})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    any_rate = False
    for i, (records, label) in enumerate(zip(loaded, labels)):
        colour = colours[i % len(colours)]
        w0 = [r for r in records if r.get("worker") == 0 and _number(r.get(y_key))]
        top.plot([r[x_key] for r in w0], [r[y_key] for r in w0], color=colour, lw=1.4,
                 label=label)
        avg = [r for r in records if r.get("worker") == -1 and _number(r.get(y_key))]
        if avg:
            top.plot([r[x_key] for r in avg], [r[y_key] for r in avg], "*", color=colour,
                     ms=13, mec="black", mew=0.6, label=f"{label}: average of all workers")
        rate = acceptance_rate(records, x)
        if rate:
            any_rate = True
            bottom.plot([p[0] for p in rate], [p[1] for p in rate], color=colour, lw=1.1,
                        label=label)
    if target is not None:
        top.axhline(target, color="grey", ls="--", lw=1,
                    label=target_label or f"target {target:g}")
    top.set_ylabel("test accuracy (worker 0)" if y == "accuracy"
                   else "objective: test loss (worker 0)")
    if logy:
        top.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        top.yaxis.set_major_formatter(plain)
        top.yaxis.set_minor_formatter(plain)
    top.grid(True, alpha=0.3)
    top.legend(fontsize=8, loc="best")
    top.set_title(title or ("test accuracy" if y == "accuracy" else "objective")
                  + (" against wall time" if x == "time" else " against samples processed"))

    bottom.set_ylabel("acceptance rate (worker 0)")
    bottom.set_xlabel(X_LABELS[x])
    bottom.set_ylim(-0.05, 1.05)
    bottom.grid(True, alpha=0.3)
    if any_rate:
        bottom.legend(fontsize=8, loc="lower right")
    else:
        bottom.text(0.5, 0.5, "no acceptance rate: no run communicates, or the metrics carry no message counters",
                    ha="center", va="center", transform=bottom.transAxes, color="grey")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main():
    ensure_matplotlib()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("runs", nargs="+", metavar="RUN.jsonl", help="asgd train --metrics files")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    ap.add_argument("--labels", help="comma-separated, one per run (default: file names)")
    ap.add_argument("--x", choices=sorted(X_KEYS), default="time")
    ap.add_argument("--y", choices=["auto", "accuracy", "objective"], default="auto",
                    help="auto: accuracy unless no run reports any (e.g. K-Means)")
    ap.add_argument("--target", type=float, help="draw a horizontal line at this value")
    ap.add_argument("--logy", action="store_true", help="logarithmic y axis on top")
    ap.add_argument("--title")
    args = ap.parse_args()
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        ap.error(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    plot_runs(args.runs, args.out, labels=labels, x=args.x, y=args.y, target=args.target,
              logy=args.logy, title=args.title)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
