"""An evaluation as a job: load a checkpoint, run `attacks.report.evaluate`, keep a job status. `prepare_evaluation`
and `run_evaluation` are what `popvae evaluate` and the notebook API's `evaluate` both call. Torch is imported
inside the functions that need it: a bad argument is refused before it is loaded."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from popvae.attacks.experiments import EXPERIMENTS

if TYPE_CHECKING:
    from torch import nn

    from popvae.models.dataset_loading import ImageSet


def load_evaluable(target: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint file, or a run / job folder holding one (best.pt, else model.pt), as (model in eval mode, meta).

    The folder's config.json, when present next to the checkpoint, is added to meta as `run_config`
    (dataset, excluded classes, seed...), and the checkpoint path as `checkpoint`.
    """
    from popvae.attacks.report import load_autoencoder
    from popvae.population.run_folder import RunFolder, find_checkpoint

    checkpoint = find_checkpoint(Path(target))
    model, meta = load_autoencoder(checkpoint, map_location)
    folder = RunFolder(checkpoint.parent)
    if folder.config_path.is_file():
        meta["run_config"] = folder.read_config_data()
    return model, meta


def run_evaluation_job(job: dict[str, Any], train: ImageSet, test: ImageSet, device: str,
                       progress: bool = False) -> dict[str, Any]:
    """`job`: id, dir (its status folder), checkpoint, out_dir, experiments, subset, seed, held_out, settings."""
    from popvae.attacks.report import evaluate
    from popvae.population.contract import JobStatus
    from popvae.population.run_folder import RunFolder

    folder = RunFolder(job["dir"])
    status = JobStatus.of_job(job | {"epochs": 1}).update(state="running")
    folder.write_job_status(status)
    try:
        model, _ = load_evaluable(job["checkpoint"], map_location=device)
        report = evaluate(model, train, test, job["experiments"], job.get("subset"), Path(job["out_dir"]), job.get("seed", 0),
                          device, progress, held_out=job.get("held_out"), settings=job.get("settings"),
                          fid_weights=job.get("fid_weights"), lpips_weights=job.get("lpips_weights"),
                          about={"checkpoint": job["checkpoint"], "quick": bool(job.get("quick"))})
    except Exception as err:
        folder.write_job_status(status.update(state="failed", error=f"{type(err).__name__}: {err}"))
        raise
    metrics = {"report": str(Path(job["out_dir"]) / "report.json"), "experiments": job["experiments"]}
    folder.write_job_status(status.update(state="done", epoch=1, metrics=metrics))
    return report


@dataclass(frozen=True)
class Evaluation:
    """A checked evaluation with its data loaded: what `run_evaluation` runs."""

    job: dict[str, Any]
    train: ImageSet
    test: ImageSet


def prepare_evaluation(target: str | Path, *, experiments: str | Sequence[str] = EXPERIMENTS, subset: int | None = None,
                       dataset: str | None = None, data_root: str | None = None, seed: int = 0,
                       quick: bool = False, fid_weights: str | Path | None = None,
                       lpips_weights: str | Path | None = None) -> Evaluation:
    """Check the arguments and the model, load the data: ValueError, DatasetError or FileNotFoundError before
    anything is written."""
    from popvae.population.plans import plan_evaluation

    plan = plan_evaluation(Path(target), experiments=list(experiments) if not isinstance(experiments, str) else experiments,
                           subset=subset, dataset=dataset, data_root=data_root, seed=seed, quick=quick,
                           fid_weights=fid_weights, lpips_weights=lpips_weights)
    from popvae.models.dataset_loading import load_split

    load_evaluable(plan["job"]["checkpoint"])  # an AutoEncoder, or say so now rather than in the job
    train_set, test_set = (load_split(plan["dataset"], split, plan["data_root"]) for split in ("train", "test"))
    return Evaluation(plan["job"], train_set, test_set)


def run_evaluation(evaluation: Evaluation, *, address: str | None = None, num_cpus: int | None = None,
                   progress: bool = False) -> Path:
    """Run it here (on the GPU when there is one), or on the Ray cluster's worker pool when `address` or
    $RAY_ADDRESS names one (joined before the job's folder is made: ClusterUnreachable leaves nothing); returns
    the path of report.md (report.json beside it). RuntimeError when the job failed on the pool."""
    from popvae.population.folder_lock import holding

    job = evaluation.job
    on_pool = bool(address or os.environ.get("RAY_ADDRESS"))
    if on_pool:
        from popvae.population.driver import ensure_ray

        ensure_ray(address, num_cpus)
    with holding(Path(job["dir"])):  # held while it runs: a job whose process died reads as interrupted
        if on_pool:
            from popvae.population.jobs import run_jobs

            result = run_jobs([job], evaluation.train, evaluation.test, 1)[job["id"]]
            if result["state"] != "done":
                raise RuntimeError(result["error"])
        else:
            from popvae.population.training import pick_device

            run_evaluation_job(job, evaluation.train, evaluation.test, str(pick_device("auto")), progress=progress)
    return Path(job["out_dir"]) / "report.md"
