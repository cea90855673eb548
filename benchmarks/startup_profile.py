"""Where `popvae train`'s start-up goes: each phase from a fresh process to the first training step, as JSON.

    .venv/bin/python -m benchmarks.startup_profile --members 8 --repeats 3     (from the repository root)

Runs `popvae train` in a fresh interpreter per repeat (8 members on Fashion-MNIST, packed, 1 step) with every phase
timed on the driver: the imports of torch and Ray, loading and splitting the dataset, taking the run lock, ray.init,
putting the data into the object store, and the wait until the coordinator and its packs are built (their processes
start, import torch and popvae, and stack the members). The first training step follows that wait at once.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import emit, spread

# Runs inside the fresh interpreter: wraps the phases' functions with timers, then runs `popvae train`.
_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
marks = {}
import torch, ray  # noqa: E401
marks["import torch and ray"] = time.perf_counter() - t0
from popvae.population import driver

def timed(module, name, label):
    inner = getattr(module, name)
    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return inner(*a, **k)
        finally:
            marks[label] = marks.get(label, 0.0) + time.perf_counter() - start
    setattr(module, name, wrapper)

timed(driver, "load_run_data", "load and split the dataset")
timed(driver, "ensure_ray", "ray.init")
timed(ray, "put", "ray.put of the data")
timed(driver, "_start_coordinator", "create the coordinator actor (asynchronous)")
first = {}
get = ray.get
def first_get(ref, *a, **k):  # the first ray.get of the run waits for the coordinator and its packs to be built
    start = time.perf_counter()
    out = get(ref, *a, **k)
    if "coordinator and packs built (wait)" not in marks:
        marks["coordinator and packs built (wait)"] = time.perf_counter() - start
        marks["to the first training step"] = time.perf_counter() - t0
    return out
ray.get = first_get
from popvae.cluster.cli import main
code = main(sys.argv[1:])
marks["total, to exit"] = time.perf_counter() - t0
print("MARKS " + json.dumps(marks))
sys.exit(code)
"""


def one(members: int, dataset: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        args = ["train", "--dataset", dataset, "--members", str(members), "--epochs", "1", "--steps-per-epoch", "1",
                "--batch-size", "64", "--select-on", "train", "--device", "cpu", "--run-dir", f"{tmp}/run", "--quiet"]
        out = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        line = next(ln for ln in out.stdout.splitlines() if ln.startswith("MARKS "))
        return json.loads(line.removeprefix("MARKS "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    runs = [one(args.members, args.dataset) for _ in range(args.repeats)]
    phases = {name: spread([r[name] for r in runs]) for name in runs[0]}
    emit({"benchmark": "startup_profile", "machine": {"cpus": os.cpu_count(), "platform": platform.machine(),
                                                      "load_average_before": load_before},
          "members": args.members, "dataset": args.dataset, "repeats": args.repeats, "phases_s": phases}, args.out)


if __name__ == "__main__":
    main()
