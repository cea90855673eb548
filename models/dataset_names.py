"""Dataset names and image shapes, and the error for a bad one: no torch, no numpy, so that a config naming
an unknown dataset is rejected before anything heavy is imported. Loading lives in `models.dataset_loading`."""

from __future__ import annotations

DATASETS = ("fashion-mnist", "mnist", "cifar10", "svhn", "celeba", "synthetic")
IMAGE_SHAPE = {
    "fashion-mnist": (1, 32, 32), "mnist": (1, 32, 32), "cifar10": (3, 32, 32),
    "svhn": (3, 32, 32), "celeba": (3, 64, 64), "synthetic": (1, 32, 32),
}


class DatasetError(ValueError):
    """A dataset is unknown, missing or corrupt; the message names the file and the fix."""


def check_dataset_name(name: str) -> str:
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return name
