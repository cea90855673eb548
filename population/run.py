"""Driving a population run: validate and load everything first, then hand the epochs to the
coordinator actor, then score the best model on the test split and draw the pictures."""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from popvae.models.checkpoint import load_error, load_model
from popvae.models.data import DatasetError, ImageSet, load_split, train_val_split
from popvae.population import rundir
from popvae.population.config import ConfigError, RunConfig, parse_config
from popvae.population.contract import NAMESPACE, coordinator_name
from popvae.population.coordinator import Coordinator
from popvae.population.plots import plot_history, save_reconstruction_grid
from popvae.population.recorder import CHECKPOINT_KEYS
from popvae.population.training import evaluate, reconstruction_mse


@dataclass(frozen=True)
class RunData:
    train: ImageSet
    val: ImageSet
    test: ImageSet


def load_run_data(cfg: RunConfig) -> RunData:
    """Train (minus excluded classes) split into train/val by the run's seed, and the full test split.
    Raises DatasetError before anything is written."""
    full = load_split(cfg.dataset, "train", cfg.data_root, cfg.synthetic_size)
    if cfg.exclude_classes:
        if max(cfg.exclude_classes) >= len(full.classes):
            raise ConfigError(f"invalid config: exclude_classes: {cfg.dataset} has classes 0..{len(full.classes) - 1}")
        full = full.without_classes(cfg.exclude_classes)
    train_idx, val_idx = train_val_split(len(full), cfg.val_fraction, cfg.seed)
    data = RunData(full.subset(train_idx), full.subset(val_idx[: cfg.val_size]),
                   load_split(cfg.dataset, "test", cfg.data_root, cfg.synthetic_size))
    for split, images in (("train", data.train), ("validation", data.val), ("test", data.test)):
        if len(images) < (cfg.batch_size if split == "train" else 1):
            need = f"at least batch_size = {cfg.batch_size}" if split == "train" else "at least 1"
            excluded = f" without classes {cfg.exclude_classes}" if cfg.exclude_classes else ""
            raise DatasetError(f"{cfg.dataset}: the {split} split has {len(images)} images{excluded}; it needs {need}")
    return data


def _mapped(path: Path) -> Any:
    """The checkpoint with its tensors memory-mapped, not read: the coordinator loads it for real."""
    if not zipfile.is_zipfile(path):  # mmap needs torch's zip format; anything else is not our checkpoint
        raise pickle.UnpicklingError(f"{path.name} is not a torch zip archive")
    return torch.load(path, weights_only=True, mmap=True)


def _readable(run_dir: Path, name: str, read: Callable[[Path], Any]) -> Any:
    try:
        return read(run_dir / name)
    except (ValueError, OSError, RuntimeError, pickle.UnpicklingError) as err:
        raise ConfigError(f"cannot resume {run_dir}: {name} is unreadable: {load_error(err)}") from None


def prepare_run_dir(run_dir: Path, resume: bool, cfg: RunConfig | None) -> RunConfig:
    """A new run needs an empty or missing folder; a resumed one needs its config and checkpoint."""
    blocker = rundir.file_in_the_way(run_dir)
    if blocker is not None:
        raise ConfigError(f"run folder {run_dir}: {blocker} is a file, not a folder")
    if resume:
        if not (run_dir / "config.json").is_file() or not (run_dir / "checkpoints" / "latest.pt").is_file():
            raise ConfigError(f"cannot resume {run_dir}: no config.json and checkpoints/latest.pt there")
        cfg = parse_config(_readable(run_dir, "config.json", rundir.read_json))
        checkpoint = _readable(run_dir, "checkpoints/latest.pt", _mapped)
        if not isinstance(checkpoint, dict) or not CHECKPOINT_KEYS <= checkpoint.keys():
            raise ConfigError(f"cannot resume {run_dir}: checkpoints/latest.pt is not a popvae run checkpoint")
        return cfg
    if run_dir.exists() and any(run_dir.iterdir()):
        raise ConfigError(f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --run-dir")
    assert cfg is not None
    return cfg


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus, namespace=NAMESPACE, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)


def run_population(
    cfg: RunConfig,
    run_dir: Path,
    data: RunData,
    resume: bool = False,
    on_generation: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train (or continue) the population and return the run's summary.

    `on_generation(lineage_entry, status)` is called after each generation (progress display);
    `stop_after` ends the run early after that many epochs in total, leaving it resumable.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        rundir.write_json(run_dir / "config.json", cfg.model_dump(mode="json"))
    refs = [ray.put(data.train.images), ray.put(data.val.images)]  # once per run; workers read zero-copy
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)  # beside the run folder
    coord = Coordinator.options(name=coordinator_name(run_dir.name), namespace=NAMESPACE, scheduling_strategy=here).remote(
        cfg, str(run_dir), refs, resume)
    last = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    try:
        for epoch in range(ray.get(coord.next_epoch.remote()), last):
            entry = ray.get(coord.run_generation.remote(epoch))
            if on_generation is not None:
                on_generation(entry, ray.get(coord.status.remote()))
        ray.get(coord.finish.remote("done" if last == cfg.epochs else "stopped"))
    except BaseException:
        with contextlib.suppress(Exception):
            ray.get(coord.finish.remote("failed"), timeout=10)
        raise
    finally:
        with contextlib.suppress(Exception):
            for handle in ray.get(coord.member_handles.remote(), timeout=10).values():
                ray.kill(handle)
        ray.kill(coord)
    return summarize(run_dir, data)


def summarize(run_dir: Path, data: RunData) -> dict[str, Any]:
    """Test-set scores of the best model, plots, and summary.json."""
    model, meta = load_model(run_dir / "best.pt")
    scores = {**evaluate(model, data.test.images, 256, "cpu"), "mse": reconstruction_mse(model, data.test.images, "cpu")}
    rows = rundir.read_rows(run_dir / "history.parquet")
    plot_history(rows, run_dir / "plots")
    save_reconstruction_grid(model, data.test.images, run_dir / "plots" / "reconstructions.png")
    summary = {
        "run_id": run_dir.name, "best_member": meta["member"], "best_tau": meta["tau"], "best_epoch": meta["epoch"],
        "select_on": meta["select_on"], "baseline": meta["baseline"], "test_mse": scores["mse"],
        "test_loss": scores["total"], "test_images": len(data.test), "evaluation": "deterministic (no Gumbel noise)",
        "epochs_done": 1 + max(r["epoch"] for r in rows), "events": sorted({r["event"] for r in rows} - {""}),
    }
    rundir.write_json(run_dir / "summary.json", summary)
    return summary


def member_weights_equal(handles: dict[int, Any]) -> bool:
    """True when every member holds exactly the same weights (after a broadcast)."""
    all_weights = ray.get([h.get_weights.remote() for h in handles.values()])
    first = all_weights[0]
    return all(all(np.array_equal(first[k], w[k]) for k in first) for w in all_weights[1:])
