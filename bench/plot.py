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

With the load balancer (`asgd train --balance auto`) the metrics also hold its decisions,
lines {"event": "balance", "time_s", "worker", "peer", "bandwidth_bytes_per_s" (null: an
ideal link), "latency_s", "backlog", "step_s", "message", "interval", "busy"}. Two more
modes draw them:

    bench/plot.py --mode balance RUN.jsonl [RUN2.jsonl ...] -o out.png [--labels a,b]
                  [--change-at T] [--title T]
        one column per run: the bandwidth estimate of every link (worker -> peer), the
        message size m and the send interval k chosen for it, against wall time, and each
        worker's steps/s between its evaluations; --change-at draws a vertical line (the
        time of a --link-change)

    bench/plot.py --mode matrix SOURCE [SOURCE2 ...] -o out.png [--labels a,b] [--last 5]
        one heat map per source of the bandwidth matrix (row = from, column = to): for a
        metrics file, the mean of the last --last estimates of each (worker, peer); for an
        `asgd bench-link --json` file (e.g. bench/results/bench_link_np4.json), its
        bandwidth_gb_per_s matrix (the largest size of the sweep)

Under mpirun, rank R > 0 writes its metrics to FILE.rankR.jsonl; in these two modes a
metrics file FILE.jsonl brings in its FILE.rank*.jsonl siblings (--no-ranks: not).
As a module: plot_balance(runs, out, ...), plot_matrix(sources, out, ...).
"""
import argparse
import glob
import json
import math
import os
import re
import sys

X_LABELS = {"time": "wall time since the start of training (s)",
            "samples": "samples processed by worker 0"}
X_KEYS = {"time": "time_s", "samples": "samples"}
COUNTERS = ("messages_accepted", "messages_rejected", "messages_nonfinite")


def save(fig, out):
    """Writes the figure as PNG (creating the folder) and closes it; returns the path."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


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
    """The records of a metrics JSON-lines file; ValueError naming the file (and line) for
    one that cannot be read or is not one JSON object per line."""
    try:
        with open(path) as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read it: {e}") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON ({e}); expected an `asgd train "
                             "--metrics` file, one JSON object per line") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: a JSON {type(record).__name__}, not an object; "
                             "expected an `asgd train --metrics` file") from None
        records.append(record)
    return records


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
    for records, label in zip(loaded, labels):
        if not any(r.get("worker") in (0, -1) and "event" not in r and
                   (_number(r.get("test_accuracy")) or _number(r.get("test_loss")))
                   for r in records):
            raise ValueError(f"{label}: no evaluations of worker 0 in it (an `asgd train "
                             "--metrics` file holds one line per evaluation)")
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
    return save(fig, out)


# ----------------------------------------------------------------------------------------
# The load balancer's decisions (--mode balance) and the bandwidth matrix (--mode matrix).

def rank_files(path):
    """FILE.jsonl and the FILE.rankR.jsonl that ranks R > 0 write under mpirun (also accepted:
    FILE.jsonl.rankR.jsonl), in rank order."""
    base = path[:-len(".jsonl")] if path.endswith(".jsonl") else path
    found = {}
    for pattern in (glob.escape(base) + ".rank*.jsonl", glob.escape(path) + ".rank*.jsonl"):
        for p in glob.glob(pattern):
            m = re.search(r"\.rank(\d+)\.jsonl$", p)
            if m and p != path:
                found.setdefault(int(m.group(1)), p)
    return [path] + [found[r] for r in sorted(found)]


def load_run(run, ranks=True):
    """The records of a run: a list of records as it is, or a metrics file (with its rank
    siblings when `ranks`)."""
    if not isinstance(run, str):
        return list(run)
    out = []
    for p in (rank_files(run) if ranks else [run]):
        out += load_metrics(p)
    return out


def balance_lines(records):
    return [r for r in records if r.get("event") == "balance"]


def evaluation_lines(records):
    return [r for r in records if "event" not in r]


def _links(lines):
    return sorted({(r["worker"], r["peer"]) for r in lines})


def step_rates(records, worker):
    """(time, steps/s) of `worker` between its consecutive evaluations."""
    pts = [(r["time_s"], r["step"]) for r in evaluation_lines(records)
           if r.get("worker") == worker and _number(r.get("time_s")) and _number(r.get("step"))]
    pts.sort()
    out = []
    for (t0, s0), (t1, s1) in zip(pts, pts[1:]):
        if t1 > t0:
            out.append(((t0 + t1) / 2, (s1 - s0) / (t1 - t0)))
    return out


def _run_label(run, i):
    return os.path.splitext(os.path.basename(run))[0] if isinstance(run, str) else f"run {i}"


def plot_balance(runs, out, labels=None, change_at=None, title=None, ranks=True):
    """One column per run (a metrics path or its records): the bandwidth estimates of every
    link (worker -> peer), the message size m and interval k chosen for it, against wall time,
    and each worker's steps/s between evaluations. `change_at`: a time (or one per run, None
    for none) drawn as a vertical line. Returns `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    loaded = [load_run(r, ranks) for r in runs]
    if labels is None:
        labels = [_run_label(r, i) for i, r in enumerate(runs)]
    if len(labels) != len(loaded):
        raise ValueError(f"{len(labels)} labels for {len(loaded)} runs")
    if not any(balance_lines(r) for r in loaded):
        raise ValueError(f"{', '.join(labels)}: no load-balancer decisions in them (written by "
                         "`asgd train --metrics` with --balance auto, the default)")
    changes = (list(change_at) if isinstance(change_at, (list, tuple))
               else [change_at] * len(loaded))
    if len(changes) != len(loaded):
        raise ValueError(f"{len(changes)} change times for {len(loaded)} runs")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}")
    rows = [("bandwidth_bytes_per_s", "bandwidth estimate (B/s)"),
            ("message", "message m (elements)"), ("interval", "send interval k (steps)"),
            (None, "steps/s (between evaluations)")]
    ncol = len(loaded)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(max(6.5, 5.2 * ncol), 10),
                             sharex="col", squeeze=False)
    for c, (records, label, change) in enumerate(zip(loaded, labels, changes)):
        lines = balance_lines(records)
        links = _links(lines)
        cmap = plt.get_cmap("tab20" if len(links) > 10 else "tab10")
        for li, (w, p) in enumerate(links):
            mine = sorted((r for r in lines if r["worker"] == w and r["peer"] == p),
                          key=lambda r: r["time_s"])
            colour = cmap(li % cmap.N)
            for row, (key, _) in enumerate(rows[:3]):
                pts = [(r["time_s"], r[key]) for r in mine if _number(r.get(key)) and r[key] > 0]
                if pts:
                    axes[row][c].step([t for t, _ in pts], [v for _, v in pts], where="post",
                                      color=colour, lw=1.2, marker=".", ms=3,
                                      label=f"{w}\u2192{p}")
        workers = sorted({r["worker"] for r in evaluation_lines(records)
                          if isinstance(r.get("worker"), int) and r["worker"] >= 0})
        for wi, w in enumerate(workers):
            pts = step_rates(records, w)
            if pts:
                axes[3][c].plot([t for t, _ in pts], [v for _, v in pts], lw=1.1,
                                color=plt.get_cmap("tab10")(wi % 10), label=f"worker {w}")
        for row, (key, ylabel) in enumerate(rows):
            ax = axes[row][c]
            if row < 3 and ax.lines:
                ax.set_yscale("log")
                lo, hi = ax.get_ylim()
                ax.yaxis.set_major_formatter(plain)
                # minor ticks labelled only where the axis spans too little for majors
                ax.yaxis.set_minor_formatter(plain if hi < 8 * lo else
                                             matplotlib.ticker.NullFormatter())
            if change is not None:
                ax.axvline(change, color="red", ls="--", lw=1,
                           label="link change" if row == 0 else None)
            ax.grid(True, alpha=0.3, which="both" if row < 3 else "major")
            if c == 0:
                ax.set_ylabel(ylabel)
            if ax.lines and (row == 0 or row == 3) and len(ax.lines) <= 16:
                ax.legend(fontsize=7, loc="best", ncol=2 if len(ax.lines) > 6 else 1)
        if not lines:
            axes[0][c].text(0.5, 0.5, "no balance lines (run without --balance auto?)",
                            ha="center", va="center", transform=axes[0][c].transAxes,
                            color="grey")
        elif not any(_number(r.get("bandwidth_bytes_per_s")) for r in lines):
            axes[0][c].text(0.5, 0.5, "every link ideal (no bandwidth limit)", ha="center",
                            va="center", transform=axes[0][c].transAxes, color="grey")
        axes[0][c].set_title(label, fontsize=10)
        axes[-1][c].set_xlabel(X_LABELS["time"])
    if title:
        fig.suptitle(title)
    return save(fig, out)


def _bytes(n):
    for unit, f in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= f:
            return f"{n / f:g} {unit}"
    return f"{n} B"


def bandwidth_matrix(source, last=5, ranks=True):
    """(matrix [from][to] in bytes/s with None where unknown, what it is). `source`: an
    `asgd bench-link --json` file or document (its bandwidth_gb_per_s), or a metrics file or
    its records (per (worker, peer) the mean of the last `last` finite estimates; an ideal
    link is +inf)."""
    doc = None
    if isinstance(source, dict):
        doc = source
    elif isinstance(source, str):
        with open(source) as f:
            head = f.read(1 << 16).lstrip()
        if head.startswith("{") and not head.startswith("{\"worker\"") and \
                not head.startswith("{\"event\""):
            try:
                with open(source) as f:
                    doc = json.load(f)
            except json.JSONDecodeError:
                doc = None
    if doc is not None:
        if "bandwidth_gb_per_s" not in doc:
            raise ValueError(f"{source if isinstance(source, str) else 'document'}: no "
                             "bandwidth_gb_per_s matrix (not an asgd bench-link JSON)")
        m = [[None if v is None else v * 1e9 for v in row] for row in doc["bandwidth_gb_per_s"]]
        sizes = {p.get("bandwidth_bytes") for p in doc.get("pairs", [])} - {None}
        size = f" ({_bytes(max(sizes))})" if sizes else ""
        return m, doc.get("description") or f"bench-link: bandwidth at the largest size{size}"
    lines = balance_lines(load_run(source, ranks))
    if not lines:
        raise ValueError(f"{source if isinstance(source, str) else 'records'}: no balance lines")
    n = 1 + max(max(r["worker"], r["peer"]) for r in lines)
    m = [[None] * n for _ in range(n)]
    for w, p in _links(lines):
        mine = sorted((r for r in lines if r["worker"] == w and r["peer"] == p),
                      key=lambda r: r["time_s"])
        vals = [math.inf if r.get("bandwidth_bytes_per_s") is None else r["bandwidth_bytes_per_s"]
                for r in mine]
        vals = [v for v in vals if v is not None and v > 0][-last:]
        if vals:
            m[w][p] = math.inf if any(math.isinf(v) for v in vals) else sum(vals) / len(vals)
    return m, f"load balancer: mean of the last {last} estimates"


def plot_matrix(sources, out, labels=None, last=5, title=None, ranks=True):
    """One heat map per source (see bandwidth_matrix) of the bandwidth matrix, row = from,
    column = to, log colour scale shared by all panels, each cell annotated. Returns `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.colors
    import matplotlib.ticker

    mats = [bandwidth_matrix(s, last, ranks) for s in sources]
    if labels is None:
        labels = [_run_label(s, i) if isinstance(s, str) else f"source {i}"
                  for i, s in enumerate(sources)]
    if len(labels) != len(mats):
        raise ValueError(f"{len(labels)} labels for {len(mats)} sources")
    finite = [v for m, _ in mats for row in m for v in row
              if v is not None and math.isfinite(v) and v > 0]
    lo, hi = (min(finite), max(finite)) if finite else (1.0, 10.0)
    if hi <= lo:
        lo, hi = lo / 2, hi * 2
    norm = matplotlib.colors.LogNorm(vmin=lo, vmax=hi)
    unit, scale = (("GB/s", 1e9) if hi >= 1e9 else ("MB/s", 1e6) if hi >= 1e6
                   else ("kB/s", 1e3))
    fig, axes = plt.subplots(1, len(mats), figsize=(4.6 * len(mats) + 1.2, 4.6), squeeze=False)
    image = None
    for ax, (m, what), label in zip(axes[0], mats, labels):
        n = len(m)
        grid = [[math.nan if v is None or not math.isfinite(v) else v for v in row] for row in m]
        image = ax.imshow(grid, norm=norm, cmap="viridis")
        for i in range(n):
            for j in range(n):
                v = m[i][j]
                text = ("-" if v is None else "ideal" if math.isinf(v)
                        else f"{v / scale:.3g}")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if v is None or math.isinf(v) or norm(v) > 0.5
                        else "white")
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel("to (peer)")
        ax.set_ylabel("from (worker)")
        ax.set_title(f"{label}\n{what}", fontsize=9)
    if image is not None:
        bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85)
        fmt = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v / scale:.3g}")
        bar.ax.yaxis.set_major_formatter(fmt)
        bar.ax.yaxis.set_minor_formatter(fmt if hi < 8 * lo else
                                         matplotlib.ticker.NullFormatter())
        bar.set_label(f"bandwidth ({unit})")
    if title:
        fig.suptitle(title)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out


def main():
    ensure_matplotlib()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("runs", nargs="+", metavar="RUN.jsonl",
                    help="asgd train --metrics files (--mode matrix: also bench-link JSON)")
    ap.add_argument("-o", "--out", required=True, help="PNG to write")
    ap.add_argument("--mode", choices=["curves", "balance", "matrix"], default="curves",
                    help="curves: accuracy/objective and acceptance rate (default); balance: "
                         "the load balancer's estimates and settings over time; matrix: "
                         "heat map of the bandwidth matrix")
    ap.add_argument("--labels", help="comma-separated, one per run (default: file names)")
    ap.add_argument("--x", choices=sorted(X_KEYS), default="time")
    ap.add_argument("--y", choices=["auto", "accuracy", "objective"], default="auto",
                    help="auto: accuracy unless no run reports any (e.g. K-Means)")
    ap.add_argument("--target", type=float, help="draw a horizontal line at this value")
    ap.add_argument("--logy", action="store_true", help="logarithmic y axis on top")
    ap.add_argument("--title")
    ap.add_argument("--change-at", type=float, metavar="T",
                    help="--mode balance: mark a --link-change at T seconds")
    ap.add_argument("--last", type=int, default=5,
                    help="--mode matrix: estimates averaged per (worker, peer) (default 5)")
    ap.add_argument("--no-ranks", action="store_true",
                    help="--mode balance/matrix: do not bring in FILE.rank*.jsonl")
    args = ap.parse_args()
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        ap.error(f"--labels has {len(labels)} names for {len(args.runs)} runs")
    if args.mode == "matrix" and args.last < 1:
        ap.error("--last must be at least 1")
    try:
        if args.mode == "balance":
            plot_balance(args.runs, args.out, labels=labels, change_at=args.change_at,
                         title=args.title, ranks=not args.no_ranks)
        elif args.mode == "matrix":
            plot_matrix(args.runs, args.out, labels=labels, last=args.last, title=args.title,
                        ranks=not args.no_ranks)
        else:
            plot_runs(args.runs, args.out, labels=labels, x=args.x, y=args.y,
                      target=args.target, logy=args.logy, title=args.title)
    except ValueError as e:
        sys.exit(f"plot.py --mode {args.mode}: {e}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
