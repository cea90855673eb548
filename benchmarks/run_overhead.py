"""Where a short run's seconds go: the fixed cost of one population run, which dominates tiny runs (the test suite,
the smoke reproduction) and the first generation of every run.

Trains --runs tiny populations one after another on one local Ray (synthetic data, 3 members in one pack, 3
generations of 4 steps at batch 16: seconds of training) and reports, per run, its wall time from `run_population`
to its summary, and from each generation's lineage entry the seconds it spent training, coordinating (deciding,
broadcasting, gathering the checkpoint's state: the first generation's used to include the coordinator's import of
torch) and writing its checkpoint. The first run also pays for the driver's own imports; medians are over the rest.

    .venv/bin/python -m benchmarks.run_overhead --runs 4 --out benchmarks/results/run-overhead-cpu.json
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ray

from benchmarks.common import emit, spread
from popvae.population.config import parse_config
from popvae.population.driver import load_run_data, run_population
from popvae.population.run_folder import RunFolder

TINY = {"dataset": "synthetic", "synthetic_size": 256, "members": 3, "epochs": 3, "batch_size": 16,
        "steps_per_epoch": 4, "seed": 3, "pack_size": 4,
        "model": {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = parse_config(TINY)
    data = load_run_data(cfg)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.runs):
            started = time.perf_counter()
            run_population(cfg, Path(tmp) / f"run-{k}", data)
            wall = time.perf_counter() - started
            lineage = RunFolder(Path(tmp) / f"run-{k}").read_lineage()
            runs.append({"wall_s": wall, "generations": [g.seconds for g in lineage]})
    ray.shutdown()
    later = runs[1:] or runs
    first_gen = {part: [r["generations"][0].get(part, 0.0) for r in later] for part in ("train", "coordination",
                                                                                         "checkpoint")}
    other_gens = {part: [g.get(part, 0.0) for r in later for g in r["generations"][1:]]
                  for part in ("train", "coordination", "checkpoint")}
    emit({
        "benchmark": "run_overhead", "device": "cpu", "cpus": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "config": TINY, "runs": runs,
        "run_wall_s": spread([r["wall_s"] for r in later]),
        "first_generation_s": {part: spread(v) for part, v in first_gen.items()},
        "later_generations_s": {part: spread(v) for part, v in other_gens.items()},
    }, args.out)


if __name__ == "__main__":
    main()
