#!/usr/bin/env python3
"""K-Means, the seed papers' benchmark: one worker against two workers with every algorithm,
each at every step size, racing to within 2% of the lowest objective one worker reaches.

Every run trains `--model kmeans --clusters 64` on --dataset (blobs:200000,32,64: 200000
points around 64 centres in 32 dimensions; --test-fraction (0.02) of them held out) for
--epochs (1), evaluating every --eval-every (5) steps, at each of --lrs. The objective is
half the squared distance, so a step of lr moves a centre lr * n_k / batch of the way to the
mean of its n_k batch rows (kernels/models/kmeans.h): with batch 64 and K = 64 a centre sees
about one row per step, and a constant step size ends at a level above the minimum that grows
with lr (the gradient noise). Runs: 1 worker (--algo local), and --workers (2) workers for
each of --algos (asgd, asgd-nofilter, sync, simu, local).

  reference   = per round (one seed: the same data, split and initial centres for every run),
                the lowest final objective of the single worker over --lrs: what one worker
                gets to when its step size is small enough
  within      = the deciding worker's first evaluation with objective <= reference * (1 +
                --tolerance (0.02)); worker 0, or for simu the averaged model at the end
  time_within = wall time from the start of training to it, evaluations included (every
                worker evaluates itself every --eval-every of its steps, as one worker does);
                train_within = the same without the deciding worker's own evaluation time
Each (algo, workers) is then taken at its best step size (median time_within over --rounds;
ties and runs that never get there: by final objective), and its time is compared with the
single worker's at its own best step size. A run that fails (e.g. diverges) is listed with
its error.

Options this driver does not know (e.g. --merge average) are passed to the multi-worker
asgd and asgd-nofilter runs only; --common passes options to every run. Those runs
communicate as `asgd train` does by default (--balance auto) unless given --balance.

    bench/kmeans.py [--build build] [--lrs 0.25,...,6] [--epochs 1] [--eval-every 5]
                    [--rounds 1] [--out bench/results/kmeans.json] [asgd options...]
"""
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import runs  # noqa: E402
import study  # noqa: E402


# What the JSON keeps of the curves: at an evaluation every 5 steps a whole epoch's curves of
# every run come to about 60 MB, most of it after every run has settled. Every run keeps its
# summary and its "within" point; round 0 (the one plotted) keeps its curve, thinned.
CURVE_KEYS = ("worker", "step", "samples", "time_s", "eval_s", "test_loss", "train_loss",
              "messages_received", "messages_accepted", "messages_rejected")
CURVE_DENSE_STEPS = 600  # every evaluation up to here (where most runs come within)
CURVE_THIN = 10          # then every 10th, and each worker's last


def thin_curve(curve):
    """The curve (lists per key, as study.curve makes it) with CURVE_KEYS, every evaluation up
    to CURVE_DENSE_STEPS, then every CURVE_THIN-th and the last of each worker."""
    if not curve:
        return curve
    n = len(curve["step"])
    last = {w: i for i, w in enumerate(curve["worker"])}
    keep, later = [], 0
    for i in range(n):
        dense = curve["step"][i] <= CURVE_DENSE_STEPS
        if not dense:
            later += 1
        if dense or later % CURVE_THIN == 0 or last[curve["worker"][i]] == i:
            keep.append(i)
    return {k: [curve[k][i] for i in keep] for k in CURVE_KEYS if k in curve}


def main():
    ap = study.parser(__doc__, "kmeans")
    ap.add_argument("--dataset", default="blobs:200000,32,64")
    ap.add_argument("--clusters", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--lrs", default="0.25,0.5,1,1.5,2,3,4,6",
                    help="step sizes, comma-separated; the reference of a round is the lowest "
                         "final objective one worker reaches at any of them")
    ap.add_argument("--eval-every", type=int, default=5, help="steps between evaluations")
    # 4000 test rows measure the objective to about 0.4% (its standard error), well inside
    # the 2% tolerance, at a tenth of the evaluation cost of the default 10% split.
    ap.add_argument("--test-fraction", type=float, default=0.02)
    ap.add_argument("--tolerance", type=float, default=0.02,
                    help="'within' means objective <= reference * (1 + tolerance)")
    ap.add_argument("--algos", default=",".join(study.ALGOS),
                    help="algorithms of the multi-worker runs (the 1-worker local run is "
                         "always there)")
    ap.add_argument("--workers", type=int, default=2, help="workers of the multi-worker runs")
    args, extra = study.parse(ap)
    extra = study.balance_auto_unless_given(extra)
    lrs, algos = study.floats(args.lrs), study.algos(args.algos)
    binary = runs.asgd_binary(args.build)

    common = ["--dataset", args.dataset, "--model", "kmeans", "--clusters", args.clusters,
              "--batch", args.batch, "--epochs", args.epochs, "--eval-every", args.eval_every,
              "--test-fraction", args.test_fraction, *args.common]
    groups, configs = study.lr_grid(common, algos, args.workers, lrs, extra)

    def describe(rec):
        return (f"objective {study.summary_value(rec, 'final_objective'):.3f} after "
                f"{study.summary_value(rec, 'train_seconds'):.2f} s")

    results = study.sweep(binary, configs, args, describe)

    # The reference of each round: the single worker's lowest final objective at any lr.
    singles = [c for c in configs if c["workers"] == 1]
    references = []
    for r in range(args.rounds):
        finals = [study.summary_value(results[c["name"]][r], "final_objective") for c in singles]
        finals = [f for f in finals if f is not None]
        references.append(min(finals) if finals else None)

    def within(rec):
        ref = references[rec["round"]]
        if ref is None or "error" in rec:
            return None
        limit = ref * (1 + args.tolerance)
        return study.first_point(rec, lambda m: m.get("test_loss") is not None
                                 and m["test_loss"] <= limit)

    def at_within(key):
        def get(rec):
            p = within(rec)
            return None if p is None else p[key]
        return get

    def train_within(rec):
        p = within(rec)
        return None if p is None else p["time_s"] - p.get("eval_s", 0.0)

    rows = []
    for c in configs:
        recs = results[c["name"]]
        ok = [r for r in recs if "error" not in r]
        finals = [(study.summary_value(r, "final_objective"), references[r["round"]])
                  for r in ok]
        rows.append({
            "name": c["name"], "algo": c["algo"], "workers": c["workers"], "lr": c["lr"],
            "rounds": len(recs), "failed": len(recs) - len(ok),
            "errors": sorted({r["error"] for r in recs if "error" in r}),
            "final_objective": study.median_of(
                recs, lambda r: study.summary_value(r, "final_objective")),
            "final_to_reference": study.median_or_none(
                [f / ref for f, ref in finals if f and ref]),
            "reached": sum(within(r) is not None for r in recs),
            "time_within_s": study.median_or_none([at_within("time_s")(r) for r in recs]),
            "train_within_s": study.median_or_none([train_within(r) for r in recs]),
            "steps_within": study.median_or_none([at_within("step")(r) for r in recs]),
            "samples_within": study.median_or_none([at_within("samples")(r) for r in recs]),
            **{key: study.median_of(recs, lambda r, k=key: study.summary_value(r, k))
               for key in ("train_seconds", "eval_seconds", "steps", "messages_sent",
                           "messages_accepted", "messages_rejected")},
        })

    print(f"# kmeans: {args.dataset}, K={args.clusters}, batch {args.batch}, {args.epochs:g} "
          f"epoch(s), eval every {args.eval_every} steps on a {args.test_fraction:g} split, "
          f"{args.rounds} round(s), medians")
    print("# reference per round = 1 worker's lowest final objective over the step sizes: "
          + ", ".join("-" if r is None else f"{r:.4f}" for r in references)
          + f"; within = objective <= reference * {1 + args.tolerance:g}")
    if extra:
        print(f"# pass-through to the {args.workers}-worker asgd runs: {' '.join(extra)}")
    study.print_table(
        [("algo", 14, ""), ("workers", 7, ""), ("lr", 5, "g"), ("within", 6, ""),
         ("time_within_s", 13, ".4f"), ("train_within_s", 14, ".4f"),
         ("steps_within", 12, ".0f"), ("final/ref", 9, ".4f"), ("wall_s", 7, ".3f"),
         ("eval_s", 7, ".3f"), ("sent", 6, ".0f"), ("accepted", 8, ".0f"),
         ("rejected", 8, ".0f")],
        [[r["algo"], r["workers"], r["lr"],
          f"{r['reached']}/{r['rounds']}" + ("!" if r["failed"] else ""),
          r["time_within_s"], r["train_within_s"], r["steps_within"], r["final_to_reference"],
          r["train_seconds"], r["eval_seconds"], r["messages_sent"], r["messages_accepted"],
          r["messages_rejected"]] for r in rows])
    for r in rows:
        if r["failed"]:
            print(f"# !{r['name']}: {r['failed']}/{r['rounds']} failed: {'; '.join(r['errors'])}")

    best = study.best_per_group(
        rows, groups, "time_within_s",
        lambda r: r["final_to_reference"] if r["final_to_reference"] is not None else math.inf,
        [("time_within_s", "time_ratio_to_single"), ("train_within_s", "train_ratio_to_single"),
         ("steps_within", "steps_ratio_to_single")])
    single = best[0]
    print()
    print("# best lr of each (algo, workers) by time to within; ratios = its value / the best "
          "single worker's (below 1: sooner)")
    study.print_table(
        [("algo", 14, ""), ("workers", 7, ""), ("best_lr", 7, "g"), ("within", 6, ""),
         ("time_within_s", 13, ".4f"), ("ratio", 6, ".3f"), ("train_within_s", 14, ".4f"),
         ("ratio", 6, ".3f"), ("steps_within", 12, ".0f"), ("ratio", 6, ".3f"),
         ("final/ref", 9, ".4f")],
        [[b["algo"], b["workers"], b["lr"], f"{b['reached']}/{b['rounds']}",
          b["time_within_s"], b["time_ratio_to_single"], b["train_within_s"],
          b["train_ratio_to_single"], b["steps_within"], b["steps_ratio_to_single"],
          b["final_to_reference"]] for b in best])

    asgd_best = next((b for b in best if b["algo"] == "asgd" and b["workers"] > 1), None)
    ratio = None if asgd_best is None else asgd_best["time_ratio_to_single"]
    if asgd_best is not None:
        print(f"asgd {asgd_best['workers']} workers (lr {asgd_best['lr']:g}) / 1 worker "
              f"(lr {single['lr']:g}), time to within {100 * args.tolerance:g}% of the "
              "reference: " + (f"{ratio:.3f}" if ratio is not None else "n/a (not reached)"))

    # Round 0 of each algorithm at its best step size, against round 0's threshold.
    threshold0 = None if references[0] is None else references[0] * (1 + args.tolerance)
    plots = study.plot_records(
        [results[b["name"]][0] for b in best],
        [f"{b['algo']}, {b['workers']} worker{'s' * (b['workers'] > 1)}, lr {b['lr']:g}"
         for b in best], args.out, y="objective", logy=True, target=threshold0,
        target_label=f"1 worker's lowest final objective + {100 * args.tolerance:g}% (round 0)",
        title=f"K-Means {args.dataset}, K={args.clusters}, best step size of each (round 0)")
    runs.write_result(args.out, "kmeans", {
        "dataset": args.dataset, "clusters": args.clusters, "batch": args.batch,
        "epochs": args.epochs, "lrs": lrs, "eval_every": args.eval_every,
        "test_fraction": args.test_fraction, "tolerance": args.tolerance,
        "workers": args.workers, "algos": algos, "rounds": args.rounds, "seed": args.seed,
        "asgd_options": extra, "common_options": args.common,
        "reference_objectives": references, "table": rows, "best": best,
        "ratio_asgd_to_single": ratio,
        "plots": [os.path.relpath(p, os.path.dirname(os.path.abspath(args.out)))
                  for p in plots],
        "runs": [stored_run(r, within(r)) for c in configs for r in results[c["name"]]]})


def stored_run(rec, point):
    """The record as it goes into the JSON: its curve only in round 0, thinned, and the
    evaluation at which it came within (None if it did not)."""
    return dict(study.public(rec),
                curve=thin_curve(rec.get("curve")) if rec["round"] == 0 else None,
                within=None if point is None else
                {k: point.get(k) for k in ("step", "samples", "time_s", "eval_s")})


if __name__ == "__main__":
    main()
