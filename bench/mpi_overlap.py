#!/usr/bin/env python3
"""Does communication cost the workers anything? `asgd train` under mpirun with 2 ranks,
`--algo asgd` (states exchanged over the MPI transport, and over the round protocol of the NCCL
transport with MPI payloads: --transport rounds) against `--algo local` (no communication),
same model, data and step count, alternating in the same run; the figure is
the training throughput (samples/s of all ranks, evaluations excluded) of asgd over local.
The issue asks >= 0.95 with a link fast enough to carry the traffic (here: shared memory).

  bench/mpi_overlap.py [--build build] [--ranks 2] [--rounds 3] [--epochs 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import runs  # noqa: E402


def run(binary, ranks, args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "s.json")
        cmd = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks), binary, "train",
               "--no-progress", "--summary", summary, *map(str, args)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
        with open(summary) as f:
            return json.load(f), " ".join(cmd)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(runs.ROOT, "build"))
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--out", default=os.path.join(runs.ROOT, "bench", "results", "mpi_overlap.json"))
    args = ap.parse_args()
    binary = runs.asgd_binary(args.build)
    model = ["--model", "mlp", "--hidden", "256,256", "--batch", "64", "--lr", "0.05",
             "--epochs", args.epochs, "--eval-every", "1000"]
    settings = {
        "local": ["--algo", "local"],
        "asgd (whole state every step)": ["--algo", "asgd", "--balance", "off"],
        "asgd (message 33666, every step)": ["--algo", "asgd", "--message-size", "33666",
                                             "--balance", "off"],
        # What `asgd train` does without communication settings: the load balancer sizes the
        # messages from the probed link and the measured compute share (0.02).
        "asgd (defaults: --balance auto)": ["--algo", "asgd"],
        # The NCCL transport's round protocol with payloads over MPI (what --transport nccl
        # runs on GPUs): every transfer waits for a round that every rank joins.
        "rounds (whole state every step)": ["--algo", "asgd", "--balance", "off",
                                            "--transport", "rounds"],
        "rounds (defaults: --balance auto)": ["--algo", "asgd", "--transport", "rounds"],
    }
    samples = {name: [] for name in settings}
    commands = {}
    for r in range(args.rounds):
        for name, extra in settings.items():
            s, cmd = run(binary, args.ranks, model + extra)
            samples[name].append(s["samples_per_s"])
            commands[name] = cmd
            print(f"round {r + 1} {name:34s} {s['samples_per_s']:10.0f} samples/s "
                  f"(messages sent {s['messages_sent']}, accepted {s['messages_accepted']})", flush=True)
    local = runs.median(samples["local"])
    rows = []
    print(f"\n{'setting':34s} {'samples/s':>10s} {'vs local':>9s}")
    for name in settings:
        m = runs.median(samples[name])
        rows.append({"setting": name, "samples_per_s_median": m, "samples_per_s": samples[name],
                     "ratio_to_local": m / local, "command": commands[name]})
        print(f"{name:34s} {m:10.0f} {m / local:9.3f}")
    runs.write_result(args.out, "mpi_overlap", {"ranks": args.ranks, "rows": rows,
                                                "peer": "--algo local in the same run"})


if __name__ == "__main__":
    main()
