"""Where a packed generation's time goes on this machine: one vmapped training step of k members (PackState)
against k sequential single-member steps (the reference code's loop), same default GS-VAE, batch 64, no Ray.

Each repeat times `--steps` steps of both after a warm-up; the ratio is within the repeat. From the repository root:
    .venv/bin/python -m benchmarks.pack_step --out benchmarks/results/pack-step-cpu.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import emit, spread
from popvae.models.dataset_loading import synthetic, to_float
from popvae.models.registry import build
from popvae.population.config import RunConfig
from popvae.population.pack import PackState
from popvae.population.training import train_step


def one_repeat(k: int, steps: int, threads: int) -> dict[str, float]:
    cfg = RunConfig.model_validate({"dataset": "synthetic", "members": k, "batch_size": 64, "steps_per_epoch": steps,
                                    "device": "cpu", "select_on": "train"})
    images = synthetic(2048, seed=0).images
    pack = PackState(list(range(1, k + 1)), cfg, images, images[:64], threads)
    torch.set_num_threads(threads)
    taus = {i: 1.0 for i in range(1, k + 1)}
    pack.train_epoch(0, taus)  # warm-up
    started = time.perf_counter()
    pack.train_epoch(1, taus)
    packed = (time.perf_counter() - started) / steps
    models = [build("gsvae", cfg.model) for _ in range(k)]
    optimizers = [m.make_optimizer() for m in models]
    rng = np.random.default_rng(0)

    def sequential_step() -> None:
        for model, optimizer in zip(models, optimizers):
            train_step(model, optimizer, to_float(images[np.sort(rng.choice(len(images), 64, replace=False))]))

    sequential_step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        sequential_step()
    sequential = (time.perf_counter() - started) / steps
    return {"packed_step_s": packed, "sequential_steps_s": sequential, "sequential_over_packed": sequential / packed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result: dict = {"benchmark": "pack_step", "members": args.members, "batch_size": 64, "steps": args.steps,
                    "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "device": "cpu",
                                "load_average_before": os.getloadavg()}, "threads": {}}
    for threads in args.threads:
        runs = [one_repeat(args.members, args.steps, threads) for _ in range(args.repeats)]
        result["threads"][str(threads)] = {key: spread([r[key] for r in runs]) for key in runs[0]}
    result["machine"]["load_average_after"] = os.getloadavg()
    emit(result, args.out)


if __name__ == "__main__":
    main()
