"""Datasets as uint8 arrays (N, C, H, W) plus int64 labels: small to ship through Ray's object store
and read zero-copy by every worker; batches become float [0,1] only on the device that trains.

Fashion-MNIST, the embedded default, is parsed straight from the IDX files of the Debian package
`dataset-fashion-mnist`; MNIST, CIFAR-10, SVHN and CelebA come through torchvision from a local
root, never downloaded; `synthetic` is a small learnable set for tests.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from popvae.models.dataset_names import DATASETS, IMAGE_SHAPE, DatasetError, check_dataset_name

__all__ = ["DATASETS", "IMAGE_SHAPE", "DatasetError", "ImageSet", "check_dataset_name", "load_split", "prepare"]

FASHION_MNIST_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
@dataclass(frozen=True)
class ImageSet:
    images: np.ndarray  # uint8, (N, C, H, W)
    labels: np.ndarray  # int64, (N,)
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> ImageSet:
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def without_classes(self, excluded: list[int] | tuple[int, ...]) -> ImageSet:
        return self.subset(np.flatnonzero(~np.isin(self.labels, list(excluded))))


def to_float(images: np.ndarray | Tensor, device: str | torch.device = "cpu") -> Tensor:
    """uint8 batch -> float32 in [0,1] on `device`."""
    t = torch.as_tensor(images).to(device, non_blocking=True)
    return t.float().div_(255.0)


def prepare(images: np.ndarray | Tensor, channels: int, size: int) -> Tensor:
    """Raw images as a model takes them: float32 in [0,1], (N, channels, size, size), resized as its training data was
    (antialiased, on uint8 when given uint8, so a dataset's own files come out exactly as the model saw them).
    Takes (H, W), (N, H, W), (N, C, H, W) or (N, H, W, C); uint8 in 0..255 or floats in [0,1]. ValueError when the
    channels do not fit."""
    t = torch.as_tensor(np.asarray(images) if not isinstance(images, Tensor) else images).detach().cpu()
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[:, None]
    elif t.ndim == 4 and t.shape[1] != channels and t.shape[-1] == channels:
        t = t.permute(0, 3, 1, 2)
    if t.ndim != 4 or t.shape[1] != channels:
        raise ValueError(f"expected images of {channels} channel(s) as (H, W), (N, H, W), (N, C, H, W) or (N, H, W, C), "
                         f"got shape {tuple(np.shape(images))}")
    if t.dtype != torch.uint8:
        t = t.float()
    if tuple(t.shape[-2:]) != (size, size):
        from torchvision.transforms.v2.functional import resize

        t = resize(t.contiguous(), [size, size], antialias=True)
    return to_float(t) if t.dtype == torch.uint8 else t.clamp(0.0, 1.0)


def load_split(name: str, split: str, root: str | Path | None = None, synthetic_size: int = 512) -> ImageSet:
    """Load the `train` or `test` split of `name` at the model's image size."""
    check_dataset_name(name)
    if split not in ("train", "test"):
        raise DatasetError(f"unknown split {split!r}; choose train or test")
    if name == "synthetic":
        return synthetic(synthetic_size if split == "train" else max(synthetic_size // 4, 10), seed=0 if split == "train" else 1)
    if name == "fashion-mnist":
        return _fashion_mnist_resized(Path(root) if root else FASHION_MNIST_ROOT, split, IMAGE_SHAPE[name][1:])
    return _resize(_torchvision(name, Path(root) if root else Path("data"), split, given=root is not None), IMAGE_SHAPE[name][1:])


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out validation indices drawn from the training set (never from test)."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def synthetic(n: int, seed: int = 0, num_classes: int = 10, size: int = 32) -> ImageSet:
    """Ten fixed blob templates plus noise: learnable in seconds, deterministic for a seed."""
    templates_rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:size, 0:size] / size
    templates = []
    for _ in range(num_classes):
        cy, cx = templates_rng.uniform(0.25, 0.75, 2)
        r = templates_rng.uniform(0.1, 0.25)
        templates.append(np.exp(-(((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    imgs = np.stack([templates[c] for c in labels]) + rng.normal(0, 0.05, (n, size, size))
    images = (np.clip(imgs, 0, 1) * 255).round().astype(np.uint8)[:, None]
    return ImageSet(images, labels.astype(np.int64), tuple(f"blob{i}" for i in range(num_classes)))


def cache_root() -> Path:
    """popvae's cache: $POPVAE_CACHE, else ~/.cache/popvae (resized datasets, the evaluation's classifiers)."""
    return Path(os.environ.get("POPVAE_CACHE", Path.home() / ".cache" / "popvae"))


def _fashion_mnist_resized(root: Path, split: str, hw: tuple[int, int]) -> ImageSet:
    """Fashion-MNIST at `hw`, the resized images cached once per source file (keyed by its path, size and mtime):
    resizing 60,000 images and importing torchvision for it cost a run about 1.5 s of start-up each time."""
    prefix = "train" if split == "train" else "t10k"
    source = _find(root, f"{prefix}-images-idx3-ubyte")
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{hw}".encode()).hexdigest()[:16]
    cached = cache_root() / "datasets" / f"fashion-mnist-{prefix}-{hw[0]}x{hw[1]}-{key}.npy"
    if cached.is_file():
        labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"), 1)
        try:
            images = np.load(cached)
        except (OSError, ValueError):  # a damaged cache file is rebuilt below
            images = None
        if images is not None and images.shape == (len(labels), 1, *hw) and images.dtype == np.uint8:
            return ImageSet(images, labels.astype(np.int64), FASHION_MNIST_CLASSES)
    resized = _resize(_fashion_mnist(root, split), hw)
    try:
        from popvae.models.atomic import atomic_write

        atomic_write(cached, lambda fh: np.save(fh, resized.images))
    except OSError:  # a read-only home: no cache, the next run resizes again
        pass
    return resized


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Parse one IDX file (gzipped or not): magic 0x0000 08 ndim, big-endian dims, uint8 data."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DatasetError(f"corrupt dataset file {path}: {err}") from err
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08" or raw[3] != expected_ndim:
        raise DatasetError(f"corrupt dataset file {path}: not an IDX uint8 file with {expected_ndim} dimensions")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(expected_ndim))
    offset = 4 + 4 * expected_ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DatasetError(f"corrupt dataset file {path}: expected {int(np.prod(dims))} bytes of data, found {len(raw) - offset}")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem, root / "FashionMNIST" / "raw" / stem):
        if candidate.is_file():
            return candidate
    raise DatasetError(
        f"Fashion-MNIST file {stem}(.gz) not found under {root}; install the Debian package "
        "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass --data-root"
    )


def _fashion_mnist(root: Path, split: str) -> ImageSet:
    prefix = "train" if split == "train" else "t10k"
    images = _read_idx(_find(root, f"{prefix}-images-idx3-ubyte"), 3)
    labels = _read_idx(_find(root, f"{prefix}-labels-idx1-ubyte"), 1)
    if len(images) != len(labels):
        raise DatasetError(f"corrupt Fashion-MNIST under {root}: {len(images)} images but {len(labels)} labels")
    if labels.max(initial=0) >= 10:
        raise DatasetError(f"corrupt Fashion-MNIST under {root}: label {labels.max()} out of range")
    return ImageSet(images[:, None].copy(), labels.astype(np.int64), FASHION_MNIST_CLASSES)


def _missing(name: str, root: Path, given: bool, why: str) -> DatasetError:
    """Where popvae looked, what the default means, how to get the files: popvae itself never downloads."""
    where = f"{root.absolute()}" + ("" if given else " (the default --data-root `data`, relative to the current folder)")
    return DatasetError(f"{name} not found or unreadable under {where}: {why}; popvae never downloads: put torchvision's "
                        f"{name} files there (e.g. torchvision.datasets.{_TV_CLASS[name]}(ROOT, download=True) once) or "
                        "pass --data-root FOLDER")


_TV_CLASS = {"mnist": "MNIST", "cifar10": "CIFAR10", "svhn": "SVHN", "celeba": "CelebA"}


def _torchvision(name: str, root: Path, split: str, given: bool = True) -> ImageSet:
    if not root.is_dir():  # before torchvision is imported: said at once
        raise _missing(name, root, given, "no such folder")
    import torchvision.datasets as tvd

    train = split == "train"
    try:
        if name == "mnist":
            ds = tvd.MNIST(root, train=train, download=False)
            images, labels = ds.data.numpy()[:, None], ds.targets.numpy()
        elif name == "cifar10":
            ds = tvd.CIFAR10(root, train=train, download=False)
            images, labels = ds.data.transpose(0, 3, 1, 2), np.asarray(ds.targets)
        elif name == "svhn":
            ds = tvd.SVHN(root, split=split, download=False)
            images, labels = ds.data, ds.labels
        else:  # celeba: attributes are not classes; label 0 everywhere, center-cropped faces
            ds = tvd.CelebA(root, split="train" if train else "test", target_type=[], download=False)
            images = np.stack([np.asarray(ds[i][0].crop((19, 39, 159, 179))).transpose(2, 0, 1) for i in range(len(ds))])
            labels = np.zeros(len(images))
    except (RuntimeError, OSError, AssertionError, ValueError) as err:  # torchvision asserts on bad IDX magic
        why = str(err).strip().splitlines()[0] if str(err).strip() else f"{type(err).__name__} in torchvision's reader"
        why = why.split(" You can use download=True")[0].rstrip(".")  # torchvision's advice: popvae never passes it
        raise _missing(name, root, given, why) from err
    classes = tuple(getattr(ds, "classes", None) or [str(c) for c in range(int(np.max(labels)) + 1)])
    return ImageSet(np.ascontiguousarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64), classes)


def _resize(ds: ImageSet, hw: tuple[int, int]) -> ImageSet:
    if ds.images.shape[-2:] == hw:
        return ds
    from torchvision.transforms.v2.functional import resize

    out = resize(torch.from_numpy(ds.images), list(hw), antialias=True)
    return ImageSet(out.numpy(), ds.labels, ds.classes)
