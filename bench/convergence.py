#!/usr/bin/env python3
"""Convergence study on Fashion-MNIST: time to 85% test accuracy of one worker against two
workers with every algorithm, each at every step size.

The MLP 784-256-256-10 (batch 64) trains with 1 worker (--algo local) and with --workers
(default 2) workers for each of --algos (asgd, asgd-nofilter, sync, simu, local), at each of
--lrs (0.05,0.1,0.2,0.4), until worker 0 reaches --target (0.85) or --max-seconds (40) pass.
The first table has one row per (algo, workers, lr), medians over --rounds; the second the
best lr of each (algo, workers) by time to target (ties and runs that never reach it: by
final accuracy) and its time relative to the best single worker. Then the ratio the issue
asks for, asgd (2 workers, best lr) / 1 worker (best lr), and whether asgd's best runs both
accepted and rejected messages.

Options this driver does not know (e.g. --merge average, --message-size 20000) are passed to
the multi-worker asgd and asgd-nofilter runs only; --common passes options to every run. Those
runs communicate as `asgd train` does by default (--balance auto) unless given --balance (e.g.
--balance off: the whole state every step).

    bench/convergence.py [--build build] [--lrs 0.05,0.1,0.2,0.4] [--algos asgd,...]
                         [--max-seconds 40] [--rounds 1] [--out bench/results/convergence.json]
                         [asgd options...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import runs  # noqa: E402
import study  # noqa: E402


def main():
    ap = study.parser(__doc__, "convergence")
    ap.add_argument("--lrs", default="0.05,0.1,0.2,0.4", help="step sizes, comma-separated")
    ap.add_argument("--algos", default=",".join(study.ALGOS),
                    help="algorithms of the multi-worker runs (the 1-worker local run is "
                         "always there)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the multi-worker runs")
    ap.add_argument("--target", type=float, default=0.85, help="test accuracy to reach")
    ap.add_argument("--max-seconds", type=float, default=40, help="wall-time cap of each run")
    ap.add_argument("--epochs", type=float, default=1000, help="epoch cap (large: time decides)")
    ap.add_argument("--eval-every", type=int, default=100, help="steps between evaluations")
    args, extra = study.parse(ap)
    extra = study.balance_auto_unless_given(extra)
    lrs, algos = study.floats(args.lrs), study.algos(args.algos)
    binary = runs.asgd_binary(args.build)

    common = study.MLP + ["--epochs", args.epochs, "--max-seconds", args.max_seconds,
                          "--target-accuracy", args.target, "--eval-every", args.eval_every,
                          *args.common]
    groups, configs = study.lr_grid(common, algos, args.workers, lrs, extra)

    def describe(rec):
        t = study.summary_value(rec, "time_to_target_s")
        acc = study.summary_value(rec, "final_test_accuracy")
        return (f"{t:.2f} s to target" if t is not None else "target not reached") + \
            f", final accuracy {acc:.4f}"

    results = study.sweep(binary, configs, args, describe)

    rows = []
    for c in configs:
        rows.append({"name": c["name"], "algo": c["algo"], "workers": c["workers"], "lr": c["lr"],
                     **study.target_row(results[c["name"]], args.target,
                                        ("final_test_accuracy", "steps", "samples_per_s",
                                         "messages_accepted", "messages_rejected",
                                         "messages_rejected_direction",
                                         "messages_rejected_window"))})

    print(f"# convergence: Fashion-MNIST, mlp 784-256-256-10, batch 64, target "
          f"{args.target:g}, cap {args.max_seconds:g} s, eval every {args.eval_every} steps, "
          f"{args.rounds} round(s), medians")
    if extra:
        print(f"# pass-through to the {args.workers}-worker asgd runs: {' '.join(extra)}")
    study.print_table(
        [("algo", 14, ""), ("workers", 7, ""), ("lr", 6, "g"), ("reached", 7, ""),
         ("time_to_target_s", 16, ".2f"), ("samples_to_target", 17, ".0f"),
         ("final_acc", 9, ".4f"), ("steps", 7, ".0f"), ("samples/s", 10, ".0f"),
         ("accepted", 9, ".0f"), ("rej_dir", 8, ".0f"), ("rej_window", 10, ".0f")],
        [[r["algo"], r["workers"], r["lr"],
          f"{r['reached']}/{r['rounds']}" + ("!" if r["failed"] else ""),
          r["time_to_target_s"], r["samples_to_target"], r["final_test_accuracy"],
          r["steps"], r["samples_per_s"], r["messages_accepted"],
          r["messages_rejected_direction"], r["messages_rejected_window"]]
         for r in rows])
    if any(r["failed"] for r in rows):
        print("# !: some rounds failed (see 'error' in the JSON), e.g. diverged")

    best = study.best_per_group(rows, groups, "time_to_target_s",
                                lambda r: -(r["final_test_accuracy"] or 0),
                                [("time_to_target_s", "time_ratio_to_single")])
    single = best[0]
    print()
    print("# best lr of each (algo, workers) by time to target; ratio = its time / the best "
          "single worker's (below 1: faster)")
    study.print_table(
        [("algo", 14, ""), ("workers", 7, ""), ("best_lr", 7, "g"),
         ("time_to_target_s", 16, ".2f"), ("samples_to_target", 17, ".0f"),
         ("final_acc", 9, ".4f"), ("ratio", 6, ".3f")],
        [[b["algo"], b["workers"], b["lr"], b["time_to_target_s"], b["samples_to_target"],
          b["final_test_accuracy"], b["time_ratio_to_single"]] for b in best])

    asgd_best = next((b for b in best if b["algo"] == "asgd" and b["workers"] > 1), None)
    ratio, accepted_and_rejected = None, None
    if asgd_best is not None:
        ratio = asgd_best["time_ratio_to_single"]
        recs = [r for r in results[asgd_best["name"]] if "error" not in r]
        accepted_and_rejected = bool(recs) and all(
            r["summary"]["messages_accepted"] > 0 and r["summary"]["messages_rejected"] > 0
            for r in recs)
        print(f"asgd {asgd_best['workers']} workers (lr {asgd_best['lr']:g}) / 1 worker "
              f"(lr {single['lr']:g}), time to target: "
              + (f"{ratio:.3f}" if ratio is not None else "n/a (a target was not reached)"))
        print(f"asgd at lr {asgd_best['lr']:g}: accepted > 0 and rejected > 0 in every round: "
              f"{'yes' if accepted_and_rejected else 'no'} (median accepted "
              f"{study.cell(asgd_best['messages_accepted'], '.0f')}, rejected "
              f"{study.cell(asgd_best['messages_rejected'], '.0f')})")

    plotted = []
    for b in best:
        rec = study.representative(results[b["name"]], lambda r: study.summary_value(
            r, "time_to_target_s"))
        plotted.append((rec, f"{b['algo']}, {b['workers']} worker{'s' * (b['workers'] > 1)}, "
                             f"lr {b['lr']:g}"))
    plots = study.plot_records([p[0] for p in plotted], [p[1] for p in plotted], args.out,
                               target=args.target,
                               title="Fashion-MNIST MLP, best step size of each algorithm")
    runs.write_result(args.out, "convergence", {
        "dataset": "fashion-mnist", "model": "mlp 784-256-256-10", "batch": 64,
        "target": args.target, "max_seconds": args.max_seconds, "epochs": args.epochs,
        "eval_every": args.eval_every, "workers": args.workers, "lrs": lrs, "algos": algos,
        "rounds": args.rounds, "seed": args.seed, "asgd_options": extra,
        "common_options": args.common, "table": rows, "best": best,
        "ratio_asgd_to_single": ratio, "asgd_accepted_and_rejected": accepted_and_rejected,
        "plots": [os.path.relpath(p, os.path.dirname(os.path.abspath(args.out)))
                  for p in plots],
        "runs": [study.public(r) for c in configs for r in results[c["name"]]]})


if __name__ == "__main__":
    main()
