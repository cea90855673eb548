"""models/: datasets, the GS-VAE and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from popvae.models.checkpoint import load_model, save_model
from popvae.models.dataset_loading import FASHION_MNIST_ROOT, DatasetError, load_split, synthetic, train_val_split
from popvae.models.gumbel import bce_per_image, kl_to_uniform
from popvae.models.registry import build

SMALL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}


@pytest.mark.skipif(not FASHION_MNIST_ROOT.exists(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_is_read_from_the_idx_files_and_resized():
    test = load_split("fashion-mnist", "test")
    assert test.images.shape == (10000, 1, 32, 32) and test.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist() == [1000] * 10
    assert test.classes[9] == "Ankle boot" and 50 < test.images.mean() < 100


def test_synthetic_is_deterministic_and_splits_are_disjoint():
    a, b = synthetic(64, seed=5), synthetic(64, seed=5)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    train, val = train_val_split(100, 0.2, seed=1)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    kept = a.without_classes([0, 1])
    assert len(kept) > 0 and not np.isin(kept.labels, [0, 1]).any()


def test_unknown_dataset_and_split_are_clear_errors():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_split("imagenet", "train")
    with pytest.raises(DatasetError, match="unknown split"):
        load_split("synthetic", "validation")


def test_gsvae_loss_parts_and_shapes():
    model = build("gsvae", SMALL)
    x = torch.rand(5, 1, 32, 32)
    parts = model.loss(x)
    assert set(parts) == {"total", "reconstruction", "kl_z1", "kl_z2"}
    assert torch.allclose(parts["total"], parts["reconstruction"] + parts["kl_z1"] + parts["kl_z2"])
    assert model.encode(x).shape == (5, 4 * 4 + 2 * 4)
    assert model.reconstruct(x).shape == x.shape


def test_kl_to_uniform_is_zero_for_uniform_and_log_k_for_one_hot():
    assert torch.allclose(kl_to_uniform(torch.zeros(2, 3, 8)), torch.zeros(2))
    one_hot = torch.full((1, 3, 8), -1e4)
    one_hot[..., 0] = 0
    assert kl_to_uniform(one_hot).item() == pytest.approx(3 * math.log(8), rel=1e-4)


def test_bce_is_finite_at_saturation_and_still_pushes_a_wrongly_saturated_pixel_back():
    recon = torch.tensor([[1.0, 0.9999999, 0.3]], requires_grad=True)  # pixels 0-1 saturated on the wrong side
    loss = bce_per_image(recon, torch.zeros(1, 3))
    loss.sum().backward()
    assert torch.isfinite(loss).all() and (recon.grad > 0).all()
    assert torch.isnan(bce_per_image(torch.tensor([[float("nan")]]), torch.zeros(1, 1))).all()  # divergence stays visible


def test_gumbel_noise_only_in_training_unless_asked():
    model = build("gsvae", SMALL)
    x = torch.rand(4, 1, 32, 32)
    model.eval()
    assert torch.equal(model.reconstruct(x), model.reconstruct(x))
    assert torch.allclose(model.decode(model.encode(x)), model.reconstruct(x))
    assert not torch.equal(model.reconstruct(x, sample=True), model.reconstruct(x, sample=True))
    model.train()
    assert not torch.equal(model(x)["recon"], model(x)["recon"])


def test_checkpoint_round_trip_keeps_weights_config_and_tau(tmp_path):
    model = build("gsvae", SMALL)
    save_model(tmp_path / "m.pt", model, {"tau": 0.37})
    loaded, meta = load_model(tmp_path / "m.pt")
    assert loaded.tau == pytest.approx(0.37) and meta["tau"] == pytest.approx(0.37)
    assert loaded.config == model.config and not loaded.training
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.sha256"]  # its manifest, no temp files
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pt is damaged"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "none.pt")
