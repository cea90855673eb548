"""Test MSE of every robust-autoencoder method after the same short budget on Fashion-MNIST (one process, one thread).

    .venv/bin/python -m benchmarks.robust_table --epochs 2 --steps 50 --batch-size 128 --seed 0   (from the repository root)

Each method runs `population.robust.train_job` in turn (no Ray) into --out (a temp folder by default)
and is scored on the full 10,000-image test set: per-pixel MSE on [0,1] pixels. Prints the metrics
as JSON, then a markdown table. A short budget ranks how fast methods learn, not where they end up.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from popvae.models.dataset_loading import load_split
from popvae.population.robust import METHODS, parse_methods, train_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50, help="optimizer steps per epoch")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="job folders go here (default: a temp folder)")
    args = parser.parse_args()
    methods = parse_methods(args.methods)
    torch.set_num_threads(1)
    train, test = load_split("fashion-mnist", "train"), load_split("fashion-mnist", "test")
    out = args.out or Path(tempfile.mkdtemp(prefix="robust_table_"))
    results = {}
    for method in methods:
        metrics = train_job(method, train, test, out / method, args.epochs, args.batch_size, args.steps, args.seed, "cpu")
        results[method] = {key: metrics[key] for key in ("test_mse", "total", "train_seconds")}
    budget = {"epochs": args.epochs, "steps_per_epoch": args.steps, "batch_size": args.batch_size, "seed": args.seed}
    print(json.dumps({"budget": budget, "out": str(out), "results": results}, indent=2))
    print("\n| method | test MSE | final train loss | train s |\n|---|---:|---:|---:|")
    for method, r in results.items():
        print(f"| {method} | {r['test_mse']:.4f} | {r['total']:.1f} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
