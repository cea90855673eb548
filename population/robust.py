"""Robust-autoencoder jobs: one named method trained into one folder, with no Ray (the worker actors call `train_job`).

A method is a model family plus config overrides (`METHODS`); every method trains with the same loop
as the population (`population.training`), adversarial schemes included.

    its folder (`RunFolder`): config, status, history, model, and reconstructions.png
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from popvae.models.dataset_loading import ImageSet
from popvae.models.registry import build
from popvae.population.contract import JobStatus
from popvae.population.methods import METHODS, method_config, parse_methods  # noqa: F401 - re-exported
from popvae.population.plots import save_reconstruction_grid
from popvae.population.run_folder import RunFolder
from popvae.population.training import reconstruction_mse, resolve_precision, train_epoch


def train_job(method: str, train: ImageSet, test: ImageSet, job_dir: Path, epochs: int, batch_size: int,
              steps_per_epoch: int | None, seed: int, device: str | torch.device,
              on_epoch: Callable[[dict[str, Any]], None] | None = None,
              overrides: dict[str, Any] | None = None, precision: str = "fp32") -> dict[str, Any]:
    """Train one method and leave its folder complete; returns the final metrics (test MSE on [0,1] pixels included).
    `precision` (auto | fp32 | bf16) is resolved on `device` and recorded in config.json; test scores are fp32.

    status.json moves running -> done, or failed with the error message (then the error is re-raised);
    `on_epoch` receives the status after every epoch. Seeds torch's global generator: the job owns its process.
    """
    job_dir = Path(job_dir)
    folder = RunFolder(job_dir)
    created_at = folder.read_job_status().created_at if folder.status_path.exists() else None  # kept from the queued record
    status = JobStatus.queued(job_dir.name, "robust", method, epochs, created_at)

    def publish(**changes: Any) -> None:
        nonlocal status
        status = status.update(**changes)
        folder.write_job_status(status)

    publish(state="running")
    try:
        if min(epochs, batch_size, steps_per_epoch or 1) < 1:
            raise ValueError(f"epochs, batch_size, steps_per_epoch must be positive: {epochs}, {batch_size}, {steps_per_epoch}")
        family, config = method_config(method, train.images.shape[1:], overrides)
        if "dataset_size" in type(config).model_fields and "dataset_size" not in (overrides or {}):
            config = config.model_copy(update={"dataset_size": len(train)})
        resolved = resolve_precision(precision, torch.device(device))
        folder.write_config({
            "method": method, "family": family, "model": config.model_dump(mode="json"), "epochs": epochs,
            "batch_size": batch_size, "steps_per_epoch": steps_per_epoch, "seed": seed, "device": str(device),
            "train_size": len(train), "test_size": len(test), "precision": resolved,
        })
        torch.manual_seed(seed)
        generator, rng = torch.Generator(device).manual_seed(seed), np.random.default_rng(seed)
        model = build(family, config).to(device)
        optimizer = model.make_optimizer()
        steps = steps_per_epoch or max(len(train) // batch_size, 1)
        history: list[dict[str, Any]] = []
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            parts = train_epoch(model, optimizer, train.images, batch_size, steps, rng, device, generator, precision=resolved)
            if not math.isfinite(parts["total"]):
                raise FloatingPointError(f"non-finite loss in epoch {epoch}")
            history.append({"epoch": epoch, **parts, "seconds": time.perf_counter() - started})
            folder.write_history(history)
            publish(epoch=epoch, metrics={**parts, "seconds": history[-1]["seconds"]})
            if on_epoch is not None:
                on_epoch(status.model_dump())
        train_seconds = sum(r["seconds"] for r in history)
        metrics = {**parts, "test_mse": reconstruction_mse(model, test.images, device), "train_seconds": train_seconds}
        folder.write_model(model, {"method": method, "metrics": metrics})
        save_reconstruction_grid(model, test.images, job_dir / "reconstructions.png", n=8,
                                 title=f"{method} after {epochs} epoch(s)")
    except Exception as err:
        publish(state="failed", error=f"{type(err).__name__}: {err}")
        raise
    publish(state="done", metrics=metrics)
    return metrics
