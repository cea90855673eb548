"""Robust-autoencoder jobs: one named method trained into one folder, with no Ray (the worker actors call `train_job`).

A method is a model family plus config overrides (`METHODS`). The loop is the same for all of them;
the two adversarial schemes enter through model hooks, because crafting needs attacks/, which
models/ may not import: a model with `adversarial_objective` (Robust GMM-DAE) trains on a batch
crafted here in input space, and a model whose config sets `latent_adv` (Lu & Chen Algorithm 1)
gets M latent PGD attacks and decoder-only updates after each regular step.

    JOB_DIR/config.json  JOB_DIR/status.json  JOB_DIR/history.parquet  JOB_DIR/model.pt  JOB_DIR/reconstructions.png
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from torch import Tensor, nn
from torchvision.utils import save_image

from attacks.pgd import fgsm, pgd
from models.checkpoint import save_model
from models.data import ImageSet, to_float
from models.registry import build, families
from population.rundir import now_iso, read_json, write_json, write_rows

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "gmm-dae": ("gmm-dae", {}),
    "gmm-dae-unimodal": ("gmm-dae", {"modes": 1}),
    "robust-gmm-dae": ("robust-gmm-dae", {}),
    "raven": ("raven", {}),
    "vae-kl": ("vae", {"regulariser": "kl"}),
    "vae-mmd": ("vae", {"regulariser": "mmd"}),
    "vae-swt": ("vae", {"regulariser": "swt"}),
    "dae-mmd": ("dae", {"regulariser": "mmd"}),
    "dae-swt": ("dae", {"regulariser": "swt"}),
    "vae-tc": ("vae", {"regulariser": "kl", "tc": True}),
    "vae-kl-lat": ("vae", {"regulariser": "kl", "latent_adv": True}),
    "dae-mmd-lat": ("dae", {"regulariser": "mmd", "latent_adv": True}),
}

# PGD's usual step rule: enough to cross the ball 2.5 times over the steps.
_PGD_STEP_FACTOR = 2.5


def parse_methods(csv: str) -> list[str]:
    """Comma-separated method names, in order, without repeats; ValueError naming any unknown one."""
    names = list(dict.fromkeys(name.strip() for name in csv.split(",") if name.strip()))
    if not names:
        raise ValueError(f"no method given; choose from: {', '.join(METHODS)}")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(METHODS)}")
    return names


def method_config(method: str, image_shape: tuple[int, ...],
                  overrides: dict[str, Any] | None = None) -> tuple[str, BaseModel]:
    """(family, validated config) for `method` on (C, H, W) images: raises (pydantic's ValidationError) before any training."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    family, base = METHODS[method]
    config_cls = families()[family][0]
    shape = {"in_channels": image_shape[0], "image_size": image_shape[1]}
    return family, config_cls.model_validate({**shape, **base, **(overrides or {})})


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Attacks run against the model in eval mode (BatchNorm statistics frozen); training mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def craft_adversarial(model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The Robust GMM-DAE's x_adv: FGSM with random start (or PGD) in L-inf maximising ||E(x+d) - E(x)||^2."""
    c = model.config
    with _eval_mode(model):
        objective = model.adversarial_objective(x)
        if c.craft == "fgsm":
            return fgsm(objective, x, c.eps, random_start=True, step_size=c.step_scale * c.eps, generator=generator)
        return pgd(objective, x, c.eps, c.pgd_steps, _PGD_STEP_FACTOR * c.eps / c.pgd_steps, generator=generator)


def latent_adversarial_rounds(model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> float:
    """Lu & Chen Algorithm 1's inner loop: M rounds of K-step latent L2 PGD from E(x), each followed by a decoder update.

    Returns the mean adversarial reconstruction error the decoder was updated on.
    """
    c = model.config
    losses = []
    for _ in range(c.adv_rounds):
        with _eval_mode(model):
            z0, objective = model.latent_attack_objective(x)
            z_adv = pgd(objective, z0, c.adv_eps, c.adv_steps, _PGD_STEP_FACTOR * c.adv_eps / c.adv_steps,
                        norm="l2", clamp=None, generator=generator)
        losses.append(float(model.adversarial_decoder_step(x, z_adv)))
    return float(np.mean(losses))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
               generator: torch.Generator | None = None) -> dict[str, float]:
    """One optimizer step on the model's loss (crafting x_adv first where the model trains adversarially)."""
    model.train()
    if hasattr(model, "adversarial_objective"):
        parts = model.loss(x, craft_adversarial(model, x, generator))
    else:
        parts = model.loss(x)
    if not torch.isfinite(parts["total"]):
        raise FloatingPointError(f"non-finite loss: {', '.join(f'{k}={float(v):.4g}' for k, v in parts.items())}")
    optimizer.zero_grad(set_to_none=True)
    parts["total"].backward()
    optimizer.step()
    out = {name: float(value.detach()) for name, value in parts.items()}
    if getattr(model.config, "latent_adv", False):
        out["adv_decoder"] = latent_adversarial_rounds(model, x, generator)
    return out


@torch.no_grad()
def reconstruction_mse(model: nn.Module, data: ImageSet, device: str | torch.device, batch_size: int = 500) -> float:
    """Per-pixel mean squared error of deterministic reconstructions on [0,1] pixels over the whole set."""
    with _eval_mode(model):
        total = 0.0
        for start in range(0, len(data), batch_size):
            x = to_float(data.images[start:start + batch_size], device)
            total += float((model.reconstruct(x, sample=False) - x).pow(2).sum())
    return total / data.images.size


@torch.no_grad()
def save_reconstructions(model: nn.Module, data: ImageSet, path: Path, device: str | torch.device, n: int = 8) -> None:
    """First row: n test images; second row: their reconstructions."""
    with _eval_mode(model):
        x = to_float(data.images[:n], device)
        save_image(torch.cat([x, model.reconstruct(x)]).cpu(), path, nrow=len(x))


def _batches(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`steps` index batches without replacement, reshuffling whenever the data runs out (never a short batch)."""
    size = min(batch_size, n)
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + size > n:
            order, pos = rng.permutation(n), 0
        yield np.sort(order[pos:pos + size])
        pos += size


def _epoch(model: nn.Module, optimizer: torch.optim.Optimizer, train: ImageSet, batch_size: int, steps: int,
           rng: np.random.Generator, generator: torch.Generator, device: str | torch.device) -> dict[str, float]:
    """Mean of each loss part over one epoch's steps."""
    sums: dict[str, float] = {}
    for idx in _batches(len(train), batch_size, steps, rng):
        for name, value in train_step(model, optimizer, to_float(train.images[idx], device), generator).items():
            sums[name] = sums.get(name, 0.0) + value
    return {name: total / steps for name, total in sums.items()}


def train_job(method: str, train: ImageSet, test: ImageSet, job_dir: Path, epochs: int, batch_size: int,
              steps_per_epoch: int | None, seed: int, device: str | torch.device,
              on_epoch: Callable[[dict[str, Any]], None] | None = None,
              overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one method and leave its folder complete; returns the final metrics (test MSE on [0,1] pixels included).

    status.json moves running -> done, or failed with the error message (then the error is re-raised);
    `on_epoch` receives the status after every epoch. Seeds torch's global generator: the job owns its process.
    """
    job_dir = Path(job_dir)
    status_path = job_dir / "status.json"
    previous = read_json(status_path) if status_path.exists() else {}
    status: dict[str, Any] = {
        "id": job_dir.name, "method": method, "kind": "robust", "state": "running", "error": None, "epoch": 0,
        "epochs": epochs, "created_at": previous.get("created_at", now_iso()), "updated_at": now_iso(), "metrics": {},
    }

    def publish(**changes: Any) -> None:
        status.update(changes, updated_at=now_iso())
        write_json(status_path, status)

    publish()
    try:
        if min(epochs, batch_size, steps_per_epoch or 1) < 1:
            raise ValueError(f"epochs, batch_size, steps_per_epoch must be positive: {epochs}, {batch_size}, {steps_per_epoch}")
        family, config = method_config(method, train.images.shape[1:], overrides)
        if "dataset_size" in type(config).model_fields and "dataset_size" not in (overrides or {}):
            config = config.model_copy(update={"dataset_size": len(train)})
        write_json(job_dir / "config.json", {
            "method": method, "family": family, "model": config.model_dump(mode="json"), "epochs": epochs,
            "batch_size": batch_size, "steps_per_epoch": steps_per_epoch, "seed": seed, "device": str(device),
            "train_size": len(train), "test_size": len(test),
        })
        torch.manual_seed(seed)
        generator, rng = torch.Generator(device).manual_seed(seed), np.random.default_rng(seed)
        model = build(family, config).to(device)
        optimizer = model.make_optimizer()
        steps = steps_per_epoch or max(len(train) // batch_size, 1)
        history: list[dict[str, Any]] = []
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            parts = _epoch(model, optimizer, train, batch_size, steps, rng, generator, device)
            history.append({"epoch": epoch, **parts, "seconds": time.perf_counter() - started})
            write_rows(job_dir / "history.parquet", history)
            publish(epoch=epoch, metrics={**parts, "seconds": history[-1]["seconds"]})
            if on_epoch is not None:
                on_epoch(dict(status))
        train_seconds = sum(r["seconds"] for r in history)
        metrics = {**parts, "test_mse": reconstruction_mse(model, test, device), "train_seconds": train_seconds}
        save_model(job_dir / "model.pt", model, {"method": method, "metrics": metrics})
        save_reconstructions(model, test, job_dir / "reconstructions.png", device)
    except Exception as err:
        publish(state="failed", error=f"{type(err).__name__}: {err}")
        raise
    publish(state="done", metrics=metrics)
    return metrics
