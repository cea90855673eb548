"""Driving a population run: validate and load everything first, then hand the epochs to the
coordinator actor, then score the best model on the test split and draw the pictures."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from popvae.models.dataset_loading import DatasetError, ImageSet, load_split, train_val_split
from popvae.population import preflight
from popvae.population.config import ConfigError, RunConfig
from popvae.population.contract import NAMESPACE, RunResult, RunState, coordinator_name
from popvae.population.coordinator import Coordinator
from popvae.population.deadline import within
from popvae.population.folder_lock import holding
from popvae.population.run_folder import RunFolder
from popvae.population.stop_signals import signals_kept_while_ray_starts, stop_requested
from popvae.population.training import evaluate, reconstruction_mse


@dataclass(frozen=True)
class RunData:
    train: ImageSet
    val: ImageSet
    test: ImageSet


def load_run_data(cfg: RunConfig) -> RunData:
    """Train (minus excluded classes) split into train/val by the run's seed, and the full test split.
    Raises DatasetError (ConfigError when it would not fit this machine's memory) before anything is written."""
    from popvae.population.bounds import check_memory

    check_memory(cfg)
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


def ensure_ray(address: str | None = None, num_cpus: int | None = None, verbose: bool = False) -> None:
    """Join (or start) Ray. Its start-up notes ("Started a local Ray instance", the token-authentication notice)
    are logged by the "ray" logger at INFO and WARNING: shown with `verbose`, otherwise only its errors reach stderr.
    A cluster address that accepts no connection within the bound is ClusterUnreachable before Ray is asked."""
    if ray.is_initialized():
        return
    from popvae.population.bounds import check_reachable

    check_reachable(address)
    if address is None and not os.environ.get("RAY_ADDRESS"):
        address = "local"  # start one, as promised: Ray alone would join a cluster `ray start` left on this machine
    if verbose:
        ray.init(address=address, num_cpus=num_cpus, namespace=NAMESPACE, include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level=logging.INFO)
        return
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    ray_logger.setLevel(logging.ERROR)
    try:
        ray.init(address=address, num_cpus=num_cpus, namespace=NAMESPACE, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    finally:
        ray_logger.setLevel(level)


def run_population(
    cfg: RunConfig,
    run_dir: Path,
    data: RunData,
    resume: bool = False,
    on_generation: Callable[[dict[str, Any], dict[str, Any]], bool | None] | None = None,
    on_scoring: Callable[[str, int, int], None] | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train (or continue) the population and return the run's summary.

    `on_generation(lineage_entry, status)` is called after each generation (progress display, early stopping):
    when it returns True the run stops after that generation, state "stopped" (stop reason `user`), resumable. Once
    every epoch is trained, or the plateau stopper ends training (the coordinator's status says `plateau`), the state is
    "scoring" until summary.json is written, then "done"; a resume of a run stopped while it was scoring only scores it.
    `on_progress(status)` hears the coordinator's live status about every PROGRESS_POLL_S while a generation trains
    (members training, their steps done: a live console).
    """
    folder = RunFolder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolve_speed(cfg, ray.cluster_resources().get("GPU", 0), folder.read_config() if resume else None)
    if not resume or folder.read_config() != cfg:  # a resume may have extended the epochs
        folder.write_config(cfg)
    if resume and folder.read_checkpoint(mmap=True).epochs_done >= cfg.epochs:  # every epoch trained: score it
        folder.set_state("scoring")
        return _score(folder, data, cfg, on_scoring)
    images = (data.train.images, data.val.images)  # the coordinator stores them once; workers read them zero-copy
    coord = _start_coordinator(cfg, run_dir, images, resume, 0)
    state: RunState = "scoring"
    restarts = restarts_so_far(run_dir) if resume else 0
    try:
        while True:
            try:
                reason = None
                for epoch in range(ray.get(coord.next_epoch.remote()), cfg.epochs):
                    entry = _generation(coord, epoch, on_progress)
                    status = ray.get(coord.status.remote())
                    if on_generation is not None and on_generation(entry, status) and status["stop_reason"] is None:
                        state, reason = "stopped", "user"
                        break
                    if status["stop_reason"] is not None:  # every epoch trained, or the plateau stopper
                        break
                ray.get(coord.finish.remote(state, reason))
                break
            except RayActorError as err:  # its process died (its members die with it): start one from the checkpoint
                if err.actor_init_failed:  # its constructor raised (no slot for the members, ...): a cause, not a death
                    raise
                if (stop := stop_requested()) is not None:  # it died of the signal that stops the run (process group)
                    raise stop from None
                if restarts >= MAX_COORDINATOR_RESTARTS:
                    raise RuntimeError(f"the coordinator died again after {restarts} restarts in this run (at most "
                                       f"{MAX_COORDINATOR_RESTARTS}); see the Ray logs of its process") from None
                restarts += 1
                ray.kill(coord)
                coord = _start_coordinator(cfg, run_dir, images, folder.has_checkpoint(), restarts)
    except BaseException as err:
        stop = err if isinstance(err, KeyboardInterrupt) else stop_requested()  # Ray's failure may come before the signal's
        ended = "interrupted" if stop is not None else "failed"
        within(STOP_S, lambda: _stop_coordinator(coord, ended))
        _mark_ended(run_dir, ended)  # a generation still running in the actor may have written over finish()
        if stop is not None and stop is not err:
            raise stop from None
        raise
    with _end_recorded(run_dir):
        within(STOP_S, lambda: _stop_coordinator(coord))
    return _score(folder, data, cfg, on_scoring)


PROGRESS_POLL_S = 1.0


def _generation(coord: Any, epoch: int, on_progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    """The coordinator's generation `epoch` (its lineage entry), its live status handed to `on_progress` meanwhile."""
    ref = coord.run_generation.remote(epoch)
    if on_progress is not None:
        while not ray.wait([ref], timeout=PROGRESS_POLL_S)[0]:
            with contextlib.suppress(GetTimeoutError):  # a slow answer is skipped; a dead coordinator raises
                on_progress(ray.get(coord.status.remote(), timeout=PROGRESS_POLL_S))
    return ray.get(ref)


def _score(folder: RunFolder, data: RunData, cfg: RunConfig,
           on_scoring: Callable[[str, int, int], None] | None) -> dict[str, Any]:
    """summarize, then "done" (a stopped run stays "stopped")."""
    with _end_recorded(folder.path):
        summary = summarize(folder.path, data, cfg, on_scoring)
    folder.set_state("done", only_from=("scoring",))
    return summary


@contextlib.contextmanager
def _end_recorded(run_dir: Path) -> Iterator[None]:
    """A stop (interrupted) or a failure inside is written to status.json, so that a run stopped after its last epoch
    reads as resumable rather than as done without results."""
    try:
        yield
    except BaseException as err:
        _mark_ended(run_dir, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed")
        raise


def resolve_speed(cfg: RunConfig, gpus: float, recorded: RunConfig | None = None) -> RunConfig:
    """The run config with `precision` and `pack_mode` resolved for the device its packs get (a GPU when the cluster
    has one and the device allows it), so config.json says what ran. A resume (`recorded`: the folder's config.json)
    keeps what the run trained with: an `auto` asked again takes the recorded value, and a recorded `auto` was written
    before these options existed, when runs trained in fp32 with vmap packs. A GPU the driver cannot see is taken to
    run bf16 (every CUDA card since Ampere does)."""
    import torch

    from popvae.population.pack import pack_mode_for
    from popvae.population.training import resolve_precision

    if recorded is not None:
        legacy = {"precision": "fp32", "pack_mode": "vmap"}
        kept = {k: getattr(recorded, k) if getattr(recorded, k) != "auto" else legacy[k] for k in legacy}
        return cfg.model_copy(update={k: kept[k] if getattr(cfg, k) == "auto" else getattr(cfg, k) for k in legacy})
    device = torch.device("cuda" if cfg.device == "cuda" or (cfg.device == "auto" and gpus >= 1) else "cpu")
    precision = cfg.precision
    if precision == "auto" and device.type == "cuda" and not torch.cuda.is_available():
        precision = "bf16"
    return cfg.model_copy(update={"precision": resolve_precision(precision, device),
                                  "pack_mode": pack_mode_for(cfg.pack_mode, device)})


STOP_S = 4.0  # the coordinator's clean-up when a run ends (normally 0.2 s); the CLI bounds Ray's shutdown after it
MAX_COORDINATOR_RESTARTS = 3  # per run, across resumes: a coordinator that keeps dying has a cause to look at


def restarts_so_far(run_dir: Path) -> int:
    """Coordinators started in place of dead ones over the run's life, as its status.json counts them."""
    try:
        return RunFolder(run_dir).read_status().coordinator_restarts
    except (OSError, ValueError, TypeError):
        return 0


def _start_coordinator(cfg: RunConfig, run_dir: Path, images: tuple[Any, Any], resume: bool, restarts: int) -> Any:
    """The run's coordinator, beside the run folder; `restarts` > 0: a replacement for one that died, which says so in
    the run's status and its next lineage entry."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    for attempt in range(50):  # the dead one's name is freed a moment after its death is known
        try:
            coord = Coordinator.options(name=coordinator_name(run_dir.name), namespace=NAMESPACE,
                                        scheduling_strategy=here).remote(cfg, str(run_dir), images, resume, restarts)
            break
        except ValueError:
            if attempt == 49:
                raise
            time.sleep(0.2)
    return coord


def _stop_coordinator(coord: Any, ended: str | None = None) -> None:
    """Let it book how the run `ended` (when given), kill the coordinator and its members, and wait until it is gone
    (so that it writes nothing more). Callers bound it with `deadline.within`: after a SIGTERM to the whole process
    group Ray's processes are gone, and these calls can block for ever whatever their timeouts say."""
    if ended is not None:
        with contextlib.suppress(Exception):
            ray.get(coord.finish.remote(ended), timeout=10)
    with contextlib.suppress(Exception):
        for handle in ray.get(coord.member_handles.remote(), timeout=10).values():
            ray.kill(handle)
    with contextlib.suppress(Exception):
        ray.kill(coord)
    with contextlib.suppress(Exception):
        ray.get(coord.next_epoch.remote(), timeout=10)  # raises once it is dead


def _mark_ended(run_dir: Path, state: Literal["failed", "interrupted"]) -> None:
    """status.json says how the run ended, even when the coordinator could not write it."""
    with contextlib.suppress(Exception):
        RunFolder(run_dir).set_state(state, only_from=("running", "scoring"), stop_reason=state)


@dataclass(frozen=True)
class Run:
    """A checked run with its data loaded: what `train_run` trains. Build one with `new_run` or `resumed_run`."""

    cfg: RunConfig
    run_dir: Path
    data: RunData
    resume: bool = False
    first_epoch: int = 0  # epochs already done (a resume continues at this one)


def new_run(cfg: RunConfig, run_dir: Path, data: RunData | None = None, compare_baseline: bool = False) -> Run:
    """A new run into a missing or empty folder (ConfigError otherwise), its data loaded (DatasetError).
    `compare_baseline`: the baseline's folder must be free too (see `train_with_baseline`), checked now."""
    preflight.check_new_run(cfg, Path(run_dir), compare_baseline)
    return Run(cfg, Path(run_dir), data if data is not None else load_run_data(cfg))


def resumed_run(run_dir: Path, epochs: int | None = None) -> Run:
    """The run in `run_dir` continued at its next epoch, `epochs` extending its budget (see `policy.resume_config`)."""
    cfg, done = preflight.resume_config(Path(run_dir), epochs)
    return Run(cfg, Path(run_dir), load_run_data(cfg), resume=True, first_epoch=done)


def train_with_baseline(run: Run, train: Callable[[Run], dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """`train(run)`, then the standard GS-VAE on the same budget and data into RUN_DIR-baseline, and the baseline
    drawn over the population's plots: [("population", summary), ("baseline", summary)]."""
    results = [("population", train(run))]
    baseline = new_run(preflight.baseline_config(run.cfg), preflight.baseline_dir(run.run_dir), run.data)
    results.append(("baseline", train(baseline)))
    draw_comparison(run.run_dir, baseline.run_dir)
    return results


def failure_cause(err: BaseException) -> str:
    """The cause of a failure on the cluster in one line, not Ray's wrapped traceback."""
    cause = getattr(err, "cause", None)
    lines = [ln.strip() for ln in str(cause if isinstance(cause, Exception) else err).splitlines() if ln.strip()]
    raised = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception")) and ":" in ln]
    return (raised or lines or [type(err).__name__])[-1]


def train_run(run: Run, on_generation: Callable[[dict[str, Any], dict[str, Any]], bool | None] | None = None,
              address: str | None = None, num_cpus: int | None = None, verbose: bool = False,
              on_scoring: Callable[[str, int, int], None] | None = None,
              on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Take the run folder's lock (ConfigError when another process holds it), join (or start) Ray (its start-up
    notes shown only with `verbose`), check the cluster can host the run (ConfigError), train, return the summary.
    The lock is held until the run ends. `on_scoring(what, done, total)` follows the test-set scoring,
    `on_progress(status)` the generation training now (see `run_population`)."""
    from popvae.population.bounds import check_cluster_flags
    from popvae.population.placement import cpu_share

    check_cluster_flags(address, num_cpus)
    with holding(run.run_dir):
        if not run.resume:
            preflight.check_unused(run.run_dir)  # again, under the lock: another process may have used it meanwhile
        RunFolder(run.run_dir).remove_temp_files()  # what a killed writer left: nothing else writes here now
        with signals_kept_while_ray_starts():  # ray.init installs its own SIGTERM handler
            ensure_ray(address, num_cpus, verbose)
        gpus, cpus = ray.cluster_resources().get("GPU", 0), ray.cluster_resources().get("CPU", 0)
        members = run.cfg.members
        if run.cfg.device == "cuda" and gpus < members:
            raise ConfigError(f"device cuda needs a GPU per member: the Ray cluster has {gpus:g} GPUs for {members} members")
        if gpus < members and cpu_share(cpus, cpus, members) * members > cpus + 1e-9:
            raise ConfigError(f"{members} members cannot be placed: the Ray cluster has {cpus:g} CPUs "
                              f"(at most {int(cpus / cpu_share(cpus, cpus, 10**9))} members)")
        return run_population(run.cfg, run.run_dir, run.data, resume=run.resume, on_generation=on_generation,
                              on_scoring=on_scoring, on_progress=on_progress)


def draw_comparison(run_dir: Path, baseline_dir: Path) -> None:
    """The population's tau.png and loss.png again, with the baseline trained on the same budget drawn over them."""
    from popvae.population.plots import plot_history  # matplotlib: imported where pictures are drawn, not at start-up

    folder = RunFolder(run_dir)
    plot_history(folder.read_history_rows(), folder.plots_dir, run_id=folder.run_id,
                 select_on=folder.read_config().select_on, baseline=RunFolder(baseline_dir).read_history_rows())


def summarize(run_dir: Path, data: RunData, cfg: RunConfig,
              on_scoring: Callable[[str, int, int], None] | None = None) -> dict[str, Any]:
    """Test-set scores of the best model, plots, and summary.json (which says how each score was taken).
    `on_scoring(what, done, total)` is called as the test images are scored (a progress display)."""
    from popvae.population.plots import plot_history, save_reconstruction_grid  # matplotlib: only where pictures are drawn

    folder = RunFolder(run_dir)
    model, meta = folder.read_best()
    n = len(data.test.images)

    def step(what: str) -> Callable[[int], None] | None:
        return None if on_scoring is None else lambda done: on_scoring(what, done, n)

    scores = {**evaluate(model, data.test.images, 256, "cpu", progress=step("test loss")),
              "mse": reconstruction_mse(model, data.test.images, "cpu", progress=step("test MSE")),
              "mse_hard": reconstruction_mse(model, data.test.images, "cpu", progress=step("test MSE, hard codes"),
                                             hard=True)}
    if on_scoring is not None:
        on_scoring("pictures", 0, 1)
    rows = folder.read_history_rows()
    plot_history(rows, folder.plots_dir, run_id=folder.run_id, select_on=cfg.select_on)
    save_reconstruction_grid(model, data.test.images, folder.plots_dir / "reconstructions.png",
                             title=f"run {folder.run_id}: best member {meta['member']}, epoch {meta['epoch']}")
    summary = RunResult(
        run_id=folder.run_id, best_member=meta["member"], best_tau=meta["tau"], best_epoch=meta["epoch"],
        select_on=meta["select_on"], baseline=meta["baseline"], precision=cfg.precision, pack_mode=cfg.pack_mode,
        test_mse=scores["mse"], test_mse_hard=scores["mse_hard"],
        test_loss=scores["total"], test_images=len(data.test),
        evaluation="test_mse: deterministic reconstructions (relaxed codes softmax(logits / tau)); test_mse_hard: from "
                   "hard codes (one-hot argmax); test_loss: " + (
            "with Gumbel noise (model.eval_noise)" if cfg.model.eval_noise else "deterministic (no Gumbel noise)"),
        epochs_done=max(r["epoch"] for r in rows), events=sorted({r["event"] for r in rows} - {""}),
        stop_reason=folder.read_status().stop_reason,
    )
    folder.write_summary(summary)
    return summary.model_dump()
