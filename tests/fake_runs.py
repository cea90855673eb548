"""Hand-made run folders, built through the run-folder contract's models and written through `RunFolder`, for what
real runs cannot produce quickly: many epochs, fixed losses and times to page and filter, set modification times, a
corrupt status. Epochs are 0-based, as the contract says. Real run folders are tested in
tests/test_service_real_runs.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from popvae.population.contract import HistoryRow, JobStatus, LossParts, MemberStatus, RunStatus, dump
from popvae.population.folder_io import now_iso
from popvae.population.run_folder import RunFolder
from popvae.population.temperature import strategy_for


def member(index: int, epoch: int) -> MemberStatus:
    loss = 100.0 - epoch + index
    return MemberStatus(
        index=index,
        strategy=strategy_for(index),
        tau=1.0 + 0.1 * index,
        loss=LossParts(total=loss, reconstruction=loss - 3.0, kl_z1=2.0, kl_z2=1.0),
        val_loss=None,
        patience=index % 3,
        state="training",
        node_id=f"node{index % 2}",
        flags=["nan_reset@1"] if index == 3 else [],
    )


def status(run_id: str, epoch: int, epochs: int, members: int, state: str = "running") -> dict[str, Any]:
    """A status.json as the coordinator writes it (and answers from `status()`)."""
    return dump(RunStatus(
        run_id=run_id,
        state=state,
        epoch=epoch,
        epochs=epochs,
        generation_seconds=1.25,
        best_member=1,
        updated_at=now_iso(),
        members=[member(i, epoch) for i in range(1, members + 1)],
    ))


def history_rows(epochs: int, members: int) -> list[HistoryRow]:
    """Epochs 0..epochs-1; member 2 diverged in epoch 1 (its nan_reset@1)."""
    rows = []
    for epoch in range(epochs):
        for m in range(1, members + 1):
            loss = 100.0 - epoch + m
            rows.append(
                HistoryRow(
                    epoch=epoch,
                    member=m,
                    strategy=strategy_for(m),
                    tau=1.0,
                    tau_next=1.1,
                    loss_total=loss if (epoch, m) != (1, 2) else float("nan"),
                    loss_reconstruction=loss - 3.0,
                    loss_kl_z1=2.0,
                    loss_kl_z2=1.0,
                    val_loss=None if m % 2 else loss + 1.0,
                    score=loss,
                    patience=0,
                    is_best=m == 1,
                    seconds=0.5,
                    event="nan_reset" if (epoch, m) == (1, 2) else "",
                    node_id=f"node{m % 2}",
                )
            )
    return rows


def job(job_id: str, kind: str = "robust") -> JobStatus:
    return JobStatus.queued(job_id, kind, "gmm_dae", epochs=10).update(state="running", epoch=2, metrics={"mse": 0.01})


def make_run(
    root: Path, run_id: str, epochs: int = 3, members: int = 4, jobs: tuple[str, ...] = (), mtime: float | None = None
) -> Path:
    """A run folder under `root`; `mtime` (seconds since the epoch) orders it among runs."""
    run = RunFolder(root / run_id)
    run.write_config({"members": members, "epochs": epochs + 2})
    run.write_status(RunStatus.model_validate(status(run_id, epochs, epochs + 2, members)))
    run.write_history(history_rows(epochs, members))
    for job_id in jobs:
        run.job(job_id).write_job_status(job(job_id))
    if mtime is not None:
        os.utime(run.status_path, (mtime, mtime))
    return run.path


def make_robust_run(root: Path, run_id: str, jobs: tuple[str, ...], mtime: float) -> Path:
    """A run of robust-AE jobs only: config.json and jobs/, no population status."""
    run = RunFolder(root / run_id)
    run.write_config({"kind": "robust", "methods": list(jobs)})
    for job_id in jobs:
        run.job(job_id).write_job_status(job(job_id).update(method=None, metrics={"mse": float("nan")}))
    os.utime(run.config_path, (mtime, mtime))
    return run.path


def make_runs(root: Path) -> Path:
    """Four runs: `robust` (jobs only, the newest of all), `newest` population (with two jobs), `older`, and
    `broken` (corrupt status.json, oldest)."""
    make_run(root, "older", mtime=1_000_000)
    make_run(root, "newest", epochs=5, members=3, jobs=("job-a", "job-b"), mtime=3_000_000)
    make_robust_run(root, "robust", ("gmm_dae",), mtime=4_000_000)
    broken = RunFolder(make_run(root, "broken", mtime=500_000))
    broken.status_path.write_text("{not json")
    os.utime(broken.status_path, (500_000, 500_000))
    return root
