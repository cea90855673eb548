"""The status service over folders that real runs wrote (done, stopped early, failed to place, robust jobs, an
evaluation), not hand-made ones: every state a run can end in must be served, parsed by the same contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import cpus_taken
from fastapi.testclient import TestClient

from popvae.cluster.service import create_app
from popvae.models.checkpoint import load_model
from popvae.models.dataset_loading import synthetic
from popvae.population import folder_io
from popvae.population.config import parse_config
from popvae.population.contract import SCHEMA_VERSION, HistoryRow, JobStatus, LineageEntry, RunStatus
from popvae.population.driver import load_run_data, run_population
from popvae.population.evaluation import run_evaluation_job
from popvae.population.jobs import run_jobs
from popvae.population.run_folder import RunFolder

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}


def small_config(**over):
    base = {"dataset": "synthetic", "synthetic_size": 256, "members": 3, "epochs": 2, "batch_size": 16,
            "steps_per_epoch": 4, "model": SMALL_MODEL, "seed": 3, "pack_size": 4}  # one worker process
    return parse_config({**base, **over})


@pytest.fixture(scope="session")
def real_runs(ray_session, tmp_path_factory) -> Path:
    """Five folders written by the real code, once per test session."""
    root = tmp_path_factory.mktemp("real-runs")
    cfg = small_config()
    data = load_run_data(cfg)
    run_population(cfg, root / "done", data)
    run_population(cfg, root / "stopped", data, on_generation=lambda entry, status: True)  # stop after the first

    with cpus_taken(ray_session), pytest.raises(Exception, match="found no slot"):  # "failed": no slot for members
        run_population(small_config(members=2, placement_timeout_s=1.0), root / "failed", data)

    robust = root / "robust"
    folder_io.write_json(robust / "config.json", {"kind": "robust", "methods": ["vae-kl", "no-such-method"]})
    jobs = [{"id": m, "kind": "robust", "method": m, "dir": str(robust / "jobs" / m), "epochs": 1, "batch_size": 16,
             "steps_per_epoch": 2, "seed": 0} for m in ("vae-kl", "no-such-method")]
    run_jobs(jobs, synthetic(128, seed=0), synthetic(32, seed=1), workers=1)

    evaluation = {"id": "evaluation-1", "kind": "evaluation", "dir": str(root / "done" / "jobs" / "evaluation-1"),
                  "checkpoint": str(root / "done" / "best.pt"), "out_dir": str(root / "done" / "evaluation"),
                  "experiments": ["unseen"], "subset": 16, "seed": 0, "held_out": []}
    run_evaluation_job(evaluation, data.train, data.test, "cpu")
    return root


@pytest.fixture(scope="module")
def client(real_runs: Path) -> TestClient:
    return TestClient(create_app(real_runs), raise_server_exceptions=False)


def get(client: TestClient, path: str, **params) -> dict:
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_file_a_real_run_wrote_parses_with_the_contract(real_runs: Path) -> None:
    for run in ("done", "stopped", "failed"):
        RunStatus.model_validate(folder_io.read_json(real_runs / run / "status.json"))
    for run in ("done", "stopped"):
        rows = [HistoryRow.model_validate(r) for r in folder_io.read_rows(real_runs / run / "history.parquet")]
        assert all(r.score is not None for r in rows)
        [LineageEntry.model_validate(g) for g in folder_io.read_json(real_runs / run / "lineage.json")]
    for job in (real_runs / "robust" / "jobs").iterdir():
        JobStatus.model_validate(folder_io.read_json(job / "status.json"))


def test_runs_lists_every_real_run_with_its_state(client: TestClient) -> None:
    states = {r["run_id"]: r["state"] for r in get(client, "/runs")["runs"]}
    assert states == {"done": "done", "stopped": "stopped", "failed": "failed", "robust": "failed"}  # its jobs' state


def test_a_stopped_run_is_served(client: TestClient) -> None:
    body = get(client, "/population", run="stopped")
    assert (body["state"], body["epoch"], body["epochs"], body["source"]) == ("stopped", 1, 2, "run_folder")
    assert [m["state"] for m in body["members"]] == ["idle"] * 3 and body["best_member"] in (1, 2, 3)
    assert get(client, "/population/history", run="stopped")["total"] == 3


def test_a_done_and_a_failed_run_are_served(client: TestClient) -> None:
    done = get(client, "/population", run="done")
    assert done["state"] == "done" and done["epoch"] == 2 and all(m["loss"] for m in done["members"])
    history = get(client, "/population/history", run="done", member=2)
    assert history["total"] == 2 and {r["strategy"] for r in history["rows"]} == {"linear_increase"}
    failed = get(client, "/population", run="failed")
    assert failed["state"] == "failed" and failed["epoch"] == 0 and len(failed["members"]) == 2
    assert get(client, "/population/history", run="failed")["total"] == 0


def test_robust_and_evaluation_jobs_are_served(client: TestClient) -> None:
    jobs = {j["id"]: j for j in get(client, "/jobs", run="robust")["jobs"]}
    assert jobs["vae-kl"]["state"] == "done" and 0 < jobs["vae-kl"]["metrics"]["test_mse"] < 1
    assert jobs["no-such-method"]["state"] == "failed" and "no-such-method" in jobs["no-such-method"]["error"]
    assert get(client, "/jobs/vae-kl", run="robust")["epoch"] == 1
    evaluation = get(client, "/jobs/evaluation-1", run="done")
    assert (evaluation["kind"], evaluation["state"], evaluation["epoch"]) == ("evaluation", "done", 1)
    assert get(client, "/jobs/evaluation-1")["id"] == "evaluation-1"  # found without naming the run
    assert client.get("/population", params={"run": "robust"}).status_code == 404


def test_every_epoch_a_real_run_wrote_counts_from_1(real_runs: Path) -> None:
    """history, lineage, summary.json's best_epoch, best.pt's meta and progress.csv: the first epoch is 1."""
    done = RunFolder(real_runs / "done")
    assert sorted({r["epoch"] for r in folder_io.read_rows(done.history_path)}) == [1, 2]
    assert [g["epoch"] for g in folder_io.read_json(done.lineage_path)] == [1, 2]
    raw = folder_io.read_json(done.summary_path)
    assert raw["epochs_done"] == 2 and 1 <= raw["best_epoch"] <= 2 and raw["schema_version"] == SCHEMA_VERSION
    _, meta = load_model(done.best_path)
    assert meta["epoch"] == 2 and meta["schema_version"] == SCHEMA_VERSION  # best.pt after the last epoch
    assert (done.path / "progress.csv").read_text().splitlines()[1].startswith("1,")
    assert [g["epoch"] for g in folder_io.read_json(RunFolder(real_runs / "stopped").lineage_path)] == [1]
