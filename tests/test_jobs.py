"""Robust-AE and evaluation jobs on the worker pool (real Ray)."""

from __future__ import annotations

import json

from popvae.models.dataset_loading import synthetic
from popvae.population import folder_io
from popvae.population.jobs import run_jobs


def job(tmp_path, method, **over):
    return {"id": method, "kind": "robust", "method": method, "dir": str(tmp_path / "jobs" / method), "epochs": 2,
            "batch_size": 32, "steps_per_epoch": 3, "seed": 0, **over}


def driver_put(*args, **kwargs):
    raise AssertionError("the driver called ray.put")


def test_jobs_run_side_by_side_and_a_failing_one_does_not_stop_the_others(ray_session, tmp_path, monkeypatch):
    monkeypatch.setenv("POPVAE_CACHE", str(tmp_path / "cache"))
    # The splits are a data holder's: a driver that owns stored objects can be ended with exit 1 by Ray itself when a
    # SIGTERM to the whole process group takes the raylet down first.
    monkeypatch.setattr(ray_session, "put", driver_put)
    train, test = synthetic(256, seed=0), synthetic(64, seed=1)
    seen = []
    jobs = [job(tmp_path, "gmm-dae"), job(tmp_path, "no-such-method"), job(tmp_path, "vae-kl")]
    results = run_jobs(jobs, train, test, workers=2, on_done=lambda j, r: seen.append(j["id"]))
    assert results["gmm-dae"]["state"] == "done" and results["vae-kl"]["state"] == "done"
    assert results["no-such-method"]["state"] == "failed" and "no-such-method" in results["no-such-method"]["error"]
    assert sorted(seen) == ["gmm-dae", "no-such-method", "vae-kl"]
    for method in ("gmm-dae", "vae-kl"):
        folder = tmp_path / "jobs" / method
        status = folder_io.read_json(folder / "status.json")
        assert status["state"] == "done" and status["epoch"] == 2
        assert 0 < status["metrics"]["test_mse"] < 1
        assert len(folder_io.read_rows(folder / "history.parquet")) == 2
        assert (folder / "model.pt").exists() and (folder / "reconstructions.png").exists()
    failed = folder_io.read_json(tmp_path / "jobs" / "no-such-method" / "status.json")
    assert failed["state"] == "failed" and "no-such-method" in failed["error"]

    # an evaluation is a job on the same pool, reading the model a robust job wrote
    evaluation = {"id": "evaluation-1", "kind": "evaluation", "dir": str(tmp_path / "jobs" / "evaluation-1"),
                  "checkpoint": str(tmp_path / "jobs" / "gmm-dae" / "model.pt"), "out_dir": str(tmp_path / "jobs" / "gmm-dae"),
                  "experiments": ["unseen"], "subset": 32, "seed": 0, "held_out": []}
    result = run_jobs([evaluation], train, test, workers=1)["evaluation-1"]
    assert result["state"] == "done", result
    report = json.loads((tmp_path / "jobs" / "gmm-dae" / "report.json").read_text())
    assert report["meta"]["test_images"] == 32 and 0 < report["reconstruction"]["mse"] < 1
    assert folder_io.read_json(tmp_path / "jobs" / "evaluation-1" / "status.json")["state"] == "done"


def test_jobs_fail_with_the_reason_when_no_worker_finds_a_slot(ray_session, tmp_path, all_cpus_taken):
    train, test = synthetic(64, seed=0), synthetic(32, seed=1)
    seen = []
    results = run_jobs([job(tmp_path, "vae-kl"), job(tmp_path, "dae-mmd")], train, test, workers=2,
                       on_done=lambda j, r: seen.append(j["id"]), placement_timeout_s=2.0)
    assert sorted(seen) == ["dae-mmd", "vae-kl"]
    for method in ("vae-kl", "dae-mmd"):
        assert results[method]["state"] == "failed"
        assert results[method]["error"].startswith("no worker found a slot on the cluster within 2 s")
        assert folder_io.read_json(tmp_path / "jobs" / method / "status.json")["state"] == "failed"
