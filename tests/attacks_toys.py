"""Tiny models for the attack tests: a classifier and linear autoencoders implementing `AutoEncoder`, fit in a second."""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from popvae.models.dataset_loading import ImageSet, synthetic, to_float


class TinyAE(nn.Module):
    """Linear encoder, linear+sigmoid decoder; `stochastic` adds Gaussian latent noise when sampling."""

    def __init__(self, latent: int = 8, side: int = 32, stochastic: bool = False, noise: float = 0.5) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(side * side, latent))
        self.dec = nn.Sequential(nn.Linear(latent, side * side), nn.Sigmoid(), nn.Unflatten(1, (1, side, side)))
        self.stochastic = stochastic
        self.noise = noise

    def encode(self, x: Tensor) -> Tensor:
        return self.enc(x)

    def decode(self, z: Tensor) -> Tensor:
        return self.dec(z)

    def reconstruct(self, x: Tensor, sample: bool = False) -> Tensor:
        z = self.encode(x)
        if sample and self.stochastic:
            z = z + self.noise * torch.randn_like(z)
        return self.decode(z)


@lru_cache(maxsize=4)
def data(n: int = 384, seed: int = 0) -> ImageSet:
    return synthetic(n, seed=seed)


def tensors(ds: ImageSet) -> tuple[Tensor, Tensor]:
    return to_float(ds.images), torch.as_tensor(ds.labels)


@lru_cache(maxsize=2)
def trained_ae(stochastic: bool = False) -> TinyAE:
    torch.manual_seed(0)
    ae = TinyAE(stochastic=stochastic)
    x, _ = tensors(data())
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.mse_loss(ae.reconstruct(x, sample=True), x).backward()
        opt.step()
    return ae.eval()


@lru_cache(maxsize=1)
def trained_mlp() -> nn.Module:
    """A small nonlinear classifier on the synthetic blobs: undefended, near 100% clean."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = tensors(data())
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()
