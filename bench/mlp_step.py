#!/usr/bin/python3
"""asgd against PyTorch on one MLP training step: host backend, one thread each, or one GPU.

Both sides do the same work per step: gather a mini-batch from a resident 60000 x 784
training set by a per-epoch permutation, forward, softmax cross-entropy, backward, SGD
update. PyTorch runs in this process (Debian's python3-torch, OpenBLAS); asgd runs as
build/bin/asgd_bench_mlp_step. The two alternate for several rounds so that machine noise
hits both; each reports the median samples/s of its repeats, and the table shows the median
over rounds and the ratio asgd / PyTorch.

With --device cuda both run on GPU 0 (asgd's CUDA backend with cuBLAS, PyTorch's CUDA
build; FP32 throughout, TF32 off on both), the training set resident on the GPU, and each
timed repeat ends with a device synchronisation. Larger shapes are added there.

    bench/mlp_step.py [--build build] [--rounds 3] [--device cpu|cuda]
                      [--out bench/results/mlp_step.json | mlp_step_cuda.json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import runs  # noqa: E402

# One thread for OpenBLAS and OpenMP in this process and in asgd's (set before torch loads).
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

SHAPES = [  # (hidden widths, batch, timed steps per repeat)
    ((256, 256), 64, 300),
    ((1024, 1024), 128, 60),
]
CUDA_SHAPES = SHAPES + [
    ((4096, 4096), 512, 100),
]
ROWS, INPUT, CLASSES, WARMUP, REPEATS = 60000, 784, 10, 50, 5


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def torch_samples_per_s(hidden, batch, steps, device):
    torch.manual_seed(1)
    layers, width = [], INPUT
    for h in hidden:
        layers += [torch.nn.Linear(width, h), torch.nn.ReLU()]
        width = h
    layers.append(torch.nn.Linear(width, CLASSES))
    model = torch.nn.Sequential(*layers).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x_all = torch.rand(ROWS, INPUT, device=device)
    y_all = torch.randint(0, CLASSES, (ROWS,), device=device)
    state = {"perm": torch.randperm(ROWS, device=device), "pos": 0}

    def step():
        if state["pos"] + batch > ROWS:
            state["perm"], state["pos"] = torch.randperm(ROWS, device=device), 0
        idx = state["perm"][state["pos"]:state["pos"] + batch]
        state["pos"] += batch
        x, y = x_all[idx], y_all[idx]
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    for _ in range(WARMUP):
        step()
    sync(device)
    rates = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        rates.append(steps * batch / (time.perf_counter() - t0))
    return statistics.median(rates)


def asgd_samples_per_s(binary, hidden, batch, steps, device):
    out = subprocess.run(
        [binary, "--hidden", ",".join(map(str, hidden)), "--batch", str(batch),
         "--steps", str(steps), "--warmup", str(WARMUP), "--repeats", str(REPEATS),
         "--threads", "1", "--backend", "cuda" if device == "cuda" else "host"],
        check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["samples_per_s"]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(root, "build"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args()
    name = "mlp_step_cuda.json" if args.device == "cuda" else "mlp_step.json"
    args.out = args.out or os.path.join(here, "results", name)
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("--device cuda: PyTorch sees no GPU")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    binary = os.path.join(args.build, "bin", "asgd_bench_mlp_step")
    if not os.path.exists(binary):
        sys.exit(f"{binary} not found: build first (scripts/build.sh)")
    torch.set_num_threads(1)

    rows = []
    print(f"{'model':>22} {'batch':>5} {'asgd samples/s':>15} {'torch samples/s':>16} {'ratio':>6}")
    for hidden, batch, steps in (CUDA_SHAPES if args.device == "cuda" else SHAPES):
        a, t = [], []
        for _ in range(args.rounds):
            a.append(asgd_samples_per_s(binary, hidden, batch, steps, args.device))
            t.append(torch_samples_per_s(hidden, batch, steps, args.device))
        ma, mt = statistics.median(a), statistics.median(t)
        name = "mlp " + "-".join(map(str, (INPUT, *hidden, CLASSES)))
        print(f"{name:>22} {batch:>5} {ma:>15.0f} {mt:>16.0f} {ma / mt:>6.2f}")
        rows.append({"model": name, "batch": batch, "asgd_samples_per_s": ma,
                     "torch_samples_per_s": mt, "ratio": ma / mt,
                     "asgd_rounds": a, "torch_rounds": t})
    machine = runs.machine()
    machine["torch"] = torch.__version__
    if args.device == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(0)
    runs.write_result(args.out, "mlp_step", {"threads": 1, "device": args.device,
                                             "peer": "pytorch", "results": rows,
                                             "machine": machine})


if __name__ == "__main__":
    main()
