"""Fashion-MNIST resized once: later loads read the cached images (no resize, no torchvision import at start-up)."""

from __future__ import annotations

import numpy as np
import pytest

from popvae.models import dataset_loading


def test_the_resized_split_is_cached_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POPVAE_CACHE", str(tmp_path))
    first = dataset_loading.load_split("fashion-mnist", "test")
    (cached,) = (tmp_path / "datasets").glob("fashion-mnist-t10k-32x32-*.npy")
    assert np.array_equal(np.load(cached), first.images)

    calls = []
    monkeypatch.setattr(dataset_loading, "_resize", lambda *a: calls.append(a) or pytest.fail("resized again"))
    again = dataset_loading.load_split("fashion-mnist", "test")
    assert np.array_equal(again.images, first.images) and np.array_equal(again.labels, first.labels)
    assert again.classes == first.classes and not calls

    monkeypatch.undo()
    monkeypatch.setenv("POPVAE_CACHE", str(tmp_path))
    cached.write_bytes(b"not an array")
    rebuilt = dataset_loading.load_split("fashion-mnist", "test")
    assert np.array_equal(rebuilt.images, first.images) and np.array_equal(np.load(cached), first.images)
