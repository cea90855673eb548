"""The run folder as one type: the only code that knows what a run folder's files are called, which schema each
holds, how each is read and written, what kind of run a folder is and what state it is really in. No torch or Ray
at import: the command line and the status service use it (torch is imported only to read or write a `.pt`).

    config.json            RunConfig (a folder of robust jobs: their plan; a job folder: the job's settings)
    status.json            RunStatus (a job folder: JobStatus)
    history.parquet        HistoryRow, a row per member per generation (a robust job: a row per epoch)
    lineage.json           LineageEntry, one per generation
    summary.json           RunResult: the test-set scores; written last, and the run is `done` only then
    checkpoints/latest.pt  Checkpoint: everything a resume needs
    best.pt                the best model (`models.checkpoint` format); a robust job's is model.pt
    plots/                 pictures
    jobs/<id>/             a job folder: the same names, through the same type

Every write is atomic (`models.atomic`). The status service reads the same files through its own confined reader
(`cluster.run_store.read_confined`, never following a link out of the folder); it takes the names and the parsers
from here (`rel`, `parse_*`), so a file is named and validated in one place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from popvae.population.config import RunConfig, parse_config
from popvae.population.contract import (
    SCHEMA_VERSION,
    CurvePoint,
    HistoryRow,
    JobState,
    JobStatus,
    LineageEntry,
    RunKind,
    RunResult,
    RunState,
    RunStatus,
    StopReason,
    dump,
    migrate_best_meta,
    migrate_epochs,
    migrate_flags,
    migrate_status,
    migrate_summary,
)
from popvae.population.folder_io import read_json, read_rows, write_json, write_rows

if TYPE_CHECKING:
    from torch import nn

CONFIG = "config.json"
STATUS = "status.json"
HISTORY = "history.parquet"
LINEAGE = "lineage.json"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest.pt"
BEST = "best.pt"
MODEL = "model.pt"  # a robust job's trained model
PLOTS = "plots"
JOBS = "jobs"
CHECKPOINT_NAMES = (BEST, MODEL)  # what a run folder / a robust-job folder offers to evaluate
TEMP_MARKS = (".tmp", ".staged")  # the suffixes of `models.atomic` / `models.integrity` files not yet renamed

# What checkpoints/latest.pt holds: enough to resume every member exactly (plus "member_weights", each member's own,
# in a run without the broadcast).
CHECKPOINT_KEYS = frozenset({"epochs_done", "taus", "patience", "flags", "weights", "optimizers"})


def rel(*parts: str) -> str:
    """A path inside a run folder as the confined reader takes it: plain names joined by '/'."""
    return "/".join(parts)


def job_status_rel(job_id: str) -> str:
    return rel(JOBS, job_id, STATUS)


@dataclass
class Checkpoint:
    """checkpoints/latest.pt: taus, patience and flags per member, the broadcast weights, every optimizer state."""

    epochs_done: int
    taus: dict[int, float]
    patience: dict[int, int]
    flags: dict[int, list[str]]
    weights: dict[str, Any]  # tensors
    optimizers: dict[int, Any]
    member_weights: dict[int, dict[str, Any]] | None = None  # each member's own, when the run does not broadcast

    def state(self) -> dict[str, Any]:
        """The dict torch saves (only tensors, numbers, strings and containers: it loads with weights_only)."""
        state = {"schema_version": SCHEMA_VERSION, "epochs_done": self.epochs_done, "taus": self.taus,
                 "patience": self.patience, "flags": self.flags, "weights": self.weights, "optimizers": self.optimizers}
        if self.member_weights is not None:
            state["member_weights"] = self.member_weights
        return state

    @classmethod
    def of_state(cls, state: Any) -> Checkpoint:
        """ValueError when `state` is not what `state()` writes."""
        if not isinstance(state, dict) or not CHECKPOINT_KEYS <= state.keys():
            raise ValueError("not a popvae run checkpoint")
        flags = state["flags"]
        if state.get("schema_version", 1) < SCHEMA_VERSION:  # its flags' epochs counted from 0
            flags = {i: migrate_flags(f) for i, f in flags.items()}
        return cls(int(state["epochs_done"]), state["taus"], state["patience"], flags, state["weights"],
                   state["optimizers"], state.get("member_weights"))


# --- parsers: what every reader (the confined service included) validates a file's content with ---
def parse_status(raw: Any) -> RunStatus:
    return RunStatus.model_validate(migrate_status(raw))


def parse_job_status(raw: Any) -> JobStatus:
    return JobStatus.model_validate(raw)


def parse_history(rows: list[dict[str, Any]]) -> list[HistoryRow]:
    return [HistoryRow.model_validate(r) for r in migrate_epochs(rows)]


def parse_lineage(raw: Any) -> list[LineageEntry]:
    if not isinstance(raw, list):
        raise ValueError(f"{LINEAGE} must hold a list of generations, not a {type(raw).__name__}")
    return [LineageEntry.model_validate(g) for g in migrate_epochs(raw)]


def parse_summary(raw: Any) -> RunResult:
    return RunResult.model_validate(migrate_summary(raw))


# --- decisions over plain data ---
def learning_curve(rows: Iterable[HistoryRow]) -> list[CurvePoint]:
    """Per generation, in order: the best member's validation-subset MSEs (relaxed and hard codes; None where not
    recorded or not finite) against the compute spent so far, the steps one member took (the most any member took in
    each generation, summed) and all members' steps: the x axes of "who is ahead at which budget"."""
    by_epoch: dict[int, list[HistoryRow]] = {}
    for row in rows:
        by_epoch.setdefault(row.epoch, []).append(row)
    points, per_member, total = [], 0, 0
    for epoch in sorted(by_epoch):
        generation = by_epoch[epoch]
        per_member += max(r.steps for r in generation)
        total += sum(r.steps for r in generation)
        best = next((r for r in generation if r.is_best), min(generation, key=lambda r: r.member))
        points.append(CurvePoint(generation=epoch, member=best.member, mse=_finite(best.curve_mse),
                                 mse_hard=_finite(best.curve_mse_hard), steps_per_member=per_member,
                                 member_steps_total=total))
    return points


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def run_kind(config: Any, has_status: bool, job_ids: Iterable[str]) -> RunKind | None:
    """robust or evaluation when the config says so; population when the run has a population status or config;
    evaluation when its only contents are evaluation jobs; None for anything else."""
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind in ("robust", "evaluation"):
        return kind
    if has_status or (isinstance(config, dict) and "members" in config):
        return "population"
    return "evaluation" if any(j.startswith("evaluation") for j in job_ids) else None


def effective_state(recorded: RunState, lock_held: bool | None) -> RunState:
    """The state a reader reports: a run still `running` (or `scoring`) whose lock nobody holds lost its driver, so it
    is `interrupted` (resumable); `lock_held` None means it cannot be known here (another host), so trust the file."""
    return "interrupted" if recorded in ("running", "scoring") and lock_held is False else recorded


def effective_job_state(recorded: JobState, locks_held: Iterable[bool | None]) -> JobState:
    """A queued or running job whose job or run lock nobody holds lost the process that ran it: `interrupted`."""
    return "interrupted" if recorded in ("queued", "running") and False in tuple(locks_held) else recorded


def jobs_state(states: Iterable[JobState]) -> RunState | None:
    """The state of a run made of jobs (robust, evaluation), for a reader: running while any job is queued or
    running, else failed or interrupted if any is, else done; None without jobs."""
    states = set(states)
    for busy, state in ((("queued", "running"), "running"), (("failed",), "failed"), (("interrupted",), "interrupted")):
        if states & set(busy):
            return state  # type: ignore[return-value]
    return "done" if states else None


def find_checkpoint(target: Path) -> Path:
    """A checkpoint file, or the one a run / job folder holds (best.pt, else model.pt); FileNotFoundError otherwise."""
    target = Path(target)
    if target.is_dir():
        found = [target / name for name in CHECKPOINT_NAMES if (target / name).is_file()]
        if not found:
            raise FileNotFoundError(f"no {' or '.join(CHECKPOINT_NAMES)} in {target}: not a finished run or job folder")
        return found[0]
    if not target.is_file():
        raise FileNotFoundError(f"{target} not found: give a run or job folder, or a checkpoint file")
    return target


@dataclass(frozen=True)
class RunFolder:
    """One run (or job) folder: its files' paths, and typed reads and writes of each."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def holding(cls, checkpoint: Path) -> RunFolder:
        """The run folder a checkpoint belongs to: its own folder, or the run above RUN/jobs/<id>/."""
        folder = Path(checkpoint).parent
        return cls(folder.parent.parent if folder.parent.name == JOBS else folder)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY

    @property
    def lineage_path(self) -> Path:
        return self.path / LINEAGE

    @property
    def summary_path(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def latest_path(self) -> Path:
        return self.checkpoints_dir / LATEST

    @property
    def best_path(self) -> Path:
        return self.path / BEST

    @property
    def model_path(self) -> Path:
        return self.path / MODEL

    @property
    def plots_dir(self) -> Path:
        return self.path / PLOTS

    @property
    def jobs_dir(self) -> Path:
        return self.path / JOBS

    def job(self, job_id: str) -> RunFolder:
        """The folder of job `job_id` (RUN/jobs/<id>/): the same file names."""
        return RunFolder(self.jobs_dir / job_id)

    def job_ids(self) -> list[str]:
        return sorted(p.name for p in self.jobs_dir.iterdir() if p.is_dir()) if self.jobs_dir.is_dir() else []

    # --- config.json ---
    def read_config_data(self) -> Any:
        """config.json as JSON (OSError, ValueError): a run's RunConfig, a robust plan or a job's settings."""
        return read_json(self.config_path)

    def read_config(self) -> RunConfig:
        """config.json as a RunConfig; ConfigError (a ValueError) when it holds none, OSError when it is missing."""
        data = self.read_config_data()
        if not isinstance(data, dict):
            raise ValueError(f"it must hold a mapping of settings, not a {type(data).__name__}")
        return parse_config(data)

    def write_config(self, config: RunConfig | dict[str, Any]) -> None:
        write_json(self.config_path, config.model_dump(mode="json") if isinstance(config, RunConfig) else config)

    # --- status.json ---
    def read_status(self) -> RunStatus:
        return parse_status(read_json(self.status_path))

    def write_status(self, status: RunStatus) -> None:
        write_json(self.status_path, dump(status))

    def read_job_status(self) -> JobStatus:
        return parse_job_status(read_json(self.status_path))

    def write_job_status(self, status: JobStatus) -> None:
        write_json(self.status_path, dump(status))

    def recorded_state(self) -> str | None:
        """The state status.json records (a run's or a job's), None when there is no readable one."""
        return self._recorded("state")

    def recorded_stop_reason(self) -> str | None:
        """Why status.json says the run ended, None when it does not say (or there is no readable one)."""
        return self._recorded("stop_reason")

    def _recorded(self, key: str) -> Any:
        try:
            data = read_json(self.status_path)
        except (OSError, ValueError):
            return None
        return data.get(key) if isinstance(data, dict) else None

    def set_state(self, state: RunState, only_from: Sequence[RunState] | None = None,
                  stop_reason: StopReason | None = None) -> None:
        """Rewrite the state in status.json (when it is one of `only_from`, if given), and the stop reason when given;
        no-op without a status."""
        if not self.status_path.is_file():
            return
        status = self.read_status()
        if only_from is None or status.state in only_from:
            update = {"state": state} if stop_reason is None else {"state": state, "stop_reason": stop_reason}
            self.write_status(status.model_copy(update=update))

    def state(self) -> RunState:
        """The run's state as a reader should report it (see `effective_state`)."""
        from popvae.population.folder_lock import is_held

        return effective_state(self.read_status().state, is_held(self.path))

    # --- history.parquet, lineage.json ---
    def read_history_rows(self) -> list[dict[str, Any]]:
        """history.parquet's rows as plain dicts (the plots take them), epochs from 1; [] when there is none yet."""
        return migrate_epochs(read_rows(self.history_path))

    def read_history(self) -> list[HistoryRow]:
        return parse_history(self.read_history_rows())

    def write_history(self, rows: Sequence[HistoryRow | dict[str, Any]]) -> None:
        """A population's HistoryRows, or a robust job's per-epoch dicts."""
        write_rows(self.history_path, [r.model_dump() if isinstance(r, HistoryRow) else r for r in rows])

    def learning_curve(self) -> list[CurvePoint]:
        """The run's learning curve, one point per generation trained (`learning_curve`); [] before the first."""
        return learning_curve(self.read_history())

    def read_lineage(self) -> list[LineageEntry]:
        return parse_lineage(read_json(self.lineage_path)) if self.lineage_path.exists() else []

    def write_lineage(self, entries: Sequence[LineageEntry]) -> None:
        write_json(self.lineage_path, [dump(g) for g in entries])

    # --- summary.json ---
    def read_summary(self) -> RunResult:
        return parse_summary(read_json(self.summary_path))

    def write_summary(self, summary: RunResult) -> None:
        write_json(self.summary_path, dump(summary))

    # --- checkpoints/latest.pt, best.pt ---
    def has_checkpoint(self) -> bool:
        return self.latest_path.is_file()

    def read_checkpoint(self, mmap: bool = False) -> Checkpoint:
        """checkpoints/latest.pt, its sha256 verified before torch reads it (DamagedFile, a ValueError); with `mmap` the
        tensors are mapped, not read (a check before the run starts). ValueError when it is not a run checkpoint."""
        import pickle
        import zipfile

        from popvae.models.integrity import verify

        verify(self.latest_path)
        import torch

        if mmap and not zipfile.is_zipfile(self.latest_path):  # mmap needs torch's zip format
            raise pickle.UnpicklingError(f"{LATEST} is not a torch zip archive")
        return Checkpoint.of_state(torch.load(self.latest_path, weights_only=True, mmap=mmap))

    def write_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Atomically, with its sha256 manifest; NoSpaceLeft (checked before writing) when the disk cannot hold it."""
        from popvae.models.checkpoint import atomic_torch_save

        atomic_torch_save(checkpoint.state(), self.latest_path)

    def write_best(self, model: nn.Module, meta: dict[str, Any]) -> None:
        from popvae.models.checkpoint import save_model

        save_model(self.best_path, model, meta)

    def read_best(self, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
        from popvae.models.checkpoint import load_model

        model, meta = load_model(self.best_path, map_location=map_location)
        return model, migrate_best_meta(meta)

    def write_model(self, model: nn.Module, meta: dict[str, Any]) -> None:
        """A robust job's trained model (model.pt)."""
        from popvae.models.checkpoint import save_model

        save_model(self.model_path, model, meta)

    def write_job_resume(self, state: dict[str, Any]) -> None:
        """A robust job's checkpoints/latest.pt: what resuming it needs (`population.robust.train_job` writes it)."""
        from popvae.models.checkpoint import atomic_torch_save

        atomic_torch_save(state, self.latest_path)

    def read_job_resume(self) -> dict[str, Any]:
        """A robust job's checkpoints/latest.pt, its sha256 verified before torch reads it (DamagedFile, a ValueError)."""
        from popvae.models.integrity import verify

        verify(self.latest_path)
        import torch

        return torch.load(self.latest_path, weights_only=True)

    # --- what the folder is ---
    def kind(self) -> RunKind | None:
        try:
            config = self.read_config_data()
        except (OSError, ValueError):
            config = {}
        return run_kind(config, self.status_path.is_file(), self.job_ids())

    def missing_for_resume(self) -> list[str]:
        """The files a resume needs that are not there, as paths inside the folder."""
        needed = ((CONFIG, self.config_path), (rel(CHECKPOINTS, LATEST), self.latest_path))
        return [name for name, path in needed if not path.is_file()]

    def remove_temp_files(self) -> list[Path]:
        """Remove the temp files a killed writer left (`.<name>.<random>.tmp`, `.<name>.staged`); only the folder's
        writer calls this, under the run lock, so none of them is being written. Returns what was removed."""
        removed = []
        stack = [self.path]
        while stack:
            folder = stack.pop()
            try:
                children = list(folder.iterdir())
            except OSError:
                continue
            for child in children:
                if child.is_symlink():
                    continue
                if child.is_dir():
                    stack.append(child)
                elif child.name.startswith(".") and child.name.endswith(TEMP_MARKS) and child.is_file():
                    child.unlink(missing_ok=True)
                    removed.append(child)
        return removed
