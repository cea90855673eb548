"""Run policies, checked before anything is written or started (no Ray; torch only to read a checkpoint):

- a new run needs a missing or empty folder, and so does the baseline `--compare-baseline` trains into
  RUN_DIR-baseline;
- a resume keeps the run's config: it may only extend `epochs`; a run whose epochs are all trained but which has
  no summary.json (stopped while it was scored) resumes into the scoring; one with nothing left to do is refused;
- the baseline is the standard GS-VAE: one member, tau annealed, otherwise the population's config.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from popvae.population.config import ConfigError, RunConfig, parse_config
from popvae.population.run_folder import RunFolder

T = TypeVar("T")


def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs an empty or missing folder (never a used one: a run is not silently overwritten), on a
    path the system accepts, in a place it may write, and no other process holding it."""
    from popvae.population.bounds import check_run_dir_path
    from popvae.population.folder_lock import RunLocked, describe, is_held, read_holder

    run_dir = Path(run_dir)
    check_run_dir_path(run_dir)  # its length, no file in the way, writable
    if is_held(run_dir):
        raise RunLocked(f"run folder {run_dir} is in use by {describe(read_holder(run_dir))}; choose another --run-dir")
    check_unused(run_dir)


def check_unused(run_dir: Path) -> None:
    """The folder is missing or holds nothing but its lock file."""
    from popvae.population.folder_lock import LOCK_NAME

    if run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise ConfigError(f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --run-dir",
                          api=f"run folder {run_dir} already holds a run; continue it with popvae.resume({str(run_dir)!r}) "
                              "or choose another run_dir")


def baseline_dir(run_dir: Path) -> Path:
    """Where `--compare-baseline` trains the baseline: RUN_DIR-baseline beside the run."""
    run_dir = Path(run_dir)
    return run_dir.with_name(f"{run_dir.name}-baseline")


def check_new_run(cfg: RunConfig, run_dir: Path, compare_baseline: bool = False) -> None:
    """A new run's folder (`check_new_run_dir`); with `compare_baseline`, which trains the baseline after the
    population into RUN_DIR-baseline, that folder too, and the run must be a population."""
    check_new_run_dir(run_dir)
    if compare_baseline:
        if cfg.baseline:
            raise ConfigError("--compare-baseline trains the baseline after a population: not with a baseline run")
        check_new_run_dir(baseline_dir(run_dir))


def ended_run_hint(run_dir: Path) -> str:
    """What a run that stopped early keeps and how to go on, for the one line a stop or a failure prints."""
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    if not folder.has_checkpoint():
        return f"no epoch finished; remove {run_dir} to start again" if run_dir.exists() else "no epoch finished"
    try:
        done = folder.read_status().epoch
    except (OSError, ValueError):
        done = 0
    kept = f"{done} epoch(s)" if done else "its last checkpoint"
    return f"{run_dir} keeps {kept}; continue with: popvae train --resume {run_dir}"


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The baseline on the population's budget: one member, tau annealed."""
    return parse_config({**cfg.model_dump(mode="json"), "baseline": True, "members": 1})


def _readable(run_dir: Path, path: Path, read: Callable[[], T]) -> T:
    from popvae.models.checkpoint import load_error

    try:
        return read()
    except (ValueError, OSError, RuntimeError, pickle.UnpicklingError) as err:  # pydantic's and Arrow's are ValueErrors
        raise ConfigError(f"cannot resume {run_dir}: {path} is unreadable: {load_error(err)}") from None


def run_config(run_dir: Path) -> RunConfig:
    """RUN_DIR/config.json as a RunConfig; ConfigError naming the file when it is unreadable or no run config."""
    folder = RunFolder(run_dir)
    data = _readable(run_dir, folder.config_path, folder.read_config_data)
    if not isinstance(data, dict):
        raise ConfigError(f"{folder.config_path} must hold a mapping of settings, not a {type(data).__name__}")
    try:
        return parse_config(data)
    except ConfigError as err:
        raise ConfigError(f"{folder.config_path}: {err}") from None


def check_run_files(run_dir: Path, done: int) -> None:
    """Every other file a resume reads, read now (before Ray starts): history.parquet and lineage.json against the
    run-folder contract, best.pt against its checksum. ConfigError naming the file."""
    from popvae.models.integrity import verify

    folder = RunFolder(run_dir)
    for path, read in ((folder.history_path, folder.read_history), (folder.lineage_path, folder.read_lineage),
                       (folder.best_path, lambda: verify(folder.best_path))):
        if path.exists():
            _readable(run_dir, path, read)


def resume_config(run_dir: Path, epochs: int | None = None) -> tuple[RunConfig, int]:
    """(config to continue with, epochs already done) for resuming `run_dir`, `epochs` extending its budget.

    ConfigError when the folder is no resumable run, when `epochs` is below what is done, or when
    nothing is left to train (the message says how to extend the run).
    """
    from popvae.population.bounds import check_run_dir_path
    from popvae.population.folder_lock import RunLocked, describe, is_held, read_holder

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    check_run_dir_path(run_dir)  # its length, no file in the way, writable
    if is_held(run_dir):
        raise RunLocked(f"cannot resume {run_dir}: it is still running, in {describe(read_holder(run_dir))}")
    if missing := folder.missing_for_resume():
        raise ConfigError(f"cannot resume {run_dir}: no {' and no '.join(missing)} there")
    cfg = run_config(run_dir)
    checkpoint = _readable(run_dir, folder.latest_path, lambda: folder.read_checkpoint(mmap=True))
    from popvae.models.checkpoint import nonfinite

    if (bad := nonfinite(checkpoint.weights)) is not None:
        raise ConfigError(f"cannot resume {run_dir}: {folder.latest_path} holds non-finite weights (in {bad})")
    done = checkpoint.epochs_done
    check_run_files(run_dir, done)
    if epochs is not None:
        if epochs < done:
            raise ConfigError(f"cannot resume {run_dir} with epochs {epochs}: it already did {done}; a resume may only extend it")
        cfg = parse_config({**cfg.model_dump(mode="json"), "epochs": epochs})
    if done >= cfg.epochs and not folder.summary_path.is_file():
        return cfg, done  # stopped while it was scored: the resume scores it
    if folder.summary_path.is_file() and folder.recorded_stop_reason() == "plateau":
        raise ConfigError(f"nothing left to train: {run_dir} ended on a plateau after {done} epochs (its best selection "
                          f"loss stopped improving, config `stop`)")
    if done >= cfg.epochs:
        raise ConfigError(f"nothing left to train: {run_dir} already did {done} of {cfg.epochs} epochs; "
                          f"extend it with --resume {run_dir} --epochs {done + 1} (or more)",
                          api=f"nothing left to train: {run_dir} already did {done} of {cfg.epochs} epochs; "
                              f"extend it with popvae.resume({str(run_dir)!r}, epochs={done + 1}) (or more)")
    return cfg, done
