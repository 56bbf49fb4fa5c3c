"""Helpers shared by the benchmark drivers: run `asgd train`, read its summary, describe the
machine and the commit, and write result files."""
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def asgd_binary(build):
    path = os.path.join(build, "bin", "asgd")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: build first (scripts/build.sh)")
    return path


class RunFailed(RuntimeError):
    """`asgd train` exited non-zero. `diverged` tells a run that diverged (an outcome a
    study records: a step size too large) from one that could not run at all (bad options, a
    missing device or file), which must stop the study."""

    def __init__(self, cmd, code, stderr):
        lines = [l.strip() for l in stderr.splitlines() if l.strip()]
        errors = [l for l in lines if "error" in l.lower()]
        self.reason = errors[0] if errors else (lines[-1] if lines else f"exit code {code}")
        self.diverged = "training diverged" in stderr
        super().__init__(f"{' '.join(cmd)} failed (exit code {code}):\n{stderr}")


# The commits the measured binaries report in their summaries: the JSON names them beside the
# source tree's, since a stale build measures other code than the tree holds.
_BINARY_COMMITS = set()


def note_binary_commit(value):
    if value:
        _BINARY_COMMITS.add(value)


def train(binary, args, metrics=False):
    """Runs `asgd train ARGS`; returns its summary (and the metrics lines when asked).
    Without --balance in ARGS the run keeps fixed communication settings (--balance off): the
    studies written before the load balancer measure fixed settings; bench/comm_study.py
    passes --balance itself."""
    args = [str(a) for a in args]
    if "--balance" not in [a.split("=", 1)[0] for a in args]:
        args += ["--balance", "off"]
    with tempfile.TemporaryDirectory() as tmp:
        summary = os.path.join(tmp, "summary.json")
        cmd = [binary, "train", "--no-progress", "--summary", summary, *map(str, args)]
        if metrics:
            cmd += ["--metrics", os.path.join(tmp, "metrics.jsonl")]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            raise RunFailed(cmd, run.returncode, run.stderr)
        with open(summary) as f:
            result = json.load(f)
        note_binary_commit(result.get("commit"))
        if metrics:
            with open(os.path.join(tmp, "metrics.jsonl")) as f:
                result["metrics"] = [json.loads(line) for line in f]
        return result


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "python": platform.python_version()}


def _read_commit():
    if os.environ.get("ASGD_GIT_COMMIT"):  # a copy of the tree without .git names its commit
        return os.environ["ASGD_GIT_COMMIT"]
    out = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    # Results written by earlier benchmarks do not change what is measured.
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                            "--", ".", ":(exclude)bench/results"],
                           capture_output=True, text=True).stdout.strip()
    return (out or "unknown") + ("-dirty" if dirty else "")


# Read when the benchmark starts: by the time it writes its results it has rewritten tracked
# files (its earlier JSON and PNGs), and the tree would always read as dirty.
_COMMIT_AT_START = _read_commit()


def commit():
    return _COMMIT_AT_START


def write_result(path, benchmark, payload):
    doc = {"benchmark": benchmark, "commit": commit(), "machine": machine(),
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **payload}
    if _BINARY_COMMITS:
        doc["binary_commits"] = sorted(_BINARY_COMMITS)
        if _BINARY_COMMITS != {commit()}:
            print(f"warning: the binaries measured report {', '.join(sorted(_BINARY_COMMITS))}, "
                  f"the source tree is at {commit()}: rebuild to measure the tree",
                  file=sys.stderr)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"wrote {path}")


def median(values):
    return statistics.median(values) if values else float("nan")
