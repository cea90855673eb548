"""An evaluation as a job: load a checkpoint, run `attacks.report.evaluate`, keep a job status."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from popvae.attacks.report import evaluate, load_autoencoder
from popvae.models.data import ImageSet
from popvae.population.contract import JobStatus
from popvae.population.run_folder import RunFolder, find_checkpoint


def load_evaluable(target: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint file, or a run / job folder holding one (best.pt, else model.pt), as (model in eval mode, meta).

    The folder's config.json, when present next to the checkpoint, is added to meta as `run_config`
    (dataset, excluded classes, seed...), and the checkpoint path as `checkpoint`.
    """
    checkpoint = find_checkpoint(Path(target))
    model, meta = load_autoencoder(checkpoint, map_location)
    folder = RunFolder(checkpoint.parent)
    if folder.config_path.is_file():
        meta["run_config"] = folder.read_config_data()
    return model, meta


def run_evaluation_job(job: dict[str, Any], train: ImageSet, test: ImageSet, device: str,
                       progress: bool = False) -> dict[str, Any]:
    """`job`: id, dir (its status folder), checkpoint, out_dir, experiments, subset, seed, held_out, settings."""
    folder = RunFolder(job["dir"])
    status = JobStatus.of_job(job | {"epochs": 1}).update(state="running")
    folder.write_job_status(status)
    try:
        model, _ = load_evaluable(job["checkpoint"], map_location=device)
        report = evaluate(model, train, test, job["experiments"], job.get("subset"), Path(job["out_dir"]), job.get("seed", 0),
                          device, progress, held_out=job.get("held_out"), settings=job.get("settings"))
    except Exception as err:
        folder.write_job_status(status.update(state="failed", error=f"{type(err).__name__}: {err}"))
        raise
    metrics = {"report": str(Path(job["out_dir"]) / "report.json"), "experiments": job["experiments"]}
    folder.write_job_status(status.update(state="done", epoch=1, metrics=metrics))
    return report
