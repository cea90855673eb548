"""Planning robust-AE and evaluation jobs: pure functions from arguments to the job dicts the worker pool
runs (`population.jobs`), with every check on the arguments and the folders done first. No torch, no Ray:
bad input is rejected at once, before anything is written."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from popvae.attacks.experiments import EXPERIMENTS, QUICK_SETTINGS
from popvae.models.dataset_names import IMAGE_SHAPE, check_dataset_name
from popvae.population.bounds import MAX_NUM_CPUS
from popvae.population.config import PRECISIONS, ConfigError, Count, Seed, validated
from popvae.population.methods import method_config, parse_methods
from popvae.population.run_folder import RunFolder, find_checkpoint


class JobSettings(BaseModel):
    """The numbers `popvae robust` and `popvae evaluate` take, bounded by the types a run's config uses (one
    validator: a seed `train` refuses, these refuse too)."""

    model_config = ConfigDict(extra="forbid")

    epochs: Count = 5
    batch_size: Count = 128
    steps_per_epoch: Count | None = None
    seed: Seed = 0
    workers: Annotated[int, Field(ge=1, le=MAX_NUM_CPUS)] | None = None  # a worker process each: no more than CPUs
    subset: Count | None = None


def plan_robust(methods: str | list[str], run_dir: Path, *, dataset: str = "fashion-mnist", data_root: str | None = None,
                epochs: int = 5, batch_size: int = 128, steps_per_epoch: int | None = None, seed: int = 0,
                workers: int | None = None, precision: str = "auto") -> dict[str, Any]:
    """{"config": RUN_DIR/config.json's content, "jobs": one job per method, "run_dir"}; ValueError (ConfigError, or pydantic's
    ValidationError for a method config) before anything is written. `precision` (auto | fp32 | bf16) is resolved by
    each job on its device, as a population's packs resolve theirs."""
    names = parse_methods(methods if isinstance(methods, str) else ",".join(methods))
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    validated(JobSettings, {"epochs": epochs, "batch_size": batch_size, "steps_per_epoch": steps_per_epoch, "seed": seed,
                            "workers": workers}, flags=True)
    check_dataset_name(dataset)
    from popvae.population.folder_io import file_in_the_way

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    if (blocker := file_in_the_way(run_dir)) is not None:
        raise ConfigError(f"--run-dir {run_dir}: {blocker} is a file, not a folder")
    if folder.history_path.exists():
        raise ConfigError(f"--run-dir {run_dir} holds a population run; give robust jobs their own folder")
    taken = [m for m in names if folder.job(m).path.exists()]
    if taken:
        raise ConfigError(f"{folder.jobs_dir} already has jobs for {', '.join(taken)}; choose another --run-dir")
    for m in names:
        method_config(m, IMAGE_SHAPE[dataset])
    config = {"kind": "robust", "dataset": dataset, "data_root": data_root, "methods": names, "epochs": epochs, "seed": seed,
              "precision": precision}
    jobs = [{"id": m, "kind": "robust", "method": m, "dir": str(folder.job(m).path), "epochs": epochs, "batch_size": batch_size,
             "steps_per_epoch": steps_per_epoch, "seed": seed, "precision": precision} for m in names]
    return {"config": config, "jobs": jobs, "run_dir": str(run_dir)}


def run_config_near(checkpoint: Path) -> dict[str, Any]:
    """The config.json of the run that holds `checkpoint` (a run folder or RUN/jobs/<id>/)."""
    for folder in (RunFolder(checkpoint.parent), RunFolder.holding(checkpoint)):
        path = folder.config_path
        if path.is_file():
            try:
                data = folder.read_config_data()
            except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                raise ConfigError(f"{path} is unreadable: {str(err).splitlines()[0]}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path} must hold a mapping of settings, not a {type(data).__name__}")
            if "dataset" in data:
                return data
    return {}


def parse_experiments(experiments: str | list[str] | tuple[str, ...]) -> list[str]:
    names = [e.strip() for e in (experiments.split(",") if isinstance(experiments, str) else experiments) if e.strip()]
    unknown = sorted(set(names) - set(EXPERIMENTS))
    if unknown or not names:
        raise ConfigError(f"unknown experiments {unknown}; choose from {', '.join(EXPERIMENTS)}")
    return names


def plan_evaluation(target: Path, *, experiments: str | list[str] | tuple[str, ...] = EXPERIMENTS, subset: int | None = None,
                    dataset: str | None = None, data_root: str | None = None, seed: int = 0,
                    quick: bool = False, fid_weights: str | Path | None = None,
                    lpips_weights: str | Path | None = None) -> dict[str, Any]:
    """{"job": the evaluation job, "dataset", "data_root"}: the report and the job's status go to their own folder,
    RUN/jobs/evaluation-<time>/ (a second evaluation never overwrites the first). ValueError or FileNotFoundError
    before anything is written."""
    names = parse_experiments(experiments)
    validated(JobSettings, {"subset": subset, "seed": seed}, flags=True)
    for flag, weights in (("--fid-weights", fid_weights), ("--lpips-weights", lpips_weights)):
        if weights is not None and not Path(weights).is_file():
            raise ConfigError(f"{flag} {weights}: no such file")
    checkpoint = find_checkpoint(target)
    run_cfg = run_config_near(checkpoint)
    dataset = check_dataset_name(dataset or run_cfg.get("dataset", "fashion-mnist"))
    job_id = f"evaluation-{time.strftime('%Y%m%d-%H%M%S')}"
    job_dir = str(RunFolder.holding(checkpoint).job(job_id).path)
    job = {
        "id": job_id, "kind": "evaluation", "method": checkpoint.parent.name, "dir": job_dir,
        "checkpoint": str(checkpoint), "out_dir": job_dir, "experiments": names, "subset": subset,
        "seed": seed, "held_out": run_cfg.get("exclude_classes") or [], "settings": QUICK_SETTINGS if quick else None,
        "quick": quick, "fid_weights": str(fid_weights) if fid_weights else None,
        "lpips_weights": str(lpips_weights) if lpips_weights else None,
    }
    return {"job": job, "dataset": dataset, "data_root": data_root or run_cfg.get("data_root")}
