"""popvae from Python (a notebook, a script), with the same checks and run folders as the `popvae` command:

    import popvae

    config = popvae.RunConfig(dataset="synthetic", members=3, epochs=2)
    # RunConfig(..., stop={"plateau_generations": 3}) ends a run at its plateau; the summary's stop_reason says why
    summary = popvae.train(config, "runs/first")      # starts a local Ray if none is running
    summary = popvae.resume("runs/first", epochs=4)   # continue at the next epoch, extending the budget
    model, meta = popvae.load_best("runs/first")      # the best member, in eval mode
    x = popvae.prepare(raw_images, meta)               # uint8 or [0,1] images -> what the model takes (resized)
    recon, code = model.reconstruct(x), model.encode(x)   # and model.decode(code)
    report = popvae.evaluate("runs/first", experiments=["purification"], subset=32, quick=True)

Bad input raises `ConfigError` (or `DatasetError`, `FileNotFoundError`) before anything is written: a used run
folder is never overwritten. A ConfigError's advice names these functions, not the command's flags.
`on_generation(entry, status)` is called after every generation; returning True stops the run there (state
"stopped"; `resume` continues it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from popvae.attacks.experiments import EXPERIMENTS
from popvae.models.dataset_names import DatasetError
from popvae.population.config import ConfigError, RunConfig, parse_config

__all__ = ["ConfigError", "DatasetError", "RunConfig", "evaluate", "load_best", "prepare", "resume", "train"]

OnGeneration = Callable[[dict[str, Any], dict[str, Any]], "bool | None"]


@contextmanager
def _python_advice() -> Iterator[None]:
    """A ConfigError whose advice is a command line (`--resume DIR`) is raised with its Python wording instead."""
    try:
        yield
    except ConfigError as err:
        if err.api is None:
            raise
        raise ConfigError(err.api) from None


def train(config: RunConfig | dict[str, Any], run_dir: str | Path, *, on_generation: OnGeneration | None = None,
          address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Train a new population (or the baseline, `baseline=True`) into `run_dir`, a missing or empty folder;
    returns the summary (also in RUN_DIR/summary.json). Joins the Ray cluster at `address`, else a running
    one, else starts a local Ray with `num_cpus`."""
    from popvae.population import driver

    data = config.model_dump(mode="json") if isinstance(config, RunConfig) else config
    with _python_advice():
        return driver.train_run(driver.new_run(parse_config(data), Path(run_dir)), on_generation, address, num_cpus)


def resume(run_dir: str | Path, epochs: int | None = None, *, on_generation: OnGeneration | None = None,
           address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Continue the run in `run_dir` at its next epoch; `epochs` may extend its budget (never shrink it below
    what is done). ConfigError when there is nothing left to train."""
    from popvae.population import driver

    with _python_advice():
        return driver.train_run(driver.resumed_run(Path(run_dir), epochs), on_generation, address, num_cpus)


def load_best(run_dir: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, meta) from a run folder's best.pt (or a job folder's model.pt, or a checkpoint file);
    meta holds the member, tau, epoch, the checkpoint path, the run's config (`run_config`) and the model's input
    shape (`input_shape`, [C, H, W]: give it images through `prepare`). The model takes float images in [0,1] of that
    shape: `reconstruct(x)` (deterministic; `sample=True` draws its noise), `encode(x)` (the flat latent code the
    attacks move) and `decode(z)`."""
    from popvae.population.evaluation import load_evaluable

    return load_evaluable(Path(run_dir), map_location=device)


def prepare(images: Any, meta: dict[str, Any], device: str = "cpu") -> Any:
    """Raw images (a dataset's own 28x28 Fashion-MNIST, say) as the model of `meta` (from `load_best`) takes them:
    float32 in [0,1], (N, C, H, W) at its input size, resized exactly as its training data was. Accepts numpy arrays
    or tensors, uint8 or [0,1] floats, (H, W), (N, H, W), (N, C, H, W) or (N, H, W, C)."""
    from popvae.models.dataset_loading import prepare as prepare_images

    channels, size, _ = meta["input_shape"]
    return prepare_images(images, channels, size).to(device)


def evaluate(target: str | Path, experiments: str | Sequence[str] = EXPERIMENTS, subset: int | None = None,
             quick: bool = False, *, dataset: str | None = None, data_root: str | None = None, seed: int = 0,
             fid_weights: str | Path | None = None, lpips_weights: str | Path | None = None,
             address: str | None = None, num_cpus: int | None = None) -> dict[str, Any]:
    """Attack and evaluate a trained model (a run or job folder, or a checkpoint); returns report.json's content.
    The report (JSON, Markdown, figures) is written to its own folder, RUN/jobs/evaluation-TIME/. The first
    evaluation on a dataset fits the purification CNN (minutes on a CPU) and caches it under ~/.cache/popvae."""
    from popvae.population.evaluation import prepare_evaluation, run_evaluation
    from popvae.population.folder_io import read_json

    md = run_evaluation(prepare_evaluation(target, experiments=experiments, subset=subset, dataset=dataset,
                                           data_root=data_root, seed=seed, quick=quick, fid_weights=fid_weights,
                                           lpips_weights=lpips_weights), address=address, num_cpus=num_cpus)
    return read_json(md.with_suffix(".json"))
