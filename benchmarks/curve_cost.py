"""What the learning curve costs a generation: a default pack's `learning_curve` (each member's validation-subset MSE,
relaxed and hard codes, `curve_subset` images) against its validation pass (select_on val, `val_size` images) and
against one training step of the pack, same default GS-VAE and Fashion-MNIST-sized images, no Ray.

A generation of a default run trains a full pass (843 steps of 64 per member), so the curve's share of it is the
curve's seconds over 843 steps' seconds. From the repository root:
    .venv/bin/python -m benchmarks.curve_cost --out benchmarks/results/curve-cost-cpu.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from benchmarks.common import emit, spread
from popvae.models.dataset_loading import synthetic
from popvae.population.config import RunConfig
from popvae.population.pack import PackState

DEFAULT_STEPS = 54000 // 64  # a default run's steps per generation: one pass over the 54,000 training images


def one_repeat(k: int, steps: int, threads: int) -> dict[str, float]:
    cfg = RunConfig.model_validate({"dataset": "fashion-mnist", "members": k, "steps_per_epoch": steps, "device": "cpu"})
    images = synthetic(2048, seed=0).images  # the default model's shapes; the curve's cost does not depend on pixels
    val = synthetic(cfg.val_size or 2000, seed=1).images
    pack = PackState(list(range(1, k + 1)), cfg, images, val, threads)
    torch.set_num_threads(threads)
    taus, alive = [1.0] * k, [True] * k
    pack.train_epoch(0, dict(zip(range(1, k + 1), taus)))  # warm-up (training, validation, curve)
    started = time.perf_counter()
    pack.learning_curve(taus, alive)
    curve = time.perf_counter() - started
    started = time.perf_counter()
    pack._validate([torch.Generator().manual_seed(i) for i in range(k)], taus, alive)
    validate = time.perf_counter() - started
    cfg_train = cfg.model_copy(update={"select_on": "train", "curve_subset": 1})
    pack.config = cfg_train
    started = time.perf_counter()
    pack.train_epoch(1, dict(zip(range(1, k + 1), taus)))
    step = (time.perf_counter() - started) / steps
    return {"curve_s": curve, "validate_s": validate, "train_step_s": step,
            "curve_share_of_default_generation": curve / (curve + validate + step * DEFAULT_STEPS)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="training steps timed for the per-step cost")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    runs = [one_repeat(args.members, args.steps, args.threads) for _ in range(args.repeats)]
    emit({"what": "learning-curve cost per generation (default GS-VAE, vmap pack, CPU)", "members": args.members,
          "curve_subset": 1000, "threads": args.threads, "torch": torch.__version__,
          **{k: spread([r[k] for r in runs]) for k in runs[0]}}, args.out)


if __name__ == "__main__":
    main()
