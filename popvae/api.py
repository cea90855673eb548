"""popvae from Python (a notebook, a script), with the same checks and run folders as the `popvae` command:

    import popvae

    config = popvae.RunConfig(dataset="synthetic", members=3, epochs=2)
    summary = popvae.train(config, "runs/first")      # starts a local Ray if none is running
    summary = popvae.resume("runs/first", epochs=4)   # continue at the next epoch, extending the budget
    model, meta = popvae.load_best("runs/first")      # the best member, in eval mode
    report = popvae.evaluate("runs/first", experiments=["purification"], subset=32, quick=True)

Bad input raises `ConfigError` (or `DatasetError`, `FileNotFoundError`) before anything is written: a used run
folder is never overwritten. `on_generation(entry, status)` is called after every generation; returning True
stops the run there (state "stopped"; `resume` continues it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from popvae.attacks.experiments import EXPERIMENTS
from popvae.models.datasets import DatasetError
from popvae.population.config import ConfigError, RunConfig, parse_config

__all__ = ["ConfigError", "DatasetError", "RunConfig", "evaluate", "load_best", "resume", "train"]

OnGeneration = Callable[[dict[str, Any], dict[str, Any]], "bool | None"]


def train(config: RunConfig | dict[str, Any], run_dir: str | Path, *, on_generation: OnGeneration | None = None,
          address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Train a new population (or the baseline, `baseline=True`) into `run_dir`, a missing or empty folder;
    returns the summary (also in RUN_DIR/summary.json). Joins the Ray cluster at `address`, else a running
    one, else starts a local Ray with `num_cpus`."""
    from popvae.population import run as runs

    data = config.model_dump(mode="json") if isinstance(config, RunConfig) else config
    return runs.train_run(runs.new_run(parse_config(data), Path(run_dir)), on_generation, address, num_cpus)


def resume(run_dir: str | Path, epochs: int | None = None, *, on_generation: OnGeneration | None = None,
           address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Continue the run in `run_dir` at its next epoch; `epochs` may extend its budget (never shrink it below
    what is done). ConfigError when there is nothing left to train."""
    from popvae.population import run as runs

    return runs.train_run(runs.resumed_run(Path(run_dir), epochs), on_generation, address, num_cpus)


def load_best(run_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, meta) from a run folder's best.pt (or a job folder's model.pt, or a checkpoint file);
    meta holds the member, tau, epoch, the checkpoint path and the run's config (`run_config`)."""
    from popvae.population.evaluation import load_evaluable

    return load_evaluable(Path(run_dir), map_location=device)


@dataclass(frozen=True)
class Evaluation:
    """A checked evaluation with its data loaded: what `run_evaluation` runs."""

    job: dict[str, Any]
    train: Any
    test: Any


def prepare_evaluation(target: str | Path, *, experiments: str | Sequence[str] = EXPERIMENTS, subset: int | None = None,
                       dataset: str | None = None, data_root: str | None = None, seed: int = 0,
                       quick: bool = False) -> Evaluation:
    """Check the arguments and the model, load the data: ValueError, DatasetError or FileNotFoundError before
    anything is written."""
    from popvae.population.plans import plan_evaluation

    plan = plan_evaluation(Path(target), experiments=list(experiments) if not isinstance(experiments, str) else experiments,
                           subset=subset, dataset=dataset, data_root=data_root, seed=seed, quick=quick)
    from popvae.models.data import load_split
    from popvae.population.evaluation import load_evaluable

    load_evaluable(plan["job"]["checkpoint"])  # an AutoEncoder, or say so now rather than in the job
    train_set, test_set = (load_split(plan["dataset"], split, plan["data_root"]) for split in ("train", "test"))
    return Evaluation(plan["job"], train_set, test_set)


def run_evaluation(evaluation: Evaluation, *, address: str | None = None, num_cpus: int | None = None,
                   progress: bool = False) -> Path:
    """Run it here (on the GPU when there is one), or on the Ray cluster's worker pool when `address` or
    $RAY_ADDRESS names one; returns the path of report.md (report.json beside it). RuntimeError when the
    job failed on the pool."""
    from popvae.population.runlock import holding

    job = evaluation.job
    with holding(Path(job["dir"])):  # held while it runs: a job whose process died reads as interrupted
        _run_evaluation(job, evaluation, address, num_cpus, progress)
    return Path(job["out_dir"]) / "report.md"


def _run_evaluation(job: dict[str, Any], evaluation: Evaluation, address: str | None, num_cpus: int | None,
                    progress: bool) -> None:
    if address or os.environ.get("RAY_ADDRESS"):
        from popvae.population.jobs import run_jobs
        from popvae.population.run import ensure_ray

        ensure_ray(address, num_cpus)
        result = run_jobs([job], evaluation.train, evaluation.test, 1)[job["id"]]
        if result["state"] != "done":
            raise RuntimeError(result["error"])
    else:
        import torch

        from popvae.population.evaluation import run_evaluation_job

        device = "cuda" if torch.cuda.is_available() else "cpu"
        run_evaluation_job(job, evaluation.train, evaluation.test, device, progress=progress)


def evaluate(target: str | Path, experiments: str | Sequence[str] = EXPERIMENTS, subset: int | None = None,
             quick: bool = False, *, dataset: str | None = None, data_root: str | None = None, seed: int = 0,
             address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Attack and evaluate a trained model (a run or job folder, or a checkpoint); returns report.json's content.
    The report (JSON, Markdown, figures) is written next to the checkpoint."""
    from popvae.population.rundir import read_json

    md = run_evaluation(prepare_evaluation(target, experiments=experiments, subset=subset, dataset=dataset,
                                           data_root=data_root, seed=seed, quick=quick), address=address, num_cpus=num_cpus)
    return read_json(md.with_suffix(".json"))
