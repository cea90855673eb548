"""Does an attack lose strength when its gradients are taken under bf16? The attack layer stays fp32 by default; this
measures why that is (or is not) needed.

A default GS-VAE is trained briefly on Fashion-MNIST (fp32, --train-steps batches of 64, seed 0); then L-inf PGD
(`attacks.pgd.pgd`, eps --eps, --pgd-steps steps, the default step rule) maximises each test image's reconstruction
error ||D(E(x_adv)) - x||^2 (deterministic reconstructions), its gradients taken once in fp32 and once under bf16
autocast. Both sets of x_adv are scored in fp32: the mean per-pixel MSE of their reconstructions against the clean
images (the damage) and the share of images whose damage is at least twice their clean error (the success rate).

Prints JSON and writes it with --out. From the repository root:
    .venv/bin/python -m benchmarks.attack_precision --out benchmarks/results/attack-precision-cpu.json
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import emit
from popvae.attacks.pgd import STEP_RULE, pgd
from popvae.models.dataset_loading import load_split, to_float
from popvae.models.registry import build
from popvae.population.config import RunConfig
from popvae.population.training import autocast, batch_indices, eval_mode, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-steps", type=int, default=150)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--pgd-steps", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_before = os.getloadavg()
    dataset = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").exists() else "synthetic"
    train, test = load_split(dataset, "train").images, load_split(dataset, "test").images
    torch.manual_seed(0)
    model = build("gsvae", RunConfig.model_validate({"dataset": dataset, "device": "cpu"}).model)
    optimizer = model.make_optimizer()
    started = time.perf_counter()
    for idx in batch_indices(len(train), 64, args.train_steps, np.random.default_rng(0)):
        train_step(model, optimizer, to_float(train[idx]))
    trained_s = time.perf_counter() - started
    x = to_float(test[: args.images])
    result = {"benchmark": "attack_precision", "dataset": dataset, "train_steps": args.train_steps,
              "train_seconds": trained_s, "images": len(x), "attack": f"L-inf PGD, eps {args.eps}, {args.pgd_steps} "
              f"steps, step {STEP_RULE}, random start, maximising ||D(E(x_adv)) - x||^2", "load_average": load_before}
    with eval_mode(model), torch.no_grad():
        clean = (model.reconstruct(x) - x).pow(2).flatten(1).mean(1)
    result["clean_mse"] = float(clean.mean())
    for precision in ("fp32", "bf16"):
        with eval_mode(model):
            def damage(x_adv: torch.Tensor, precision: str = precision) -> torch.Tensor:
                with autocast(precision, x.device):
                    return (model.reconstruct(x_adv) - x).pow(2).flatten(1).sum(1)

            x_adv = pgd(damage, x, args.eps, args.pgd_steps, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                hit = (model.reconstruct(x_adv) - x).pow(2).flatten(1).mean(1)  # scored in fp32
        result[f"gradients_{precision}"] = {"adversarial_mse": float(hit.mean()),
                                            "success_rate_2x_clean": float((hit >= 2 * clean).float().mean())}
    result["bf16_over_fp32_damage"] = (result["gradients_bf16"]["adversarial_mse"]
                                       / result["gradients_fp32"]["adversarial_mse"])
    emit(result, args.out)


if __name__ == "__main__":
    main()
