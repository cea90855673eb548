"""Gumbel-softmax sampling (eq. 7) and the KL of a categorical posterior to the uniform prior (eq. 9)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def gumbel_softmax(logits: Tensor, tau: float, noise: bool) -> Tensor:
    """softmax((logits + g) / tau) over the last dim; g ~ Gumbel(0,1) when `noise`, else g = 0."""
    if noise:
        return F.gumbel_softmax(logits, tau=tau, hard=False, dim=-1)
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
