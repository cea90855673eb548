"""Each experiment end to end on synthetic data with a tiny model: keys present, numbers in range."""

from __future__ import annotations

import inspect

import pytest
import torch
from attacks_toys import data, tensors, trained_ae

import popvae.attacks.patches as patches
from popvae.attacks.classifier import BasicCNN, LatentMLP, fit
from popvae.attacks.encoder_attacks import latent_attack, max_damage
from popvae.attacks.latent_space_pgd import latent_pgd
from popvae.attacks.purification import purification
from popvae.attacks.unseen import unseen_classes


@pytest.fixture(scope="module")
def test_xy():
    return tensors(data(48, seed=5))


def _in_unit(ci: dict) -> bool:
    return 0.0 <= ci["ci95"][0] <= ci["accuracy"] <= ci["ci95"][1] <= 1.0


@pytest.mark.parametrize("stochastic", [False, True])
def test_purification_end_to_end(test_xy, stochastic):
    x, y = test_xy
    train_x, train_y = tensors(data())
    cnn = fit(BasicCNN(), train_x, train_y, epochs=2, batch_size=64)
    ae = trained_ae(stochastic)
    res = purification(ae, cnn, x, y, eps_grid=(0.1, 0.3), pgd_steps=3, eot_samples=2, batch_size=32)
    assert res["setting"]["purifier_noise"] is stochastic and res["setting"]["eot_samples"] == (2 if stochastic else 1)
    assert _in_unit(res["clean"]["cnn_alone"]) and _in_unit(res["clean"]["purified"])
    for attack in ("fgsm", "pgd"):
        assert [r["eps"] for r in res[attack]] == [0.1, 0.3]
        for row in res[attack]:
            assert all(_in_unit(row[s]) for s in ("cnn_alone", "non_adaptive", "adaptive", "worst_case"))
            assert row["worst_case"]["correct"] <= min(row["non_adaptive"]["correct"], row["adaptive"]["correct"])
    for i, worst in enumerate(res["worst_case_all"]):
        assert worst["accuracy"]["correct"] <= min(res[a][i]["worst_case"]["correct"] for a in ("fgsm", "pgd"))
    assert res["setting"]["adaptive_gradient_nonzero"] == 1.0  # the toy purifier is differentiable everywhere
    assert res["images"]["clean"].shape == (8, 1, 32, 32)


def test_latent_and_max_damage(test_xy):
    x, y = test_xy
    ae = trained_ae()
    mlp = fit(LatentMLP(8), ae.encode(tensors(data())[0]).detach(), tensors(data())[1], epochs=5)
    lat = latent_attack(ae, x, y, mlp, budgets=(1.0, 5.0), n_images=4, trials=3, steps=20)
    assert lat["setting"]["n_images"] == 4 and lat["setting"]["trials"] == 3
    small, big = lat["rows"]
    for row in lat["rows"]:
        for key in ("ms_ssim_target_vs_adv_rec", "ms_ssim_input_vs_adv_input", "ms_ssim_clean_rec_vs_adv_rec"):
            assert 0.0 <= row[key]["mean"] <= 1.0 and row[key]["std"] >= 0.0
        assert row["perturbation_l2"]["mean"] <= row["budget_l2"] + 1e-4
        worst = row["latent_mlp_accuracy_worst_case"]
        assert _in_unit(worst) and worst["n"] == 4  # one entry per image, not per trial
        assert worst["accuracy"] <= row["latent_mlp_accuracy_per_trial"] <= 1.0
        assert 0.0 <= row["latent_mlp_target_hit_rate_per_trial"] <= 1.0
    assert lat["latent_mlp_clean_accuracy"]["n"] == 4
    assert big["latent_distance_to_target"]["mean"] < small["latent_distance_to_target"]["mean"]
    dmg = max_damage(ae, x, y, budgets=(1.0, 5.0), n_images=4, trials=2, steps=5)
    assert "ms_ssim_target_vs_adv_rec" not in dmg["rows"][0]
    assert dmg["rows"][1]["ms_ssim_clean_rec_vs_adv_rec"]["mean"] < dmg["rows"][0]["ms_ssim_clean_rec_vs_adv_rec"]["mean"]


def test_latent_pgd_curves(test_xy):
    x, _ = test_xy
    res = latent_pgd(trained_ae(), x, eps_grid=(0.0, 1.0, 4.0), steps=5)
    assert res["lpips"] == {"unavailable": "no LPIPS weights given"}
    for mode in ("untargeted", "targeted_black"):
        rows = res[mode]["rows"]
        assert rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["psnr"] == float("inf")
        assert rows[-1]["ssim"] < rows[0]["ssim"]
        assert isinstance(res[mode]["aaddc_ssim"], float)
    assert res["targeted_black"]["rows"][-1]["mse_to_black"] < res["targeted_black"]["rows"][0]["mse_to_black"]


def test_patch_threshold_never_sees_test(test_xy, monkeypatch):
    assert list(inspect.signature(patches.choose_threshold).parameters) == ["scores", "is_anomaly"]
    val_x, test_x = tensors(data(40, seed=6))[0], test_xy[0]
    seen_sizes = []
    real = patches.choose_threshold

    def spy(scores, is_anomaly):
        seen_sizes.append(len(scores))
        return real(scores, is_anomaly)

    monkeypatch.setattr(patches, "choose_threshold", spy)
    res = patches.patch_detection(trained_ae(), val_x, test_x, shapes=("square", "cross"), sizes=(8, 12))
    assert seen_sizes == [len(val_x)] * 4
    for row in res["rows"]:
        assert 0.0 <= row["test"]["roc_auc"] <= 1.0 and _in_unit(row["test"]["accuracy"])
    assert max(r["test"]["roc_auc"] for r in res["rows"]) > 0.9  # a 12px white square is easy to see


def test_choose_threshold_separates():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.7, 0.8])
    labels = torch.tensor([False, False, False, True, True])
    assert patches.choose_threshold(scores, labels) == pytest.approx(0.5)


def test_patch_shapes():
    assert patches.patch_mask("square", 4).sum() == 16
    circle, cross = patches.patch_mask("circle", 8), patches.patch_mask("cross", 12)
    assert 0 < circle.sum() < 64 and not circle[0, 0] and circle[4, 4]
    assert cross[6, 0] and cross[0, 6] and not cross[0, 0]


def test_unseen_classes(test_xy):
    x, y = test_xy
    res = unseen_classes(trained_ae(), x, y, held_out=[0, 1])
    assert res["unseen"]["n"] == int((y <= 1).sum()) and res["seen"]["n"] + res["unseen"]["n"] == len(y)
    assert 0 <= res["seen"]["mse"] <= 1 and -1 <= res["seen"]["ssim"] <= 1
    assert sum(v["held_out"] for v in res["per_class"].values()) == len(set(y.tolist()) & {0, 1})
