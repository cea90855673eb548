"""Run policies, checked before anything is written or started (no Ray; torch only to read a checkpoint):

- a new run needs a missing or empty folder, and so does the baseline `--compare-baseline` trains into
  RUN_DIR-baseline;
- a resume keeps the run's config: it may only extend `epochs`, and one with nothing left to train is refused;
- the baseline is the standard GS-VAE: one member, tau annealed, otherwise the population's config.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from popvae.population.config import ConfigError, RunConfig, parse_config


def check_new_run_dir(run_dir: Path) -> None:
    """A new run needs an empty or missing folder (never a used one: a run is not silently overwritten), on a
    path the system accepts, in a place it may write, and no other process holding it."""
    from popvae.population.bounds import check_run_dir_path
    from popvae.population.runlock import RunLocked, describe, is_held, read_holder

    run_dir = Path(run_dir)
    check_run_dir_path(run_dir)  # its length, no file in the way, writable
    if is_held(run_dir):
        raise RunLocked(f"run folder {run_dir} is in use by {describe(read_holder(run_dir))}; choose another --run-dir")
    check_unused(run_dir)


def check_unused(run_dir: Path) -> None:
    """The folder is missing or holds nothing but its lock file."""
    from popvae.population.runlock import LOCK_NAME

    if run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise ConfigError(f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")


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
    if not (run_dir / "checkpoints" / "latest.pt").is_file():
        return f"no epoch finished; remove {run_dir} to start again" if run_dir.exists() else "no epoch finished"
    try:
        done = int(json.loads((run_dir / "status.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        done = 0
    kept = f"{done} epoch(s)" if done else "its last checkpoint"
    return f"{run_dir} keeps {kept}; continue with: popvae train --resume {run_dir}"


def baseline_config(cfg: RunConfig) -> RunConfig:
    """The baseline on the population's budget: one member, tau annealed."""
    return parse_config({**cfg.model_dump(mode="json"), "baseline": True, "members": 1})


def _mapped(path: Path) -> Any:
    """The checkpoint with its tensors memory-mapped, not read: the coordinator loads it for real."""
    from popvae.models.integrity import verify

    verify(path)  # its sha256 (or zip CRCs) before torch reads it: a damaged archive can crash torch's reader
    import torch

    if not zipfile.is_zipfile(path):  # mmap needs torch's zip format; anything else is not our checkpoint
        raise pickle.UnpicklingError(f"{path.name} is not a torch zip archive")
    return torch.load(path, weights_only=True, mmap=True)


def _readable(run_dir: Path, name: str, read: Callable[[Path], Any]) -> Any:
    from popvae.models.checkpoint import load_error

    try:
        return read(run_dir / name)
    except (ValueError, OSError, RuntimeError, pickle.UnpicklingError) as err:  # pydantic's and Arrow's are ValueErrors
        raise ConfigError(f"cannot resume {run_dir}: {run_dir / name} is unreadable: {load_error(err)}") from None


def _read_json(path: Path) -> Any:
    from popvae.population.rundir import read_json

    return read_json(path)


def run_config(run_dir: Path) -> RunConfig:
    """RUN_DIR/config.json as a RunConfig; ConfigError naming the file when it is unreadable or no run config."""
    data = _readable(run_dir, "config.json", _read_json)
    if not isinstance(data, dict):
        raise ConfigError(f"{run_dir / 'config.json'} must hold a mapping of settings, not a {type(data).__name__}")
    try:
        return parse_config(data)
    except ConfigError as err:
        raise ConfigError(f"{run_dir / 'config.json'}: {err}") from None


def check_run_files(run_dir: Path, done: int) -> None:
    """Every other file a resume reads, read now (before Ray starts): history.parquet and lineage.json against the
    run-folder contract, best.pt against its checksum. ConfigError naming the file."""
    from popvae.models.integrity import verify
    from popvae.population.contract import HistoryRow, LineageEntry
    from popvae.population.rundir import read_rows

    def rows(path: Path) -> list[Any]:
        return [HistoryRow.model_validate(r) for r in read_rows(path)]

    def lineage(path: Path) -> list[Any]:
        data = _read_json(path)
        if not isinstance(data, list):
            raise ValueError(f"a list of generations was expected, not a {type(data).__name__}")
        return [LineageEntry.model_validate(g) for g in data]

    for name, read in (("history.parquet", rows), ("lineage.json", lineage), ("best.pt", verify)):
        if (run_dir / name).exists():
            _readable(run_dir, name, read)


def resume_config(run_dir: Path, epochs: int | None = None) -> tuple[RunConfig, int]:
    """(config to continue with, epochs already done) for resuming `run_dir`, `epochs` extending its budget.

    ConfigError when the folder is no resumable run, when `epochs` is below what is done, or when
    nothing is left to train (the message says how to extend the run).
    """
    from popvae.population.bounds import check_run_dir_path
    from popvae.population.recorder import CHECKPOINT_KEYS
    from popvae.population.runlock import RunLocked, describe, is_held, read_holder

    run_dir = Path(run_dir)
    check_run_dir_path(run_dir)  # its length, no file in the way, writable
    if is_held(run_dir):
        raise RunLocked(f"cannot resume {run_dir}: it is still running, in {describe(read_holder(run_dir))}")
    if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoints" / "latest.pt").is_file():
        raise ConfigError(f"cannot resume {run_dir}: no config.json and checkpoints/latest.pt there")
    cfg = run_config(run_dir)
    checkpoint = _readable(run_dir, "checkpoints/latest.pt", _mapped)
    if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
        raise ConfigError(f"cannot resume {run_dir}: checkpoints/latest.pt is not a popvae run checkpoint")
    from popvae.models.checkpoint import nonfinite

    if (bad := nonfinite(checkpoint["weights"])) is not None:
        raise ConfigError(f"cannot resume {run_dir}: checkpoints/latest.pt holds non-finite weights (in {bad})")
    done = int(checkpoint["epochs_done"])
    check_run_files(run_dir, done)
    if epochs is not None:
        if epochs < done:
            raise ConfigError(f"cannot resume {run_dir} with epochs {epochs}: it already did {done}; a resume may only extend it")
        cfg = parse_config({**cfg.model_dump(mode="json"), "epochs": epochs})
    if done >= cfg.epochs:
        raise ConfigError(f"nothing left to train: {run_dir} already did {done} of {cfg.epochs} epochs; "
                          f"extend it with --resume {run_dir} --epochs {done + 1} (or more)")
    return cfg, done
