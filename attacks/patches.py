"""Patch anomaly detection (GS-VAE paper, Fig. 9): paste a shaped patch, flag images whose reconstruction
error is high.

The threshold is chosen on a validation split by `choose_threshold`, whose only inputs are validation
scores and labels: the test set cannot leak into it by construction. Half of each split is patched;
accuracy (Wilson 95% CI) and ROC-AUC (torchmetrics) are reported on test.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics.functional.classification import binary_auroc

from popvae.attacks.batches import map_batches
from popvae.attacks.metrics import accuracy_ci, mse
from popvae.models.protocol import AutoEncoder

SHAPES = ("square", "circle", "cross")
SIZES = (4, 8, 12)  # patch side in pixels (on 32x32 images)


def patch_mask(shape: str, size: int) -> Tensor:
    """A (size, size) boolean stencil of the shape."""
    c = (size - 1) / 2
    yy, xx = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    if shape == "square":
        return torch.ones(size, size, dtype=torch.bool)
    if shape == "circle":
        return yy**2 + xx**2 <= (size / 2) ** 2
    if shape == "cross":
        arm = max(size // 6, 1)
        return (yy.abs() < arm) | (xx.abs() < arm)
    raise ValueError(f"unknown patch shape {shape!r}; choose one of {', '.join(SHAPES)}")


def apply_patches(x: Tensor, shape: str, size: int, generator: torch.Generator, value: float = 1.0) -> Tensor:
    """Each image gets the patch (all channels set to `value`) at a uniformly random position fully inside it."""
    n, _, h, w = x.shape
    stencil = patch_mask(shape, size).to(x.device)
    top = torch.randint(0, h - size + 1, (n,), generator=generator, device=generator.device).tolist()
    left = torch.randint(0, w - size + 1, (n,), generator=generator, device=generator.device).tolist()
    out = x.clone()
    for i, (t, lft) in enumerate(zip(top, left)):
        out[i, :, t : t + size, lft : lft + size][:, stencil] = value
    return out


def anomaly_scores(model: AutoEncoder, x: Tensor, batch_size: int = 250) -> Tensor:
    """Per-image reconstruction MSE with the noise-free reconstruction."""
    with torch.no_grad():
        return map_batches(lambda v: mse(model.reconstruct(v, sample=False), v), x, batch_size=batch_size)


def choose_threshold(scores: Tensor, is_anomaly: Tensor) -> float:
    """The accuracy-maximising threshold (flag when score > threshold) on these, validation-only, scores.

    Candidates are the midpoints between consecutive distinct scores (plus one below and one above all),
    so the chosen value sits between the classes rather than on a validation point.
    """
    u = torch.unique(scores.double())
    candidates = torch.cat([u[:1] - 1, (u[:-1] + u[1:]) / 2, u[-1:] + 1])
    normal, anomalous = torch.sort(scores[~is_anomaly].double())[0], torch.sort(scores[is_anomaly].double())[0]
    correct = torch.searchsorted(normal, candidates, right=True) + len(anomalous) - torch.searchsorted(
        anomalous, candidates, right=True)
    return float(candidates[int(correct.argmax())])


def _half_patched(x: Tensor, shape: str, size: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    is_anomaly = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    is_anomaly[torch.randperm(len(x), generator=generator, device=generator.device)[: len(x) // 2].to(x.device)] = True
    patched = apply_patches(x, shape, size, generator)
    return torch.where(is_anomaly.view(-1, 1, 1, 1), patched, x), is_anomaly


def _scored(model: AutoEncoder, x: Tensor, threshold: float, is_anomaly: Tensor, batch_size: int) -> dict[str, Any]:
    scores = anomaly_scores(model, x, batch_size)
    auroc = float(binary_auroc(scores, is_anomaly.long()))
    return {"accuracy": accuracy_ci((scores > threshold) == is_anomaly), "roc_auc": auroc}


def patch_detection(model: AutoEncoder, val_x: Tensor, test_x: Tensor, shapes: Sequence[str] = SHAPES,
                    sizes: Sequence[int] = SIZES, seed: int = 0, batch_size: int = 250,
                    tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Per shape and size: threshold from `val_x` alone, then accuracy and ROC-AUC on `test_x`."""
    generator = torch.Generator(test_x.device).manual_seed(seed)
    rows, shown = [], {}
    for shape in shapes:
        for size in sizes:
            val_mixed, val_anomaly = _half_patched(val_x, shape, size, generator)
            threshold = choose_threshold(anomaly_scores(model, val_mixed, batch_size), val_anomaly)
            test_mixed, test_anomaly = _half_patched(test_x, shape, size, generator)
            rows.append({"shape": shape, "size": size, "threshold": threshold,
                         "val": _scored(model, val_mixed, threshold, val_anomaly, batch_size),
                         "test": _scored(model, test_mixed, threshold, test_anomaly, batch_size)})
            if tick is not None:
                tick(f"patches {shape} {size}px")
        shown[f"{shape}_{sizes[-1]}px"] = apply_patches(test_x[:8], shape, sizes[-1], generator).cpu()
    return {
        "setting": {"shapes": list(shapes), "sizes_px": list(sizes), "patch_value": 1.0, "score": "per-image reconstruction MSE",
                    "threshold": "max accuracy on the validation split only", "patched_fraction": 0.5,
                    "n_val": len(val_x), "n_test": len(test_x)},
        "rows": rows,
        "images": shown,
    }
