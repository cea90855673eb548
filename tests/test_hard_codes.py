"""Hard codes (models/gsvae.py): a GS-VAE's reconstruction from one-hot argmax codes, the learning curve a pack
records every generation (on validation images only), and `select_on: val_hard`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from popvae.models.configs import GSVAEConfig
from popvae.models.dataset_loading import synthetic, to_float
from popvae.models.registry import build
from popvae.population import training
from popvae.population.config import RunConfig
from popvae.population.pack import make_pack

SMALL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}
TAUS = {1: 1.0, 2: 0.7, 3: 5.0}


def _by_hand_one_hot(logits: torch.Tensor) -> torch.Tensor:
    """One-hot of the argmax, built element by element."""
    b, v, k = logits.shape
    out = torch.zeros(b, v, k)
    for i in range(b):
        for j in range(v):
            out[i, j, int(np.argmax(logits[i, j].numpy()))] = 1.0
    return out.flatten(1)


def test_hard_mse_is_the_mse_of_a_decoder_fed_one_hot_codes_built_by_hand():
    torch.manual_seed(0)
    model = build("gsvae", GSVAEConfig(in_channels=1, image_size=32, **SMALL)).eval()
    model.tau = 3.0
    images = synthetic(40, seed=2).images
    x = to_float(images, "cpu")
    with torch.no_grad():
        z = torch.cat([_by_hand_one_hot(lg) for lg in model.logits(x)], 1)
        by_hand = float((model.decode(z) - x).pow(2).mean())
        relaxed = float((model.reconstruct(x) - x).pow(2).mean())
        assert torch.equal(model.hard_codes(x), z)
    assert training.reconstruction_mse(model, images, "cpu", batch_size=16, hard=True) == pytest.approx(by_hand, rel=1e-6)
    assert training.reconstruction_mse(model, images, "cpu", batch_size=16) == pytest.approx(relaxed, rel=1e-6)
    assert abs(by_hand - relaxed) > 1e-6  # at tau 3 the relaxed code is not the hard one


def _setup(select_on: str, mode: str, curve_subset: int = 20):
    config = RunConfig.model_validate({
        "dataset": "synthetic", "members": 3, "batch_size": 16, "steps_per_epoch": 3, "device": "cpu",
        "select_on": select_on, "precision": "fp32", "pack_mode": mode, "curve_subset": curve_subset, "model": SMALL})
    val = synthetic(48, seed=1).images
    return config, make_pack([1, 2, 3], config, synthetic(128, seed=0).images, val, threads=1), val


def _member_model(pack, i: int, config: RunConfig, tau: float) -> torch.nn.Module:
    model = build("gsvae", config.model)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in pack.get_weights(i).items()})
    model.tau = tau
    return model


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_the_curve_is_each_members_mse_on_the_first_validation_images(mode):
    config, pack, val = _setup("val", mode)
    results = pack.train_epoch(0, TAUS)
    for i, r in results.items():
        model = _member_model(pack, i, config, TAUS[i])
        assert r["steps"] == 3
        assert r["curve_mse"] == pytest.approx(training.reconstruction_mse(model, val[:20], "cpu"), rel=1e-5)
        assert r["curve_mse_hard"] == pytest.approx(training.reconstruction_mse(model, val[:20], "cpu", hard=True), rel=1e-5)
        assert r["curve_mse"] != pytest.approx(training.reconstruction_mse(model, val, "cpu"), rel=1e-6)  # the subset only


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_select_on_val_hard_scores_the_validation_loss_with_hard_codes(mode):
    config, pack, val = _setup("val_hard", mode)
    results = pack.train_epoch(0, TAUS)
    for i, r in results.items():
        model = _member_model(pack, i, config, TAUS[i])
        hard = training.evaluate(model, val, 256, "cpu", hard=True)["total"]
        assert r["val_loss"] == pytest.approx(hard, rel=1e-5)
        assert r["val_loss"] != pytest.approx(training.evaluate(model, val, 256, "cpu")["total"], rel=1e-6)
    assert all(math.isfinite(r["curve_mse_hard"]) for r in results.values())
