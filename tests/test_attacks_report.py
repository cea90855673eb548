"""`evaluate` end to end on a tiny GS-VAE checkpoint loaded from a run folder: files written, JSON valid."""

from __future__ import annotations

import json
import re

import pytest
import torch

from popvae.attacks.report import EXPERIMENTS, evaluate
from popvae.models.checkpoint import save_model
from popvae.models.dataset_loading import synthetic
from popvae.models.gsvae import GSVAE, GSVAEConfig
from popvae.population.evaluation import load_evaluable

QUICK = {
    "purification": {"eps_grid": (0.1, 0.3), "pgd_steps": 2, "eot_samples": 2},
    "latent": {"budgets": (1.0, 3.0), "n_images": 3, "trials": 2, "steps": 2},
    "max-damage": {"budgets": (1.0,), "n_images": 3, "trials": 2, "steps": 2},
    "latent-pgd": {"eps_grid": (0.0, 1.0), "steps": 2},
    "patches": {"shapes": ("circle",), "sizes": (8,)},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = GSVAE(GSVAEConfig(widths=(8, 16), z1_vars=4, z1_categories=4, z2_vars=2, z2_categories=4))
    save_model(folder / "best.pt", model, {"tau": 0.7, "member": 2})
    (folder / "config.json").write_text(json.dumps({"dataset": "synthetic", "exclude_classes": [3]}))
    return folder


def test_load_evaluable_accepts_folder_and_file(run_dir, tmp_path):
    model, meta = load_evaluable(run_dir)
    assert model.tau == 0.7 and not model.training and meta["member"] == 2
    assert meta["run_config"]["exclude_classes"] == [3] and meta["checkpoint"].endswith("best.pt")
    assert load_evaluable(run_dir / "best.pt")[1]["checkpoint"] == meta["checkpoint"]
    with pytest.raises(FileNotFoundError):
        load_evaluable(tmp_path)


def test_evaluate_writes_report(run_dir, tmp_path):
    model, meta = load_evaluable(run_dir)
    out = tmp_path / "report"
    report = evaluate(model, synthetic(200, seed=0), synthetic(60, seed=1), list(EXPERIMENTS), subset=24, out_dir=out, seed=0,
                      device="cpu", progress=False, held_out=meta["run_config"]["exclude_classes"], cache_dir=tmp_path / "cache",
                      settings=QUICK)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report and set(EXPERIMENTS) <= set(report)
    assert report["meta"]["test_images"] == 24 and report["meta"]["stochastic"] is True
    rec = report["reconstruction"]
    assert 0 <= rec["mse"] <= 1 and rec["frechet_distance"]["name"] == "Fréchet distance (popvae CNN features)"
    assert "unavailable" in rec["fid"]
    assert report["purification"]["setting"]["eot_samples"] == 2 and report["unseen"]["held_out"] == [3]
    assert report["latent-pgd"]["untargeted"]["rows"][0]["psnr"] == "inf"
    md = (out / "report.md").read_text()
    for title in ("Purification", "Latent-space attack", "Maximum damage", "Latent PGD", "Patch anomaly", "Unseen classes"):
        assert title in md
    for png in ("purification_accuracy.png", "latent_pgd_distortion.png", "latent_ms_ssim.png", "samples_purification.png"):
        assert (out / png).stat().st_size > 1000
    linked = re.findall(r"\]\(([^)]+\.png)\)", md)  # report.md links and explains every picture it wrote
    assert sorted(linked) == sorted(p.name for p in out.glob("*.png"))
    with pytest.raises(ValueError):
        evaluate(model, synthetic(20), synthetic(20), ["nope"], None, out, 0, "cpu", False)
