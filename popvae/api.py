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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from popvae.attacks.experiments import EXPERIMENTS
from popvae.models.dataset_names import DatasetError
from popvae.population.config import ConfigError, RunConfig, parse_config

__all__ = ["ConfigError", "DatasetError", "RunConfig", "evaluate", "load_best", "resume", "train"]

OnGeneration = Callable[[dict[str, Any], dict[str, Any]], "bool | None"]


def train(config: RunConfig | dict[str, Any], run_dir: str | Path, *, on_generation: OnGeneration | None = None,
          address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Train a new population (or the baseline, `baseline=True`) into `run_dir`, a missing or empty folder;
    returns the summary (also in RUN_DIR/summary.json). Joins the Ray cluster at `address`, else a running
    one, else starts a local Ray with `num_cpus`."""
    from popvae.population import driver

    data = config.model_dump(mode="json") if isinstance(config, RunConfig) else config
    return driver.train_run(driver.new_run(parse_config(data), Path(run_dir)), on_generation, address, num_cpus)


def resume(run_dir: str | Path, epochs: int | None = None, *, on_generation: OnGeneration | None = None,
           address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Continue the run in `run_dir` at its next epoch; `epochs` may extend its budget (never shrink it below
    what is done). ConfigError when there is nothing left to train."""
    from popvae.population import driver

    return driver.train_run(driver.resumed_run(Path(run_dir), epochs), on_generation, address, num_cpus)


def load_best(run_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, meta) from a run folder's best.pt (or a job folder's model.pt, or a checkpoint file);
    meta holds the member, tau, epoch, the checkpoint path and the run's config (`run_config`)."""
    from popvae.population.evaluation import load_evaluable

    return load_evaluable(Path(run_dir), map_location=device)


def evaluate(target: str | Path, experiments: str | Sequence[str] = EXPERIMENTS, subset: int | None = None,
             quick: bool = False, *, dataset: str | None = None, data_root: str | None = None, seed: int = 0,
             address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Attack and evaluate a trained model (a run or job folder, or a checkpoint); returns report.json's content.
    The report (JSON, Markdown, figures) is written next to the checkpoint."""
    from popvae.population.evaluation import prepare_evaluation, run_evaluation
    from popvae.population.folder_io import read_json

    md = run_evaluation(prepare_evaluation(target, experiments=experiments, subset=subset, dataset=dataset,
                                           data_root=data_root, seed=seed, quick=quick), address=address, num_cpus=num_cpus)
    return read_json(md.with_suffix(".json"))
