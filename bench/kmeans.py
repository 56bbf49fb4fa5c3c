#!/usr/bin/env python3
"""K-Means, the seed papers' benchmark: one worker against two workers with every algorithm,
final objective and the time to come within 2% of the single worker's final objective.

Every run trains `--model kmeans --clusters 64` on --dataset (blobs:200000,32,64: 200000
points around 64 centres in 32 dimensions, 10% held out) for --epochs (3) at --lr (5; the
objective is half the squared distance, so a step of lr moves a centre lr * n_k / batch of
the way to the mean of its n_k batch rows, see kernels/models/kmeans.h), evaluating every
--eval-every (50) steps. Runs: 1 worker --algo local, and --workers (2) workers for each of
--algos (asgd, asgd-nofilter, sync, simu, local). The objective is the test loss, half the
mean squared distance of a test point to its nearest centre (about D/2 = 16 at the true
centres).

  reference  = the single worker's final objective (median over --rounds)
  time_within = wall time from the start of training to worker 0's first evaluation with
               objective <= reference * (1 + --tolerance (0.02)), evaluations included; for
               simu the averaged model at the end is the only point that counts
A run that fails (e.g. diverges) is listed with its error.

Options this driver does not know (e.g. --merge average) are passed to the multi-worker
asgd and asgd-nofilter runs only; --common passes options to every run.

    bench/kmeans.py [--build build] [--epochs 3] [--lr 5] [--eval-every 50] [--rounds 1]
                    [--out bench/results/kmeans.json] [asgd options...]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import runs  # noqa: E402
import study  # noqa: E402


def main():
    ap = study.parser(__doc__, "kmeans")
    ap.add_argument("--dataset", default="blobs:200000,32,64")
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=3)
    # At 20 (5/16 of the way to each assigned row) the objective of one run wandered by 20%
    # between evaluations, so a run's final objective was noise; at 5 it stays within 1%.
    ap.add_argument("--lr", type=float, default=5)
    ap.add_argument("--eval-every", type=int, default=50, help="steps between evaluations")
    ap.add_argument("--tolerance", type=float, default=0.02,
                    help="'within' means objective <= reference * (1 + tolerance)")
    ap.add_argument("--algos", default=",".join(study.ALGOS),
                    help="algorithms of the multi-worker runs (the 1-worker local run is "
                         "always there)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the multi-worker runs")
    args, extra = study.parse(ap)
    algos = study.algos(args.algos)
    binary = runs.asgd_binary(args.build)

    common = ["--dataset", args.dataset, "--model", "kmeans", "--clusters", args.clusters,
              "--batch", args.batch, "--epochs", args.epochs, "--lr", args.lr,
              "--eval-every", args.eval_every, *args.common]
    groups = [("local", 1)] + [(a, args.workers) for a in algos]
    configs = [study.config(
        f"{algo}_w{workers}",
        common + ["--workers", workers, "--algo", algo,
                  *(extra if workers > 1 and algo in study.ASGD_ALGOS else [])],
        algo=algo, workers=workers) for algo, workers in groups]

    def describe(rec):
        return (f"objective {study.summary_value(rec, 'final_objective'):.3f} after "
                f"{study.summary_value(rec, 'train_seconds'):.2f} s")

    results = study.sweep(binary, configs, args, describe)
    reference = study.median_of(results[configs[0]["name"]],
                                lambda r: study.summary_value(r, "final_objective"))
    threshold = None if reference is None else reference * (1 + args.tolerance)

    def within(rec):
        if threshold is None or "error" in rec:
            return None
        return study.first_point(rec, lambda m: m.get("test_loss") is not None
                                 and m["test_loss"] <= threshold)

    def time_within(rec):
        p = within(rec)
        return None if p is None else p["time_s"]

    rows = []
    for c in configs:
        recs = results[c["name"]]
        ok = [r for r in recs if "error" not in r]
        final = study.median_of(recs, lambda r: study.summary_value(r, "final_objective"))
        rows.append({
            "name": c["name"], "algo": c["algo"], "workers": c["workers"],
            "rounds": len(recs), "failed": len(recs) - len(ok),
            "errors": sorted({r["error"] for r in recs if "error" in r}),
            "final_objective": final,
            "final_to_reference": (final / reference if final is not None and reference
                                   else None),
            "train_seconds": study.median_of(
                recs, lambda r: study.summary_value(r, "train_seconds")),
            "eval_seconds": study.median_of(
                recs, lambda r: study.summary_value(r, "eval_seconds")),
            "reached": sum(time_within(r) is not None for r in recs),
            "time_within_s": study.median_or_none([time_within(r) for r in recs]),
            "samples_within": study.median_or_none(
                [None if within(r) is None else within(r)["samples"] for r in recs]),
            "steps": study.median_of(recs, lambda r: study.summary_value(r, "steps")),
            "messages_accepted": study.median_of(
                recs, lambda r: study.summary_value(r, "messages_accepted")),
            "messages_rejected": study.median_of(
                recs, lambda r: study.summary_value(r, "messages_rejected")),
        })

    print(f"# kmeans: {args.dataset}, K={args.clusters}, batch {args.batch}, lr {args.lr:g}, "
          f"{args.epochs:g} epochs, eval every {args.eval_every} steps, {args.rounds} round(s), "
          "medians")
    print("# reference = 1 worker's final objective = "
          + (f"{reference:.4f}; within = objective <= {threshold:.4f} "
             f"(+{100 * args.tolerance:g}%)" if reference is not None else "n/a (it failed)"))
    if extra:
        print(f"# pass-through to the {args.workers}-worker asgd runs: {' '.join(extra)}")
    study.print_table(
        [("algo", 14, ""), ("workers", 7, ""), ("final_objective", 15, ".4f"),
         ("/reference", 10, ".3f"), ("wall_s", 7, ".3f"), ("eval_s", 7, ".3f"),
         ("within", 6, ""), ("time_within_s", 13, ".3f"), ("samples_within", 14, ".0f"),
         ("steps", 7, ".0f"), ("accepted", 9, ".0f"), ("rejected", 9, ".0f")],
        [[r["algo"], r["workers"], r["final_objective"], r["final_to_reference"],
          r["train_seconds"], r["eval_seconds"], f"{r['reached']}/{r['rounds']}" + ("!" if r["failed"] else ""),
          r["time_within_s"], r["samples_within"], r["steps"], r["messages_accepted"],
          r["messages_rejected"]] for r in rows])
    for r in rows:
        if r["failed"]:
            print(f"# !{r['name']}: {r['failed']}/{r['rounds']} failed: {'; '.join(r['errors'])}")

    plotted = [(study.representative(results[c["name"]], time_within),
                f"{c['algo']}, {c['workers']} worker{'s' * (c['workers'] > 1)}")
               for c in configs]
    plots = study.plot_records(
        [p[0] for p in plotted], [p[1] for p in plotted], args.out, y="objective", logy=True,
        target=threshold, target_label=f"1 worker's final objective + {100 * args.tolerance:g}%",
        title=f"K-Means {args.dataset}, K={args.clusters}, lr {args.lr:g}")
    runs.write_result(args.out, "kmeans", {
        "dataset": args.dataset, "clusters": args.clusters, "batch": args.batch,
        "epochs": args.epochs, "lr": args.lr, "eval_every": args.eval_every,
        "tolerance": args.tolerance, "workers": args.workers, "algos": algos,
        "rounds": args.rounds, "seed": args.seed, "asgd_options": extra,
        "common_options": args.common, "reference_objective": reference,
        "within_threshold": threshold, "table": rows,
        "plots": [os.path.relpath(p, os.path.dirname(os.path.abspath(args.out)))
                  for p in plots],
        "runs": [study.public(r) for c in configs for r in results[c["name"]]]})


if __name__ == "__main__":
    main()
