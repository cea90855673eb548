"""The run-folder contract: importable without torch or Ray, tolerant of older folders, one job-status path."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from pydantic import ValidationError

from popvae.population.contract import (
    NAMESPACE,
    HistoryRow,
    JobStatus,
    LineageEntry,
    RunStatus,
    coordinator_name,
    dump,
    run_id_of,
)


def test_contract_imports_neither_torch_nor_ray() -> None:
    code = ("import sys, popvae.population.contract; "
            "print(sorted(m for m in ('torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_coordinator_naming_round_trips() -> None:
    assert NAMESPACE == "popvae" and coordinator_name("run-1") == "coordinator:run-1"
    assert run_id_of(coordinator_name("run-1")) == "run-1" and run_id_of("some-other-actor") is None


# A status.json as the coordinator wrote it before the contract existed (no "stopped" state then).
OLD_STATUS = {
    "run_id": "r", "state": "done", "epoch": 2, "epochs": 2, "generation_seconds": 0.5, "best_member": 2,
    "updated_at": "2024-01-01T00:00:00+00:00",
    "members": [{"index": 1, "strategy": "fixed", "tau": 1.0, "loss": None, "val_loss": None, "patience": 0,
                 "state": "idle", "node_id": None, "flags": []},
                {"index": 2, "strategy": "linear_increase", "tau": 1.1,
                 "loss": {"total": 3.0, "reconstruction": 2.0, "kl_z1": 0.5, "kl_z2": None}, "val_loss": 3.5,
                 "patience": 1, "state": "failed", "node_id": "n", "flags": ["dropped@1"], "added_later": 1}],
}


def test_old_status_parses_and_every_run_state_is_accepted() -> None:
    assert RunStatus.model_validate(OLD_STATUS).members[1].loss.kl_z2 is None
    for state in ("running", "done", "stopped", "failed"):
        assert RunStatus.model_validate({**OLD_STATUS, "state": state}).state == state
    with pytest.raises(ValidationError):
        RunStatus.model_validate({**OLD_STATUS, "state": "paused"})


def test_history_row_without_score_parses_and_dump_writes_null_for_nan() -> None:
    row = {"epoch": 0, "member": 1, "strategy": "fixed", "tau": 1.0, "tau_next": 1.0, "loss_total": math.nan,
           "loss_reconstruction": 1.0, "loss_kl_z1": 0.1, "loss_kl_z2": 0.1, "val_loss": math.nan, "patience": 0,
           "is_best": True, "seconds": 0.1, "event": "nan_reset", "node_id": ""}
    parsed = HistoryRow.model_validate(row)
    assert parsed.score is None and math.isnan(parsed.loss_total)
    assert json.loads(json.dumps(dump(parsed)))["loss_total"] is None
    entry = LineageEntry.model_validate({"epoch": 0, "best": 1, "best_loss": 2.0, "received": {"2": 1},
                                         "tau_before": {"1": 1.0, "2": 1.0}, "tau_after": {"1": 1.0, "2": 1.1}})
    assert entry.feedback == [] and entry.events == {}


def test_job_status_moves_through_one_path() -> None:
    queued = JobStatus.of_job({"id": "vae-kl", "kind": "robust", "method": "vae-kl", "epochs": 3})
    assert (queued.state, queued.epoch, queued.epochs, queued.error) == ("queued", 0, 3, None)
    done = queued.update(state="done", epoch=3, metrics={"mse": math.nan})
    assert done.created_at == queued.created_at and dump(done)["metrics"] == {"mse": None}
    with pytest.raises(ValidationError):
        queued.update(state="exploded")
