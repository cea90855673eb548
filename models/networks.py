"""Convolutional and fully connected building blocks shared by every model family."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from popvae.models.configs import feature_side  # noqa: F401 - re-exported: the encoders' output side


class Sigmoid32(nn.Sigmoid):
    """Sigmoid computed in float32 whatever the input's dtype: under bf16 autocast the pixels (and the BCE or squared
    error on them) keep float32 precision, where bf16's 8 mantissa bits would round 1 - 1e-3 to 1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x.float())


def _act(name: str) -> nn.Module:
    return {"relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.2), "prelu": nn.PReLU()}[name]


def conv_encoder(in_channels: int, widths: tuple[int, ...], batch_norm: bool = False, act: str = "relu") -> nn.Sequential:
    """k4 s2 p1 convolutions, each halving the image side, then flatten."""
    layers: list[nn.Module] = []
    c = in_channels
    for w in widths:
        layers.append(nn.Conv2d(c, w, 4, 2, 1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(w))
        layers.append(_act(act))
        c = w
    layers.append(nn.Flatten())
    return nn.Sequential(*layers)


class ConvDecoder(nn.Module):
    """The encoder's mirror: linear to the last feature map, transposed convolutions, sigmoid."""

    def __init__(self, latent_dim: int, out_channels: int, widths: tuple[int, ...], side: int,
                 batch_norm: bool = False, act: str = "relu") -> None:
        super().__init__()
        self.shape = (widths[-1], side, side)
        self.fc = nn.Sequential(nn.Linear(latent_dim, widths[-1] * side * side), _act(act))
        layers: list[nn.Module] = []
        rev = list(reversed(widths))
        for w_in, w_out in zip(rev, rev[1:]):
            layers.append(nn.ConvTranspose2d(w_in, w_out, 4, 2, 1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(w_out))
            layers.append(_act(act))
        layers += [nn.ConvTranspose2d(rev[-1], out_channels, 4, 2, 1), Sigmoid32()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).view(-1, *self.shape))


def mlp(sizes: list[int], act: str = "relu", final: Callable[[], nn.Module] | None = None) -> nn.Sequential:
    """Linear layers with `act` between them; `final` (e.g. nn.Sigmoid) after the last."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(_act(act))
    if final is not None:
        layers.append(final())
    return nn.Sequential(*layers)
