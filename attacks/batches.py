"""Run a per-example function over a large batch in chunks, so full test sets fit in memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def map_batches(fn: Callable[..., Tensor], *tensors: Tensor, batch_size: int) -> Tensor:
    """fn over aligned chunks of `tensors`, results concatenated along dim 0."""
    return torch.cat([fn(*chunk) for chunk in zip(*(t.split(batch_size) for t in tensors))])
