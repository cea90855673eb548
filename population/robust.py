"""Robust-autoencoder jobs: one named method trained into one folder, with no Ray (the worker actors call `train_job`).

A method is a model family plus config overrides (`METHODS`); every method trains with the same loop
as the population (`population.training`), adversarial schemes included.

    its folder (`RunFolder`): config, status, history, model, and reconstructions.png
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from popvae.models.dataset_loading import ImageSet, train_val_split
from popvae.models.registry import build
from popvae.population.contract import JobStatus
from popvae.population.generation import plateau_count
from popvae.population.methods import METHODS, method_config, parse_methods  # noqa: F401 - re-exported
from popvae.population.plots import save_reconstruction_grid
from popvae.population.robust_presets import Schedule
from popvae.population.run_folder import RunFolder
from popvae.population.training import epoch_torch_seed, reconstruction_mse, reseed_epoch, resolve_precision, train_epoch


def make_trainer(model: torch.nn.Module, schedule: Schedule | None) -> tuple[torch.optim.Optimizer, Any]:
    """The model's own optimizer (its family's, at the config's lr) and the schedule's learning-rate scheduler (None
    without decay): ReduceLROnPlateau on the validation loss, lr times `decay_factor` after `decay_patience` epochs
    without improvement."""
    optimizer = model.make_optimizer()
    if schedule is None or schedule.lr_decay == "none":
        return optimizer, None
    return optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, "min", factor=schedule.decay_factor, patience=schedule.decay_patience)


def train_job(method: str, train: ImageSet, test: ImageSet, job_dir: Path, epochs: int, batch_size: int,
              steps_per_epoch: int | None, seed: int, device: str | torch.device,
              on_epoch: Callable[[dict[str, Any]], None] | None = None,
              overrides: dict[str, Any] | None = None, precision: str = "fp32",
              schedule: Schedule | dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one method and leave its folder complete; returns the final metrics (test MSE on [0,1] pixels included).
    `precision` (auto | fp32 | bf16) is resolved on `device` and recorded in config.json; test scores are fp32.

    With a `schedule` (`population.robust_presets.Schedule`) a share of the training split is held out: each epoch
    scores its reconstruction MSE (history's `val_mse`), which drives the learning-rate decay and the plateau stopper;
    model.pt is the best epoch on it; checkpoints/latest.pt is written after every epoch, and a job started again on a
    folder that has one resumes after its last epoch (batches and noise are seeded per epoch, so the epochs it trains
    are those an uninterrupted job would have trained; the latent-adversarial decoder's own Adam restarts its moments).

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
        schedule = Schedule.model_validate(schedule) if isinstance(schedule, dict) else schedule
        val = None
        if schedule is not None:
            fit_idx, val_idx = train_val_split(len(train), schedule.val_fraction, seed)
            train, val = train.subset(fit_idx), train.subset(val_idx[: schedule.val_size])
        family, config = method_config(method, train.images.shape[1:], overrides)
        if "dataset_size" in type(config).model_fields and "dataset_size" not in (overrides or {}):
            config = config.model_copy(update={"dataset_size": len(train)})
        resolved = resolve_precision(precision, torch.device(device))
        if precision == "auto" and folder.latest_path.is_file() and folder.config_path.is_file():
            resolved = folder.read_config_data().get("precision", resolved)  # auto resolves once: a job resumes as it ran
        written = {
            "method": method, "family": family, "model": config.model_dump(mode="json"), "epochs": epochs,
            "batch_size": batch_size, "steps_per_epoch": steps_per_epoch, "seed": seed, "device": str(device),
            "train_size": len(train), "test_size": len(test), "precision": resolved,
            "schedule": None if schedule is None else schedule.model_dump(mode="json"),
        }
        resume = folder.read_job_resume() if schedule is not None and folder.latest_path.is_file() else None
        if resume is not None and resume["config"] != json.dumps({**written, "device": None, "epochs": None}):
            raise ValueError(f"{folder.latest_path} was written by another configuration of {method}; "
                             "remove the job folder to start it again")
        folder.write_config(written)
        torch.manual_seed(seed)
        model = build(family, config).to(device)
        optimizer, scheduler = make_trainer(model, schedule)
        adversarial = model.decoder_optimizer() if getattr(config, "latent_adv", False) else None
        history: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Any] | None] = (math.inf, None)
        if resume is not None:
            model.load_state_dict(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(resume["scheduler"])
            if adversarial is not None and resume.get("decoder_optimizer") is not None:
                adversarial.load_state_dict(resume["decoder_optimizer"])
            history, best = resume["history"], (resume["best_val"], resume["best"])
        steps = steps_per_epoch or max(len(train) // batch_size, 1)
        while len(history) < epochs and not (val is not None and _stalled(history, schedule)):
            epoch = len(history) + 1
            started = time.perf_counter()
            rng = reseed_epoch(seed, 0, epoch)
            generator = torch.Generator(device).manual_seed(epoch_torch_seed(seed, 0, epoch))
            lr = optimizer.param_groups[0]["lr"]
            parts = train_epoch(model, optimizer, train.images, batch_size, steps, rng, device, generator, precision=resolved)
            if not math.isfinite(parts["total"]):
                raise FloatingPointError(f"non-finite loss in epoch {epoch}")
            row = {"epoch": epoch, **parts, "lr": lr}
            if val is not None:
                row["val_mse"] = reconstruction_mse(model, val.images, device)
                if scheduler is not None:
                    scheduler.step(row["val_mse"])
                if row["val_mse"] < best[0]:
                    best = (row["val_mse"], {k: v.detach().clone() for k, v in model.state_dict().items()})
            history.append(row | {"seconds": time.perf_counter() - started})
            folder.write_history(history)
            if schedule is not None:
                folder.write_job_resume({
                    "config": json.dumps({**written, "device": None, "epochs": None}), "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "decoder_optimizer": None if adversarial is None else adversarial.state_dict(),
                    "history": history, "best_val": best[0], "best": best[1]})
            publish(epoch=epoch, metrics={**parts, "seconds": history[-1]["seconds"]})
            if on_epoch is not None:
                on_epoch(status.model_dump())
        if best[1] is not None:
            model.load_state_dict(best[1])
        last = {k: v for k, v in history[-1].items() if k not in ("epoch", "seconds", "lr", "val_mse")}
        metrics = {**last, "test_mse": reconstruction_mse(model, test.images, device),
                   "train_seconds": sum(r["seconds"] for r in history), "epochs_trained": len(history)}
        if val is not None:
            metrics |= {"best_val_mse": best[0], "best_epoch": 1 + min(range(len(history)), key=lambda i: history[i]["val_mse"]),
                        "stopped_on_plateau": len(history) < epochs}
        folder.write_model(model, {"method": method, "metrics": metrics})
        save_reconstruction_grid(model, test.images, job_dir / "reconstructions.png", n=8,
                                 title=f"{method} after {len(history)} epoch(s)")
    except Exception as err:
        publish(state="failed", error=f"{type(err).__name__}: {err}")
        raise
    publish(state="done", metrics=metrics)
    return metrics


def _stalled(history: list[dict[str, Any]], schedule: Schedule) -> bool:
    """The population's plateau stopper on the job's validation losses."""
    patience = schedule.stop_patience
    return patience is not None and plateau_count([r["val_mse"] for r in history], schedule.min_delta) >= patience
