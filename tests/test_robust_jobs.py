"""Robust-AE jobs: method parsing, the job folder's contents, and failure recorded before the error propagates."""

from __future__ import annotations

import pydantic
import pytest
from PIL import Image

import popvae.population.training as training
from popvae.models.checkpoint import load_model
from popvae.population.contract import JobStatus
from popvae.population.folder_io import read_json, read_rows
from popvae.population.robust import METHODS, parse_methods, train_job
from popvae.population.run_folder import RunFolder
from popvae.population.training import reconstruction_mse
from tests.robust_data import fashion


def test_parse_methods_orders_dedupes_and_names_unknowns() -> None:
    assert parse_methods(" raven,gmm-dae ,raven,") == ["raven", "gmm-dae"]
    assert set(METHODS) >= {"gmm-dae", "gmm-dae-unimodal", "robust-gmm-dae", "vae-tc", "vae-kl-lat", "dae-mmd-lat"}
    with pytest.raises(ValueError, match="'vae-foo'"):
        parse_methods("vae-kl,vae-foo")
    with pytest.raises(ValueError, match="no method"):
        parse_methods(" , ")


def test_train_job_writes_its_folder(tmp_path) -> None:
    job = tmp_path / "jobs" / "gmm-dae"
    RunFolder(job).write_job_status(JobStatus.queued("gmm-dae", "robust", "gmm-dae", 2, "2020-01-01T00:00:00+00:00"))
    test = fashion("test", 40)
    updates: list[dict] = []
    metrics = train_job("gmm-dae", fashion("train", 256), test, job, epochs=2, batch_size=32, steps_per_epoch=3,
                        seed=1, device="cpu", on_epoch=updates.append)

    status = read_json(job / "status.json")
    assert status["state"] == "done" and status["error"] is None and status["kind"] == "robust"
    assert (status["id"], status["method"], status["epoch"], status["epochs"]) == ("gmm-dae", "gmm-dae", 2, 2)
    assert status["created_at"] == "2020-01-01T00:00:00+00:00"  # the queued record's creation time is kept
    assert [u["epoch"] for u in updates] == [1, 2] and all(u["state"] == "running" for u in updates)
    assert 0 < metrics["test_mse"] < 0.2 and status["metrics"]["test_mse"] == metrics["test_mse"]

    config = read_json(job / "config.json")
    assert config["family"] == "gmm-dae" and config["model"]["in_channels"] == 1 and config["seed"] == 1
    rows = read_rows(job / "history.parquet")
    assert [r["epoch"] for r in rows] == [1, 2] and {"total", "reconstruction", "ks", "cov", "seconds"} <= set(rows[0])

    model, meta = load_model(job / "model.pt")
    assert meta["method"] == "gmm-dae" and model.family == "gmm-dae"
    assert reconstruction_mse(model, test.images, "cpu") == pytest.approx(metrics["test_mse"], rel=1e-5)
    with Image.open(job / "reconstructions.png") as img:  # 2 named rows of 8 images: a wide strip
        assert img.size[0] > 2 * img.size[1] > 0


def test_invalid_config_fails_the_job_and_reraises(tmp_path) -> None:
    with pytest.raises(pydantic.ValidationError):
        train_job("vae-kl", fashion("train", 64), fashion("test", 8), tmp_path / "bad", epochs=1, batch_size=16,
                  steps_per_epoch=1, seed=0, device="cpu", overrides={"latent_dim": 0})
    status = read_json(tmp_path / "bad" / "status.json")
    assert status["state"] == "failed" and "latent_dim" in status["error"]


def test_failure_mid_training_keeps_progress_and_records_error(tmp_path, monkeypatch) -> None:
    calls = {"n": 0}
    real_step = training.train_step

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise RuntimeError("worker lost its device")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", flaky)
    with pytest.raises(RuntimeError, match="lost its device"):
        train_job("dae-swt", fashion("train", 64), fashion("test", 8), tmp_path / "j", epochs=3, batch_size=16,
                  steps_per_epoch=2, seed=0, device="cpu")
    status = read_json(tmp_path / "j" / "status.json")
    assert status["state"] == "failed" and status["error"] == "RuntimeError: worker lost its device"
    assert status["epoch"] == 1 and len(read_rows(tmp_path / "j" / "history.parquet")) == 1
    assert not (tmp_path / "j" / "model.pt").exists()
