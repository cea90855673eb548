"""One epoch of training and the scores a run reports, for any registered model family.

Seeding is a pure function of (seed, member, epoch), so a resumed run draws exactly the batches and
noise the uninterrupted run would have drawn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from models.data import to_float


def epoch_rng(seed: int, member: int, epoch: int) -> np.random.Generator:
    torch.manual_seed((seed * 1_000_003 + member * 10_007 + epoch) % (2**63))
    return np.random.default_rng([seed, member, epoch])


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: np.ndarray,
    batch_size: int,
    steps: int | None,
    rng: np.random.Generator,
    device: torch.device,
) -> dict[str, float]:
    """Train on shuffled batches; returns the mean of each named loss part over the epoch.

    Stops early (returning NaN parts) as soon as the loss is not finite, since nothing after
    that step can be useful and the coordinator resets such a member from the best.
    """
    model.train()
    order = rng.permutation(len(images))
    n_batches = math.ceil(len(images) / batch_size)
    steps = n_batches if steps is None else steps
    sums: dict[str, float] = {}
    for step in range(steps):
        start = (step % n_batches) * batch_size
        x = to_float(images[np.sort(order[start : start + batch_size])], device)
        parts = model.loss(x)
        if not torch.isfinite(parts["total"]):
            return {k: math.nan for k in parts}
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        optimizer.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
    return {k: v / steps for k, v in sums.items()}


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device) -> dict[str, float]:
    """Loss parts (eval mode: no Gumbel noise unless the model's config asks) and the per-pixel
    MSE of the reconstruction on [0,1] pixels, each averaged over every image."""
    model.eval()
    sums: dict[str, float] = {}
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size], device)
        parts = {k: float(v) * len(x) for k, v in model.loss(x).items()}
        parts["mse"] = float(((model.reconstruct(x) - x) ** 2).mean()) * len(x)
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: v / len(images) for k, v in sums.items()}
