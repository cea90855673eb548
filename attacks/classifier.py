"""The classifiers the evaluation needs: the GS-VAE paper's basic CNN (judges purified images, and its
features give the Fréchet distance) and a small latent MLP (judges latent attacks).

Fitting them is an evaluation utility, not model training: the CNN is fit once per training set and
cached as a checkpoint keyed by a fingerprint of that set, so every model evaluated on the same data
is judged by the same CNN.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from popvae.models.checkpoint import atomic_torch_save
from popvae.models.dataset_loading import ImageSet, to_float
from popvae.models.networks import mlp


class BasicCNN(nn.Module):
    """2 conv (5x5, ReLU, 2x2 max-pool) + 3 FC; `features` is the penultimate layer."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 32, widths: tuple[int, int] = (16, 32),
                 hidden: tuple[int, int] = (128, 64)) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size,
                       "widths": list(widths), "hidden": list(hidden)}
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(widths[0], widths[1], 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.fc = mlp([widths[1] * (image_size // 4) ** 2, *hidden], final=nn.ReLU)
        self.head = nn.Linear(hidden[-1], num_classes)
        self.num_features = hidden[-1]

    def features(self, x: Tensor) -> Tensor:
        return self.fc(self.conv(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class LatentMLP(nn.Module):
    """Classifies latent codes: the downstream task the latent-space attack tries to fool."""

    def __init__(self, latent_dim: int, num_classes: int = 10, hidden: int = 128) -> None:
        super().__init__()
        self.net = mlp([latent_dim, hidden, hidden, num_classes])

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


def fit(net: nn.Module, x: Tensor, y: Tensor, epochs: int, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
        device: str = "cpu", on_step: Callable[[int, int], None] | None = None) -> nn.Module:
    """Adam on cross-entropy; uint8 images become [0,1] floats one batch at a time; `on_step(done, total)` after each
    step (a long fit shows progress). Returns `net` in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    total, done = epochs * -(-len(y) // batch_size), 0
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(batch_size):
            xb = x[idx]
            xb = to_float(xb, device) if xb.dtype == torch.uint8 else xb.to(device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(xb), y[idx].to(device)).backward()
            opt.step()
            done += 1
            if on_step is not None:
                on_step(done, total)
    net.zero_grad(set_to_none=True)
    return net.eval()


@torch.no_grad()
def accuracy(net: nn.Module, x: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of `net` on float inputs already on its device."""
    hits = sum(int((net(xb).argmax(1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return hits / max(len(y), 1)


def _fingerprint(ds: ImageSet) -> str:
    h = hashlib.sha256()
    h.update(str(ds.images.shape).encode())
    h.update(np.ascontiguousarray(ds.images).tobytes())
    h.update(np.ascontiguousarray(ds.labels).tobytes())
    return h.hexdigest()[:16]


def cached_cnn(train: ImageSet, cache_dir: str | Path, epochs: int = 5, seed: int = 0, device: str = "cpu",
               on_fit: Callable[[Path, int], Callable[[int, int], None]] | None = None) -> BasicCNN:
    """The basic CNN fit on `train`, loaded from `cache_dir` if this exact set and recipe were fit before. A fit (minutes
    on a CPU for a real dataset) first calls `on_fit(cache_file, epochs)` for the callback of its steps."""
    c, side = train.images.shape[1], train.images.shape[2]
    net = BasicCNN(c, len(train.classes), side)
    path = Path(cache_dir) / f"cnn-{_fingerprint(train)}-e{epochs}-s{seed}.pt"
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(blob["state_dict"])
        return net.to(device).eval()
    on_step = on_fit(path, epochs) if on_fit is not None else None
    fit(net, torch.tensor(train.images), torch.tensor(train.labels), epochs, seed=seed, device=device, on_step=on_step)
    atomic_torch_save({"config": net.config, "state_dict": {k: v.cpu() for k, v in net.state_dict().items()}}, path)
    return net
