"""The robust-autoencoder families: each method learns on Fashion-MNIST, the adversarial hooks do what they claim."""

from __future__ import annotations

import pydantic
import pytest
import torch

from popvae.models.checkpoint import load_model, save_model
from popvae.models.dataset_loading import to_float
from popvae.models.protocol import AutoEncoder
from popvae.models.registry import build
from popvae.population.robust import METHODS, method_config, train_job
from popvae.population.training import craft_adversarial, latent_adversarial_rounds
from tests.robust_data import fashion


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_loss_falls_on_fashion_mnist(method: str, tmp_path) -> None:
    seen: list[float] = []
    train_job(method, fashion("train", 512), fashion("test", 32), tmp_path / method, epochs=3, batch_size=32,
              steps_per_epoch=6, seed=0, device="cpu", on_epoch=lambda s: seen.append(s["metrics"]["total"]))
    assert len(seen) == 3 and seen[-1] < 0.985 * seen[0], seen  # RAVEN's RAdam warms up slowly: a small but sure fall


def _batch(n: int = 32) -> torch.Tensor:
    return to_float(fashion("test", n).images)


@pytest.mark.parametrize("craft", ["fgsm", "pgd"])
def test_robust_crafting_stays_in_budget_and_beats_random_noise(craft: str) -> None:
    torch.manual_seed(0)
    model = build("robust-gmm-dae", {"craft": craft, "pgd_steps": 3})
    x = _batch()
    x_adv = craft_adversarial(model, x, torch.Generator().manual_seed(0))
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    noise = (x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.3).clamp(0, 1)
    objective = model.adversarial_objective(x)
    with torch.no_grad():
        assert objective(x_adv).mean() > 1.5 * objective(noise).mean()
    assert model.training  # crafting ran in eval mode and handed training mode back


def test_robust_gmm_dae_architecture_follows_channels_and_requires_x_adv() -> None:
    assert isinstance(build("robust-gmm-dae", {}).encoder[0], torch.nn.Flatten)  # MLP 4x200 for 1-channel sets
    conv = build("robust-gmm-dae", {"in_channels": 3})
    assert isinstance(conv.encoder[0][0], torch.nn.Conv2d)
    assert conv.reconstruct(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match="x_adv"):
        build("robust-gmm-dae", {}).loss(_batch(4))


def test_latent_adversarial_training_moves_the_decoder_only_in_the_steps_precision() -> None:
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        _, config = method_config("dae-mmd-lat", (1, 32, 32), {"adv_steps": 3})
        model = build("dae", config)
        x = _batch()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        losses[precision] = latent_adversarial_rounds(model, x, torch.Generator().manual_seed(0), precision)
        after = model.state_dict()
        assert losses[precision] > 0
        assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("encoder."))
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
        assert all(p.dtype == torch.float32 for p in model.parameters())
    # The same draws, forwards under bf16 autocast: a different value, within bf16's rounding of it.
    assert losses["bf16"] != losses["fp32"] and losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


@pytest.mark.parametrize(("family", "config", "message"), [
    ("dae", {"regulariser": "kl"}, "regulariser"),
    ("vae", {"regulariser": "mmd", "tc": True}, "tc"),
    ("gmm-dae", {"modes": 12, "latent_dim": 10}, "modes"),
    ("raven", {"latent": 3}, "latent"),
    ("vae", {"image_size": 36}, "divisible"),
])
def test_invalid_configs_are_rejected(family: str, config: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        build(family, config)


@pytest.mark.parametrize("method", ["gmm-dae", "robust-gmm-dae", "raven", "vae-tc", "dae-swt"])
def test_checkpoint_round_trip_and_protocol(method: str, tmp_path) -> None:
    family, config = method_config(method, (1, 32, 32))
    model = build(family, config).eval()
    assert isinstance(model, AutoEncoder) and model.stochastic == (family in ("raven", "vae"))
    save_model(tmp_path / "m.pt", model)
    loaded, _ = load_model(tmp_path / "m.pt")
    x = _batch(4)
    with torch.no_grad():
        assert torch.equal(loaded.reconstruct(x), model.reconstruct(x))
        assert loaded.encode(x).shape == (4, config.latent_dim)


def test_gmm_dae_latent_noise_is_for_training_only() -> None:
    model = build("gmm-dae", {"z_noise": 0.5})
    x = _batch(8)
    model.train()
    assert model.loss(x)["reconstruction"] != model.loss(x)["reconstruction"]  # noisy z before decoding
    model.eval()
    assert model.loss(x)["reconstruction"] == model.loss(x)["reconstruction"]
