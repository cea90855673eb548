"""Seconds per optimizer step of each robust method at its paper's settings (`population.robust_presets.PAPER`) on
Fashion-MNIST, one thread, and the hours `popvae robust --preset paper` would take if every job ran its full epochs.

    nice -n 10 .venv/bin/python -m benchmarks.robust_steps --steps 200 [--precision fp32 bf16]   (from the repository root)

An extrapolation: steps per epoch x epochs x seconds per step, summed over the jobs (seeds included) and divided by
the workers; the plateau stopper ends jobs earlier, and validation scoring and the attacks are not counted.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from popvae.models.dataset_loading import load_split
from popvae.models.registry import build
from popvae.population.methods import method_config
from popvae.population.robust import make_trainer
from popvae.population.robust_converged import PRESETS
from popvae.population.training import train_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="timed optimizer steps per method (after 5 warm-up steps)")
    parser.add_argument("--methods", help="comma-separated (default: every method of the paper preset)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="one or both: with both, each method is timed in each, one after the other")
    args = parser.parse_args()
    torch.set_num_threads(1)
    section = PRESETS["paper"]
    methods = args.methods.split(",") if args.methods else list(section.methods)
    train = load_split("fashion-mnist", "train")
    fit_size = int(len(train) * (1 - section.settings[methods[0]][1].val_fraction))
    results = {}
    for method in methods:
        overrides, schedule = section.settings[method]
        family, config = method_config(method, train.images.shape[1:], overrides)
        for precision in args.precision:
            torch.manual_seed(0)
            model = build(family, config)
            optimizer, _ = make_trainer(model, schedule)
            rng = np.random.default_rng(0)
            train_epoch(model, optimizer, train.images, schedule.batch_size, 5, rng, "cpu", precision=precision)
            started, cpu = time.perf_counter(), time.process_time()
            train_epoch(model, optimizer, train.images, schedule.batch_size, args.steps, rng, "cpu", precision=precision)
            per_step = (time.perf_counter() - started) / args.steps
            steps = schedule.steps_per_epoch or fit_size // schedule.batch_size
            seeds = section.seeds.get(method, 1)
            key = method if len(args.precision) == 1 else f"{method}/{precision}"
            results[key] = {"precision": precision, "seconds_per_step": per_step,
                            "cpu_share": (time.process_time() - cpu) / (per_step * args.steps),
                            "batch_size": schedule.batch_size, "steps_per_epoch": steps, "epochs": schedule.epochs,
                            "seeds": seeds, "job_hours": per_step * steps * schedule.epochs * seeds / 3600}
            print(key, json.dumps(results[key]), flush=True)
    results_by = {p: {k: r for k, r in results.items() if r["precision"] == p} for p in args.precision}
    totals = {p: sum(r["job_hours"] for r in rs.values()) for p, rs in results_by.items()}
    print(json.dumps({"steps": args.steps, "worker_hours": totals, "wall_hours": {p: t / args.workers for p, t in totals.items()},
                      "workers": args.workers, "results": results}, indent=2))


if __name__ == "__main__":
    main()
