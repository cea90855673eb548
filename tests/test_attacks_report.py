"""`evaluate` end to end on a tiny GS-VAE checkpoint loaded from a run folder: files written, JSON valid."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from popvae.attacks.report import EXPERIMENTS, evaluate
from popvae.models.checkpoint import save_model
from popvae.models.dataset_loading import synthetic
from popvae.models.gsvae import GSVAE, GSVAEConfig
from popvae.population.evaluation import load_evaluable
from popvae.population.training import reconstruction_mse

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
    x = synthetic(60, seed=1).images[np.sort(np.random.default_rng(0).choice(60, 24, replace=False))]  # the report's subset
    assert rec["mse_hard"] == pytest.approx(reconstruction_mse(model, x, "cpu", hard=True), rel=1e-5)
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


def test_the_first_evaluate_says_it_fits_the_cnn_and_each_report_has_its_own_folder(run_dir, tmp_path):
    """issue 21, items 2 and 9: in a log, the CNN's one-time fit is announced with its cache and shows plain progress
    lines with an ETA; the report goes to RUN/jobs/evaluation-TIME/, names the checkpoint and the quick budgets; a
    second evaluation finds the CNN cached and does not overwrite the first report."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    popvae = str(Path(sys.executable).with_name("popvae"))
    env = {**os.environ, "POPVAE_CACHE": str(tmp_path / "cache")}
    argv = [popvae, "evaluate", str(run_dir), "--experiments", "unseen", "--subset", "8", "--quick"]  # no attack: fast
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)
    assert first.returncode == 0, first.stderr
    cached = tmp_path / "cache" / "classifiers"
    assert f"fitting the purification CNN once (5 epochs over 512 training images; minutes on a CPU), cached as {cached}/" \
        in first.stderr, first.stderr
    steps = re.findall(r"fitting the purification CNN: (\d+)/(\d+) steps, ETA \d+:\d\d", first.stderr)
    assert len(steps) == 10 and steps[-1][0] == steps[-1][1], first.stderr  # a line every tenth, the last at the end
    (report,) = (run_dir / "jobs").glob("evaluation-*/report.md")
    assert f"report: {report}" in first.stdout and not (run_dir / "report.md").exists()
    md = report.read_text()
    assert f"Checkpoint: `{run_dir / 'best.pt'}`." in md and "Attack budgets: quick (`--quick`" in md
    assert "--fid-weights FILE" in md, md  # the FID line names a flag that exists

    time.sleep(1.1)  # the job folder is named by the second
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=240)
    assert second.returncode == 0 and "fitting the purification CNN" not in second.stderr, second.stderr
    assert len(list((run_dir / "jobs").glob("evaluation-*/report.md"))) == 2
