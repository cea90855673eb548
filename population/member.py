"""One population member as a plain nn.Module: model, optimizer and tau, trained by `population.training`.

No production code uses it: workers host packs (`population.pack`, a vmap pack or a looped one; a pack of 1 is one
member per process). ReferenceMember is the unpacked oracle packs are tested against (tests/test_pack.py) and the
reference code's design in benchmarks (a sequential loop of members in one process, Tune trials).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np
import torch

from popvae.models.registry import build
from popvae.population.config import RunConfig
from popvae.population.training import (
    autocast,
    evaluate,
    node_id,
    pick_device,
    reconstruction_mse,
    reseed_epoch,
    resolve_precision,
    train_epoch,
)


def weights_to_numpy(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """CPU numpy arrays: what Ray stores once and every reader on the node maps zero-copy."""
    return {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}


class ReferenceMember:
    """Everything one member owns; plain Python so the baseline and tests can use it without Ray."""

    def __init__(self, index: int, config: RunConfig, train_images: np.ndarray, val_images: np.ndarray, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.index, self.config = index, config
        self.device = pick_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        torch.manual_seed(config.seed * 7919 + index)  # members start from different weights
        self.model = build("gsvae", config.model).to(self.device)
        self.optimizer = self.model.make_optimizer()
        self.train_images, self.val_images = train_images, val_images

    def train_epoch(self, epoch: int, tau: float) -> dict[str, Any]:
        started = time.perf_counter()
        self.model.tau = tau
        c = self.config
        rng = reseed_epoch(c.seed, self.index, epoch)
        steps = c.steps_per_epoch or max(len(self.train_images) // c.batch_size, 1)
        logged: list[tuple[int, float]] = []  # (optimizer step of the run, total loss), as a pack logs them
        stepped = [0]

        def log(t: int, parts: dict[str, float]) -> None:
            stepped[0] += 1
            if t % c.log_every_steps == 0:
                logged.append((epoch * steps + t, parts["total"]))

        parts = train_epoch(self.model, self.optimizer, self.train_images, c.batch_size, steps, rng, self.device,
                            on_step=log, precision=self.precision)
        val, curve = math.nan, [math.nan, math.nan]
        if math.isfinite(parts["total"]):
            with autocast(self.precision, self.device):
                if c.select_on != "train":
                    val = evaluate(self.model, self.val_images, 256, self.device, hard=c.select_on == "val_hard")["total"]
                curve = [reconstruction_mse(self.model, self.val_images[: c.curve_subset], self.device, hard=hard)
                         for hard in (False, True)]
        result = {
            "member": self.index, "epoch": epoch, "tau": tau, "loss": parts, "val_loss": val,
            "seconds": time.perf_counter() - started, "node_id": node_id(),
            "step_losses": logged if math.isfinite(parts["total"]) else [],
            "steps": stepped[0], "curve_mse": curve[0], "curve_mse_hard": curve[1],
        }
        return result

    def get_weights(self) -> dict[str, np.ndarray]:
        return weights_to_numpy(self.model)

    def set_weights(self, weights: dict[str, np.ndarray], reset_optimizer: bool = False) -> None:
        with warnings.catch_warnings():  # object-store arrays are read-only; load_state_dict only reads them
            warnings.simplefilter("ignore", UserWarning)
            self.model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        if reset_optimizer:  # a NaN loss may have poisoned the moment estimates
            self.optimizer = self.model.make_optimizer()

    def get_optimizer_state(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def set_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

