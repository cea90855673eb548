"""Small, cached Fashion-MNIST subsets for the robust-autoencoder tests (the real files, loaded once per session)."""

from __future__ import annotations

from functools import cache

import numpy as np

from popvae.models.dataset_loading import ImageSet, load_split


@cache
def fashion(split: str, n: int) -> ImageSet:
    """The first n images of a Fashion-MNIST split at 32x32."""
    return _full(split).subset(np.arange(n))


@cache
def _full(split: str) -> ImageSet:
    return load_split("fashion-mnist", split)
