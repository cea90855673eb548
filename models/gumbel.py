"""Gumbel-softmax sampling (eq. 7) and the KL of a categorical posterior to the uniform prior (eq. 9)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gumbel_noise(shape: tuple[int, ...] | torch.Size, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, generator: torch.Generator | None = None) -> Tensor:
    """g ~ Gumbel(0,1), drawn as F.gumbel_softmax draws it (-log of an Exponential(1) fill) from `generator` (default:
    torch's global stream). Both paths draw through here, so a member's g is the same unpacked (the global stream, seeded
    per epoch) and packed (its own generator, seeded the same), call for call."""
    return -torch.empty(shape, device=device, dtype=dtype).exponential_(generator=generator).log()


def gumbel_softmax(logits: Tensor, tau: float | Tensor, noise: bool | Tensor) -> Tensor:
    """softmax((logits + g) / tau) over the last dim: g ~ Gumbel(0,1) drawn here when `noise` is True, g = 0 when False,
    and `noise` itself when it is a tensor (drawn by the caller: a pack draws each member's from that member's stream).
    `tau` may be a tensor (each member's own tau inside a pack's vmap)."""
    if isinstance(noise, Tensor):
        return F.softmax((logits + noise) / tau, dim=-1)
    if noise:
        return gumbel_softmax(logits, tau, gumbel_noise(logits.shape, logits.device, logits.dtype))
    return F.softmax(logits / tau, dim=-1)


def kl_to_uniform(logits: Tensor) -> Tensor:
    """KL(softmax(logits) || uniform) summed over the categorical variables, per example.

    `logits` is (B, vars, categories); returns (B,).
    """
    log_q = F.log_softmax(logits, dim=-1)
    return (log_q.exp() * (log_q + math.log(logits.shape[-1]))).sum(dim=(-2, -1))


def bce_per_image(recon: Tensor, x: Tensor) -> Tensor:
    """Binary cross-entropy summed over pixels, one value per image.

    Written out rather than F.binary_cross_entropy, which raises on NaN input: a diverged member
    must yield a NaN loss the coordinator can see and repair, not a crashed actor.
    """
    # Clamp the value (log(0) would be -inf) but not the gradient: a pixel saturated on the wrong side must
    # still be pushed back, which a plain clamp (zero gradient outside the range) would not do.
    r = recon - (recon - recon.clamp(1e-6, 1 - 1e-6)).detach()
    return -(x * r.log() + (1 - x) * (1 - r).log()).flatten(1).sum(1)
