"""How a reader tells a live run or job from a dead one: the OS lock on this machine, the heartbeat for a holder on
another machine, and the service's states for jobs whose process is gone (no Ray: the files alone decide)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from popvae.cluster.run_store import RunStore
from popvae.population import folder_io, folder_lock
from popvae.population.contract import JobStatus
from popvae.population.folder_lock import LOCK_NAME, RunLock, RunLocked, is_held, read_holder
from popvae.population.run_folder import RunFolder


def test_a_held_lock_reads_as_held_and_a_released_one_as_free(tmp_path: Path) -> None:
    assert is_held(tmp_path / "run") is None  # no lock file: no evidence either way
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    assert is_held(tmp_path / "run") is True
    with pytest.raises(RunLocked, match=r"in use by pid \d+ on "):
        RunLock(tmp_path / "run").acquire()
    (tmp_path / "run" / "status.json").write_text("{}")  # something written: the folder stays after release
    lock.release()
    assert is_held(tmp_path / "run") is False


def _remote_holder(folder: Path, age_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    beat = (datetime.now(timezone.utc) - timedelta(seconds=age_s)).isoformat(timespec="seconds")
    (folder / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "another-machine", "started_at": beat,
                                                "heartbeat_at": beat}))


def test_a_holder_on_another_machine_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    _remote_holder(tmp_path / "fresh", age_s=5)
    _remote_holder(tmp_path / "stale", age_s=folder_lock.STALE_AFTER_S + 5)
    assert is_held(tmp_path / "fresh") is True
    assert is_held(tmp_path / "stale") is False


def test_the_holder_refreshes_its_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(folder_lock, "HEARTBEAT_S", 0.2)
    lock = RunLock(tmp_path / "run")
    lock.acquire()
    try:
        first = read_holder(tmp_path / "run")["heartbeat_at"]
        deadline = time.monotonic() + 5
        while read_holder(tmp_path / "run").get("heartbeat_at") == first and time.monotonic() < deadline:
            time.sleep(0.1)  # the stamp has one-second resolution
        assert read_holder(tmp_path / "run").get("heartbeat_at", "") > first
    finally:
        lock.release()


def _job(root: Path, run: str, job_id: str, state: str) -> Path:
    folder = root / run / "jobs" / job_id
    status = JobStatus.queued(job_id, "robust", "vae-kl", 2)
    RunFolder(folder).write_job_status(status if state == "queued" else status.update(state=state))
    return folder


def test_jobs_whose_process_is_gone_read_as_interrupted(tmp_path: Path) -> None:
    folder_io.write_json(tmp_path / "run" / "config.json", {"kind": "robust"})
    running, queued, done = (_job(tmp_path, "run", j, s) for j, s in
                             (("vae-kl", "running"), ("gmm-dae", "queued"), ("raven", "done")))
    store = RunStore(tmp_path)
    assert [store.job("run", j).state for j in ("vae-kl", "gmm-dae", "raven")] == ["running", "queued", "done"]  # no locks

    driver = RunLock(tmp_path / "run")  # the command that planned the jobs holds the run folder
    driver.acquire()
    job_lock = RunLock(running)
    job_lock.acquire()
    assert store.job("run", "vae-kl").state == "running" and store.job("run", "gmm-dae").state == "queued"
    job_lock.release()  # the job's process died: its own lock is free
    assert store.job("run", "vae-kl").state == "interrupted"
    assert store.job("run", "gmm-dae").state == "queued"  # still waiting on a live driver
    driver.release()  # the driver died too: nothing will ever run the queued job
    assert store.job("run", "gmm-dae").state == "interrupted"
    assert store.job("run", "raven").state == "done"  # a finished job stays finished
