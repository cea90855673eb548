"""Unseen classes (GS-VAE paper, Figs. 7-8): how well does a model trained without some classes reconstruct
them? Numbers, not only pictures: MSE and SSIM on the held-out classes beside the seen ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from popvae.attacks.batches import map_batches
from popvae.attacks.metrics import mse, ssim
from popvae.models.protocol import AutoEncoder


def _group(err: Tensor, sim: Tensor) -> dict[str, Any]:
    if len(err) == 0:
        return {"n": 0, "mse": None, "ssim": None, "ssim_std": None}
    return {"n": len(err), "mse": float(err.mean()), "ssim": float(sim.mean()),
            "ssim_std": float(sim.std()) if len(sim) > 1 else 0.0}


def unseen_classes(model: AutoEncoder, x: Tensor, y: Tensor, held_out: Sequence[int], classes: Sequence[str] | None = None,
                   batch_size: int = 250) -> dict[str, Any]:
    """Per-pixel MSE ([0,1] pixels) and SSIM of noise-free reconstructions: seen vs held-out classes, and per class."""
    with torch.no_grad():
        rec = map_batches(lambda v: model.reconstruct(v, sample=False), x, batch_size=batch_size)
    err, sim = mse(rec, x), ssim(rec, x)
    unseen = torch.isin(y, torch.as_tensor(list(held_out), dtype=y.dtype, device=y.device))
    name = lambda c: classes[c] if classes is not None else str(c)
    return {
        "held_out": [int(c) for c in held_out],
        "seen": _group(err[~unseen], sim[~unseen]),
        "unseen": _group(err[unseen], sim[unseen]),
        "per_class": {name(int(c)): {**_group(err[y == c], sim[y == c]), "held_out": bool(int(c) in held_out)}
                      for c in torch.unique(y).tolist()},
        "images": {"unseen": x[unseen][:8].cpu(), "unseen_reconstruction": rec[unseen][:8].cpu(),
                   "seen": x[~unseen][:8].cpu(), "seen_reconstruction": rec[~unseen][:8].cpu()},
    }
