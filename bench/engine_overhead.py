#!/usr/bin/env python3
"""What the engine costs: samples/s of 1 and 2 workers without communication (local), and of
2 workers running asgd, in one run on the same machine.

asgd runs with `asgd train`'s defaults (the load balancer, --balance auto) plus any asgd options
given here; a fourth configuration sends the whole state every step (--balance off), the most
communication there is, for reference.

Each configuration trains the default MLP on Fashion-MNIST for a fixed number of epochs with
evaluation only at the end, and reports samples/s over all workers (evaluation excluded).
The configurations alternate for --rounds rounds so that machine noise hits all of them; the
table shows medians and the ratios the engine is judged by:
  scaling  = local 2 workers / local 1 worker   (ideal: 2 on a machine with 2 free cores)
  overhead = asgd 2 workers / local 2 workers   (1.0: communication and filter cost nothing)

    bench/engine_overhead.py [--build build] [--rounds 5] [--epochs 3] [asgd options...]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import runs  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(runs.ROOT, "build"))
    ap.add_argument("--rounds", type=int, default=5)
    # Long enough that the start-up (the balancer's slow start) is a small part of each run.
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--out", default=os.path.join(runs.ROOT, "bench", "results",
                                                  "engine_overhead.json"))
    args, asgd_extra = ap.parse_known_args()
    binary = runs.asgd_binary(args.build)
    common = ["--epochs", args.epochs, "--eval-every", 10**9, "--threads", 1]
    # runs.train() fixes the communication (--balance off) unless told otherwise: asgd_2 gets
    # `asgd train`'s own default.
    defaults = [] if "--balance" in asgd_extra else ["--balance", "auto"]
    configs = {
        "local_1": ["--workers", 1, "--algo", "local"],
        "local_2": ["--workers", 2, "--algo", "local"],
        "asgd_2": ["--workers", 2, "--algo", "asgd", *defaults, *asgd_extra],
        "asgd_2_whole_state": ["--workers", 2, "--algo", "asgd", "--balance", "off"],
    }
    rates = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, cfg in configs.items():
            rates[name].append(runs.train(binary, common + cfg)["samples_per_s"])
    med = {name: runs.median(v) for name, v in rates.items()}
    scaling = med["local_2"] / med["local_1"]
    overhead = med["asgd_2"] / med["local_2"]
    whole_state = med["asgd_2_whole_state"] / med["local_2"]
    paired = [a / b for a, b in zip(rates["asgd_2"], rates["local_2"])]
    print(f"{'configuration':>18} {'samples/s (median)':>19}")
    for name in configs:
        print(f"{name:>18} {med[name]:>19.0f}")
    print(f"scaling  local 2 / local 1 = {scaling:.3f}")
    print(f"overhead asgd 2 / local 2  = {overhead:.3f} (each round: "
          f"{', '.join(f'{p:.3f}' for p in paired)})")
    print(f"whole state every step / local 2 = {whole_state:.3f}")
    runs.write_result(args.out, "engine_overhead", {
        "asgd_options": defaults + asgd_extra, "epochs": args.epochs, "rounds": args.rounds,
        "samples_per_s": rates, "median": med, "scaling": scaling, "overhead": overhead,
        "overhead_each_round": paired, "whole_state_overhead": whole_state})


if __name__ == "__main__":
    main()
