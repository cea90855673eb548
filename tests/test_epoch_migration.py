"""Epochs count from 1 in every file a user reads; a folder written when they counted from 0 (schema 1, before the
schema_version fields existed) is read as if written today: by RunFolder, the run's resume books and the service."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from popvae.cluster.service import create_app
from popvae.population import folder_io
from popvae.population.contract import SCHEMA_VERSION, migrate_best_meta
from popvae.population.run_folder import Checkpoint, RunFolder


def old_folder(root: Path) -> RunFolder:
    """A two-member run of two epochs as popvae wrote it before epochs counted from 1 (member 2 reset in the second)."""
    folder = RunFolder(root / "old")
    folder.path.mkdir(parents=True)
    member = {"strategy": "fixed", "tau": 1.0, "loss": None, "val_loss": 3.0, "patience": 0, "state": "idle"}
    folder_io.write_json(folder.status_path, {
        "run_id": "old", "state": "done", "epoch": 2, "epochs": 2, "best_member": 1, "updated_at": "2026-01-01T00:00:00",
        "members": [{**member, "index": 1, "flags": []}, {**member, "index": 2, "flags": ["nan_reset@1"]}]})
    rows = [{"epoch": e, "member": m, "strategy": "fixed", "tau": 1.0, "tau_next": 1.0, "loss_total": 2.0,
             "loss_reconstruction": 1.0, "loss_kl_z1": 0.5, "loss_kl_z2": 0.5, "val_loss": 3.0, "score": 3.0,
             "patience": 0, "is_best": m == 1, "seconds": 0.1, "event": "nan_reset" if (e, m) == (1, 2) else "",
             "node_id": "n"} for e in (0, 1) for m in (1, 2)]
    folder_io.write_rows(folder.history_path, rows)
    folder_io.write_json(folder.lineage_path, [{"epoch": e, "best": 1, "best_loss": 3.0, "received": {"2": 1},
                                             "tau_before": {"1": 1.0}, "tau_after": {"1": 1.0}} for e in (0, 1)])
    folder_io.write_json(folder.summary_path, {
        "run_id": "old", "best_member": 1, "best_tau": 1.0, "best_epoch": 1, "select_on": "val", "baseline": False,
        "test_mse": 0.02, "test_loss": 90.0, "test_images": 16, "evaluation": "how", "epochs_done": 2})
    return folder


def test_an_old_folder_reads_with_epochs_from_1(tmp_path: Path) -> None:
    folder = old_folder(tmp_path)
    assert sorted({r.epoch for r in folder.read_history()}) == [1, 2]
    assert sorted({r["epoch"] for r in folder.read_history_rows()}) == [1, 2]  # what the plots and reports take
    assert [g.epoch for g in folder.read_lineage()] == [1, 2]
    summary = folder.read_summary()
    assert (summary.best_epoch, summary.epochs_done, summary.schema_version) == (2, 2, SCHEMA_VERSION)
    status = folder.read_status()
    assert status.members[1].flags == ["nan_reset@2"] and status.schema_version == SCHEMA_VERSION
    # what popvae writes today is read as written: nothing is shifted twice
    folder.write_status(status)
    folder.write_summary(summary)
    folder.write_history(folder.read_history())
    folder.write_lineage(folder.read_lineage())
    assert json.loads(folder.summary_path.read_text())["best_epoch"] == 2 and folder.read_summary().best_epoch == 2
    assert folder.read_status().members[1].flags == ["nan_reset@2"]
    assert [g.epoch for g in folder.read_lineage()] == [1, 2] and folder.read_history()[0].epoch == 1


def test_an_old_checkpoint_and_best_model_meta_count_from_1() -> None:
    old = {"epochs_done": 2, "taus": {1: 1.0}, "patience": {1: 0}, "flags": {1: ["restarted@0", "nan_reset@1"]},
           "weights": {}, "optimizers": {}}
    assert Checkpoint.of_state(old).flags == {1: ["restarted@1", "nan_reset@2"]}
    new = Checkpoint(2, {1: 1.0}, {1: 0}, {1: ["restarted@1"]}, {}, {}).state()
    assert new["schema_version"] == SCHEMA_VERSION and Checkpoint.of_state(new).flags == {1: ["restarted@1"]}
    assert migrate_best_meta({"member": 3, "epoch": 1, "tau": 1.0})["epoch"] == 2
    assert migrate_best_meta({"member": 3, "epoch": 2, "schema_version": 2})["epoch"] == 2
    assert migrate_best_meta({"method": "vae-kl", "metrics": {}}) == {"method": "vae-kl", "metrics": {}}  # a robust job's


@pytest.mark.parametrize("path", ["/population/history?run=old", "/runs/old/lineage", "/runs/old/summary",
                                  "/population?run=old"])
def test_the_service_serves_an_old_folder_with_epochs_from_1(tmp_path: Path, path: str) -> None:
    old_folder(tmp_path)
    body = TestClient(create_app(tmp_path)).get(path).json()
    if "rows" in body:
        assert sorted({r["epoch"] for r in body["rows"]}) == [1, 2]
    elif "generations" in body:
        assert [g["epoch"] for g in body["generations"]] == [1, 2]
    elif "summary" in body:
        assert body["summary"]["best_epoch"] == 2
    else:
        assert body["members"][1]["flags"] == ["nan_reset@2"]
