"""Read-only access to the run folders under one root, with the failures a reader must expect.

Every read goes through here so that the HTTP layer only maps two exceptions to status codes:
`NotFound` (404) and `Unreadable` (503: the file exists but is corrupt or half-migrated).
Parsed files are cached by (mtime, size) because the service is polled far more often than a
run writes, and re-parsing the Parquet history on every request would cost the training CPU.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from popvae.cluster.api_models import ID_PATTERN
from popvae.population.contract import HistoryRow, JobStatus, LineageEntry, RunStatus
from popvae.population.rundir import read_json, read_rows
from popvae.population.runlock import is_held

_ID_RE = re.compile(ID_PATTERN)

T = TypeVar("T")


class NotFound(LookupError):
    """No such run, member or job."""


class Unreadable(RuntimeError):
    """The file is there but cannot be parsed or does not match its schema."""


class _FileCache:
    """Parsed file contents keyed by path, invalidated when the file's mtime or size changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Path, str], tuple[tuple[int, int], Any]] = {}

    def get(self, path: Path, kind: str, parse: Callable[[Path], T]) -> T:
        try:
            st = path.stat()
        except FileNotFoundError as e:
            raise NotFound(str(path)) from e
        stamp = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._entries.get((path, kind))
        if hit is not None and hit[0] == stamp:
            return hit[1]
        value = parse(path)
        with self._lock:
            self._entries[(path, kind)] = (stamp, value)
        return value


def _parse(path: Path, load: Callable[[Path], Any], validate: Callable[[Any], T]) -> T:
    try:
        return validate(load(path))
    except FileNotFoundError as e:
        raise NotFound(str(path)) from e
    except (ValueError, TypeError, ValidationError, OSError) as e:  # JSONDecodeError and ArrowInvalid are ValueErrors
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Unreadable(f"{path.name} is unreadable: {first_line}") from e


def _status(raw: Any) -> RunStatus:
    return RunStatus.model_validate(raw)


def _history(raw: list[dict[str, Any]]) -> list[HistoryRow]:
    return [HistoryRow.model_validate(r) for r in raw]


def _job(raw: Any) -> JobStatus:
    return JobStatus.model_validate(raw)


def _lineage(raw: Any) -> list[LineageEntry]:
    if not isinstance(raw, list):
        raise ValueError("lineage.json must hold a list of generations")
    return [LineageEntry.model_validate(g) for g in raw]


class RunStore:
    """The runs under `root`: each a folder holding `config.json` or `status.json`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache = _FileCache()

    def run_dir(self, run_id: str) -> Path:
        if not _ID_RE.match(run_id):
            raise NotFound(f"run {run_id!r} not found")
        path = self.root / run_id
        if not self._inside(path) or not ((path / "status.json").is_file() or (path / "config.json").is_file()):
            raise NotFound(f"run {run_id!r} not found")
        return path

    def _inside(self, path: Path) -> bool:
        """A folder under the root, also once links are resolved: a symlinked run folder that points outside the
        runs root is not followed."""
        try:
            return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(self.root)))
        except OSError:
            return False

    def run_ids(self, population_only: bool = False) -> list[str]:
        """Runs, most recently updated first (by the mtime of status.json, else config.json); with
        `population_only`, only runs that have a population status (robust-job runs have none)."""
        found: list[tuple[float, str]] = []
        try:
            children = list(self.root.iterdir())
        except OSError:
            return []
        for child in children:
            if not _ID_RE.match(child.name) or (child.is_symlink() and not self._inside(child)):
                continue
            for name in ("status.json",) if population_only else ("status.json", "config.json"):
                try:
                    found.append((-(child / name).stat().st_mtime, child.name))
                    break
                except OSError:
                    continue
        return [run_id for _, run_id in sorted(found)]

    def status(self, run_id: str) -> RunStatus:
        path = self.run_dir(run_id) / "status.json"
        if not path.exists():
            raise NotFound(f"run {run_id!r} has no population status (status.json), or not yet")
        status = self._cache.get(path, "status", lambda p: _parse(p, read_json, _status))
        changes: dict[str, Any] = {}
        if status.run_id != run_id:  # a run is named by its folder: one moved or copied must not answer with its old name
            changes["run_id"] = run_id
        if status.state == "running" and is_held(path.parent) is False:  # its driver is gone: the kernel freed the lock
            changes["state"] = "interrupted"
        return status.model_copy(update=changes) if changes else status

    def history(self, run_id: str) -> list[HistoryRow]:
        path = self.run_dir(run_id) / "history.parquet"
        if not path.exists():
            return []
        return self._cache.get(path, "history", lambda p: _parse(p, read_rows, _history))

    def lineage(self, run_id: str) -> list[LineageEntry]:
        path = self.run_dir(run_id) / "lineage.json"
        if not path.exists():
            return []
        return self._cache.get(path, "lineage", lambda p: _parse(p, read_json, _lineage))

    def job_ids(self, run_id: str) -> list[str]:
        jobs = self.run_dir(run_id) / "jobs"
        if not jobs.is_dir():
            return []
        return sorted(p.name for p in jobs.iterdir() if p.is_dir() and _ID_RE.match(p.name) and self._inside(p))

    def job(self, run_id: str, job_id: str) -> JobStatus:
        if not _ID_RE.match(job_id):
            raise NotFound(f"job {job_id!r} not found")
        path = self.run_dir(run_id) / "jobs" / job_id / "status.json"
        if not path.exists() or not self._inside(path.parent):
            raise NotFound(f"job {job_id!r} not found in run {run_id!r}")
        job = self._cache.get(path, "job", lambda p: _parse(p, read_json, _job))
        if job.state in ("queued", "running") and False in (is_held(path.parent), is_held(path.parent.parent.parent)):
            return job.model_copy(update={"state": "interrupted"})  # the process that ran it is gone
        return job
