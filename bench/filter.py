#!/usr/bin/env python3
"""The filter study: 4 workers, one of them an adversary that sends its state plus noise;
time to 85% test accuracy on Fashion-MNIST with the Parzen window, with the bare direction
test and with no filter.

For each --scales value S (0.01,0.1,1; 0 means no adversary, a reference) worker
--adversary-worker (3) runs with --adversary W:noise:S, and the MLP 784-256-256-10 (batch
64, --lr 0.1) trains with each of --filters:
  window     --algo asgd                 direction test and window (the defaults)
  direction  --algo asgd --window inf    the bare direction test
  none       --algo asgd-nofilter        every message accepted
until worker 0 reaches --target (0.85) or --max-seconds (60) pass. The table shows medians
over --rounds; accepted / rejected / nonfinite are totals over all receiving workers
(the summary's per_worker in the JSON splits them).

Options this driver does not know (e.g. --merge average) are passed to every run; the
window is what the study varies, so --window may not be passed. --common does the same.

    bench/filter.py [--build build] [--scales 0.01,0.1,1] [--lr 0.1] [--max-seconds 60]
                    [--rounds 1] [--out bench/results/filter.json] [asgd options...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import runs  # noqa: E402
import study  # noqa: E402

FILTERS = {
    "window": ["--algo", "asgd"],
    "direction": ["--algo", "asgd", "--window", "inf"],
    "none": ["--algo", "asgd-nofilter"],
}


def main():
    ap = study.parser(__doc__, "filter")
    ap.add_argument("--scales", default="0.01,0.1,1",
                    help="noise scales of the adversary, comma-separated (0: no adversary)")
    ap.add_argument("--filters", default=",".join(FILTERS),
                    help=f"comma-separated subset of {', '.join(FILTERS)}")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--adversary-worker", type=int, default=3)
    ap.add_argument("--kind", default="noise", help="adversary kind (see asgd train --help)")
    ap.add_argument("--lr", type=float, default=0.1, help="step size of every run")
    ap.add_argument("--target", type=float, default=0.85, help="test accuracy to reach")
    ap.add_argument("--max-seconds", type=float, default=60, help="wall-time cap of each run")
    ap.add_argument("--epochs", type=float, default=1000, help="epoch cap (large: time decides)")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    args, extra = study.parse(ap)
    scales = study.floats(args.scales)
    filters = [f.strip() for f in args.filters.split(",") if f.strip()]
    unknown = [f for f in filters if f not in FILTERS]
    if unknown:
        ap.error(f"unknown filter(s) {', '.join(unknown)}; known: {', '.join(FILTERS)}")
    if not 0 <= args.adversary_worker < args.workers:
        ap.error(f"--adversary-worker must be below --workers ({args.workers})")
    binary = runs.asgd_binary(args.build)

    common = study.MLP + ["--epochs", args.epochs, "--max-seconds", args.max_seconds,
                          "--target-accuracy", args.target, "--eval-every", args.eval_every,
                          "--workers", args.workers, "--lr", args.lr, *args.common, *extra]
    configs = []
    for scale in scales:
        adversary = (["--adversary", f"{args.adversary_worker}:{args.kind}:{scale:g}"]
                     if scale > 0 else [])
        for f in filters:
            configs.append(study.config(f"{f}_s{scale:g}", common + adversary + FILTERS[f],
                                        scale=scale, filter=f))

    time_of = study.time_to_target

    def describe(rec):
        t = time_of(rec)
        return (f"{t:.2f} s to target" if t is not None else "target not reached") + \
            f", final accuracy {study.summary_value(rec, 'final_test_accuracy'):.4f}"

    results = study.sweep(binary, configs, args, describe)

    rows = []
    for c in configs:
        rows.append({"name": c["name"], "scale": c["scale"], "filter": c["filter"],
                     **study.target_row(results[c["name"]], args.target,
                                        ("final_test_accuracy", "steps", "messages_accepted",
                                         "messages_rejected", "messages_nonfinite"))})

    print(f"# filter: Fashion-MNIST, mlp 784-256-256-10, batch 64, {args.workers} workers, "
          f"worker {args.adversary_worker} sends its state + {args.kind} of the given scale, "
          f"lr {args.lr:g}, target {args.target:g}, cap {args.max_seconds:g} s, "
          f"{args.rounds} round(s), medians")
    if extra:
        print(f"# pass-through to every run: {' '.join(extra)}")
    study.print_table(
        [("scale", 6, "g"), ("filter", 9, ""), ("reached", 7, ""),
         ("time_to_target_s", 16, ".2f"), ("samples_to_target", 17, ".0f"),
         ("final_acc", 9, ".4f"), ("steps", 7, ".0f"), ("accepted", 9, ".0f"),
         ("rejected", 9, ".0f"), ("nonfinite", 9, ".0f")],
        [[("none" if r["scale"] == 0 else r["scale"]), r["filter"],
          f"{r['reached']}/{r['rounds']}" + ("!" if r["failed"] else ""),
          r["time_to_target_s"], r["samples_to_target"], r["final_test_accuracy"], r["steps"],
          r["messages_accepted"], r["messages_rejected"], r["messages_nonfinite"]]
         for r in rows])
    if any(r["failed"] for r in rows):
        print("# !: some rounds failed (see 'error' in the JSON), e.g. diverged")

    plotted = [(study.representative(results[c["name"]], time_of),
                f"{c['filter']}, " + (f"noise {c['scale']:g}" if c["scale"] > 0
                                      else "no adversary")) for c in configs]
    plots = study.plot_records([p[0] for p in plotted], [p[1] for p in plotted], args.out,
                               target=args.target,
                               title=f"{args.workers} workers, worker {args.adversary_worker} "
                                     f"adversarial ({args.kind}), lr {args.lr:g}")
    runs.write_result(args.out, "filter", {
        "dataset": "fashion-mnist", "model": "mlp 784-256-256-10", "batch": 64,
        "workers": args.workers, "adversary_worker": args.adversary_worker, "kind": args.kind,
        "scales": scales, "filters": {f: FILTERS[f] for f in filters}, "lr": args.lr,
        "target": args.target, "max_seconds": args.max_seconds, "epochs": args.epochs,
        "eval_every": args.eval_every, "rounds": args.rounds, "seed": args.seed,
        "asgd_options": extra, "common_options": args.common, "table": rows,
        "plots": [os.path.relpath(p, os.path.dirname(os.path.abspath(args.out)))
                  for p in plots],
        "runs": [study.public(r) for c in configs for r in results[c["name"]]]})


if __name__ == "__main__":
    main()
