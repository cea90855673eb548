"""An evaluation as a job: load a checkpoint, run `attacks.report.evaluate`, keep a job status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from popvae.attacks.report import evaluate, load_evaluable
from popvae.models.data import ImageSet
from popvae.population.contract import JobStatus


def run_evaluation_job(job: dict[str, Any], train: ImageSet, test: ImageSet, device: str,
                       progress: bool = False) -> dict[str, Any]:
    """`job`: id, dir (its status folder), checkpoint, out_dir, experiments, subset, seed, held_out, settings."""
    status_path = Path(job["dir"]) / "status.json"
    status = JobStatus.of_job(job | {"epochs": 1}).update(state="running")
    status.write(status_path)
    try:
        model, _ = load_evaluable(job["checkpoint"], map_location=device)
        report = evaluate(model, train, test, job["experiments"], job.get("subset"), Path(job["out_dir"]), job.get("seed", 0),
                          device, progress, held_out=job.get("held_out"), settings=job.get("settings"))
    except Exception as err:
        status.update(state="failed", error=f"{type(err).__name__}: {err}").write(status_path)
        raise
    metrics = {"report": str(Path(job["out_dir"]) / "report.json"), "experiments": job["experiments"]}
    status.update(state="done", epoch=1, metrics=metrics).write(status_path)
    return report
