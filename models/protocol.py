"""The one interface every autoencoder exposes, so attacks and evaluation never special-case a family."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class AutoEncoder(Protocol):
    """Inputs are images in [0,1] shaped (B, C, H, W); latents are flat (B, D).

    `encode` is deterministic (the latent the attacks move); `decode` maps a latent back to [0,1]
    pixels; `reconstruct(x, sample=True)` draws the model's noise (Gumbel or Gaussian) where it has
    any, so EOT can average over it. `stochastic` says whether `sample=True` changes anything.
    """

    stochastic: bool

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def reconstruct(self, x: Tensor, sample: bool = False) -> Tensor: ...
