#!/usr/bin/python3
"""asgd's CUDA backend against PyTorch on the same GPU: time to 85% on Fashion-MNIST.

MLP 784-256-256-10, batch 64, plain SGD, FP32 (TF32 off on both sides), test accuracy
evaluated every --eval-every steps on both sides (evaluation time counted).

asgd: `BUILD/bin/asgd train --backend cuda --workers W --model mlp --hidden 256,256 --batch 64
--lr LR --target-accuracy 0.85 --eval-every E --dataset idx:DIR`, for W in --workers (1, 2:
two workers sharing the GPU, each with its own streams, exchanging states through the local
transport); its time is the summary's `time_to_target_s` (from the start of training, after
loading the data and building the model, to worker 0's first evaluation at or above the
target).

PyTorch: the python3 running this script, with a CUDA build of torch; nn.Sequential of
Linear/ReLU with PyTorch's default initialisation, SGD without momentum, mean softmax
cross-entropy, the training set resident on the GPU, a per-epoch random permutation, batches
gathered by index on the GPU; the data normalised as asgd does by default for IDX files
(divided by the largest training value). Timed like asgd: from a synchronised start after
loading the data and building the model to the end of the first evaluation at or above the
target.

For each step size of --lrs each configuration runs --repeats times, alternating; the table
shows medians (a run that missed the target counts as infinitely slow), then each system at
its best step size and the ratio PyTorch time / asgd time (above 1: asgd is faster).

    bench/gpu_train.py [--build build] [--data DIR] [--lrs 0.05,0.1,0.2,0.4] [--repeats 3]
                       [--workers 1,2] [--eval-every 500] [--max-seconds 60]
                       [--out bench/results/gpu_train.json]
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import runs  # noqa: E402
from fashion_mnist import fashion_mnist_dir, load_fashion_mnist  # noqa: E402

BATCH, HIDDEN, TARGET = 64, (256, 256), 0.85


def torch_run(data, lr, seed, args):
    """One PyTorch run on GPU 0: seconds to the target (None if missed) and the steps taken."""
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    layers, width = [], xtr.shape[1]
    for h in HIDDEN:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, 10))
    model = torch.nn.Sequential(*layers).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.0)
    gen = torch.Generator(device="cuda").manual_seed(seed + 1)
    rows = xtr.shape[0]
    torch.cuda.synchronize()
    start = time.perf_counter()
    perm, pos, step = None, rows, 0
    while True:
        if pos + BATCH > rows:
            perm, pos = torch.randperm(rows, device="cuda", generator=gen), 0
        idx = perm[pos:pos + BATCH]
        pos += BATCH
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        step += 1
        if step % args.eval_every == 0:
            with torch.no_grad():
                acc = (model(xte).argmax(1) == yte).float().mean().item()  # synchronises
            elapsed = time.perf_counter() - start
            if acc >= TARGET:
                return elapsed, step
            if not math.isfinite(loss.item()) or elapsed > args.max_seconds:
                return None, step


def asgd_run(binary, lr, seed, workers, args):
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "summary.json")
        cmd = [binary, "train", "--backend", "cuda", "--workers", str(workers), "--model", "mlp",
               "--hidden", ",".join(map(str, HIDDEN)), "--batch", str(BATCH), "--lr", str(lr),
               "--seed", str(seed), "--target-accuracy", str(TARGET), "--eval-every",
               str(args.eval_every), "--max-seconds", str(args.max_seconds), "--dataset",
               f"idx:{args.data}", "--summary", summary]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        with open(summary) as f:
            s = json.load(f)
    return s.get("time_to_target_s"), s.get("steps")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(os.path.dirname(HERE), "build"))
    ap.add_argument("--data", default=fashion_mnist_dir())
    ap.add_argument("--lrs", default="0.05,0.1,0.2,0.4")
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--max-seconds", type=float, default=60.0)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "gpu_train.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("PyTorch sees no GPU: this comparison needs one")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    binary = runs.asgd_binary(args.build)
    lrs = [float(x) for x in args.lrs.split(",")]
    workers = [int(x) for x in args.workers.split(",")]
    data = tuple(torch.from_numpy(a).cuda() for a in load_fashion_mnist(args.data)[:4])

    configs = [("pytorch", None)] + [(f"asgd {w} worker{'s' if w > 1 else ''}", w)
                                     for w in workers]
    rows = []
    for lr in lrs:
        times = {name: [] for name, _ in configs}
        steps = {name: [] for name, _ in configs}
        for r in range(args.repeats):
            for name, w in configs:
                t, n = (torch_run(data, lr, 1 + r, args) if w is None
                        else asgd_run(binary, lr, 1 + r, w, args))
                times[name].append(t)
                steps[name].append(n)
        for name, _ in configs:
            ts = [math.inf if t is None else t for t in times[name]]
            rows.append({"system": name, "lr": lr, "seconds": times[name], "steps": steps[name],
                         "median_s": statistics.median(ts)})
            print(f"{name:>16} lr {lr:<5} median {statistics.median(ts):8.3f} s  runs "
                  + " ".join("missed" if t is None else f"{t:.3f}" for t in times[name]),
                  flush=True)

    best = {}
    for row in rows:
        if row["system"] not in best or row["median_s"] < best[row["system"]]["median_s"]:
            best[row["system"]] = row
    print(f"\n{'system':>16} {'best lr':>8} {'time to 85% (s)':>16} {'pytorch / it':>13}")
    ref = best["pytorch"]["median_s"]
    summary = []
    for name, _ in configs:
        b = best[name]
        ratio = ref / b["median_s"] if b["median_s"] > 0 else math.nan
        print(f"{name:>16} {b['lr']:>8} {b['median_s']:>16.3f} {ratio:>13.2f}")
        summary.append({"system": name, "best_lr": b["lr"], "median_s": b["median_s"],
                        "pytorch_over_this": ratio})
    machine = runs.machine()
    machine["gpu"] = torch.cuda.get_device_name(0)
    machine["torch"] = torch.__version__
    runs.write_result(args.out, "gpu_train", {
        "peer": "pytorch (CUDA, same GPU, same process as this script)", "target": TARGET,
        "batch": BATCH, "hidden": HIDDEN, "eval_every": args.eval_every,
        "repeats": args.repeats, "results": rows, "best": summary, "machine": machine})


if __name__ == "__main__":
    main()
