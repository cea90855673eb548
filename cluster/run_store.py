"""Read-only access to the run folders under one root, with the failures a reader must expect.

Every read goes through here so that the HTTP layer only maps two exceptions to status codes:
`NotFound` (404) and `Unreadable` (503: the file exists but is corrupt or half-migrated).
Parsed files are cached by (mtime, size) because the service is polled far more often than a
run writes, and re-parsing the Parquet history on every request would cost the training CPU.

Every file is read through `read_confined`, which answers `Refused` (403) for a file that is not plainly the
run's own: a symlink anywhere below the run folder, a file with other hard links (a hard link can name any file
on the same filesystem, and popvae's writers never make one: they write a temp file and rename it), or something
that is not a regular file. Without it a run folder could hand the service any file its user can read.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq
from pydantic import ValidationError

from popvae.cluster.api_models import ID_PATTERN
from popvae.population import run_folder as rf
from popvae.population.contract import HistoryRow, JobStatus, LineageEntry, RunStatus
from popvae.population.folder_lock import is_held

_ID_RE = re.compile(ID_PATTERN)
MAX_READ_BYTES = 256 * 1024 * 1024  # no file a run writes comes near this; a bigger one is not parsed by the service

T = TypeVar("T")


class NotFound(LookupError):
    """No such run, member or job."""


class Unreadable(RuntimeError):
    """The file is there but cannot be parsed or does not match its schema."""


class Refused(Unreadable):
    """The file is a link out of its run folder (or otherwise not the run's own): never read, never served."""


def read_confined(run_dir: Path, rel: str) -> bytes:
    """The bytes of `rel` (a path of plain names) inside `run_dir`, opened one component at a time without following
    any symlink, so nothing can swap a link in between a check and the read. FileNotFoundError when it is missing,
    Refused when it is a symlink, hard-linked, not a regular file or too big."""
    base = os.open(os.path.realpath(run_dir), os.O_RDONLY | os.O_DIRECTORY)
    fds = [base]
    try:
        parts = rel.split("/")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | (0 if last else os.O_DIRECTORY)
            try:
                fds.append(os.open(part, flags, dir_fd=fds[-1]))
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR) and _is_link(part, fds[-1]):
                    raise Refused(f"{rel} goes through a symbolic link; only files inside the run folder are read") from e
                raise
        st = os.fstat(fds[-1])
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{rel} is not a regular file")
        if st.st_nlink > 1:
            raise Refused(f"{rel} has {st.st_nlink} hard links; the service reads only files the run wrote itself")
        if st.st_size > MAX_READ_BYTES:
            raise Refused(f"{rel} is {st.st_size} bytes, over the service's limit of {MAX_READ_BYTES}")
        with os.fdopen(fds.pop(), "rb") as fh:
            return fh.read(MAX_READ_BYTES + 1)
    finally:
        for fd in fds:
            os.close(fd)


def _is_link(name: str, dir_fd: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def read_json_confined(run_dir: Path, rel: str) -> Any:
    return json.loads(read_confined(run_dir, rel))


def _read_rows_confined(run_dir: Path, rel: str) -> list[dict[str, Any]]:
    return pq.read_table(io.BytesIO(read_confined(run_dir, rel))).to_pylist()


class _FileCache:
    """Parsed file contents keyed by path, invalidated when the file's mtime or size changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Path, str], tuple[tuple[int, int], Any]] = {}

    def get(self, path: Path, kind: str, parse: Callable[[Path], T]) -> T:
        try:
            st = path.lstat()  # the entry itself: a file swapped for a link must not hit the cache of the file
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


def _parse(path: Path, load: Callable[[], Any], validate: Callable[[Any], T]) -> T:
    try:
        return validate(load())
    except FileNotFoundError as e:
        raise NotFound(str(path)) from e
    except Refused:
        raise
    except (ValueError, TypeError, ValidationError, OSError) as e:  # JSONDecodeError and ArrowInvalid are ValueErrors
        first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise Unreadable(f"{path.name} is unreadable: {first_line}") from e


class RunStore:
    """The runs under `root`: each a folder holding a config or a status (names and parsers: `RunFolder`'s)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache = _FileCache()

    def run_dir(self, run_id: str) -> Path:
        if not _ID_RE.match(run_id):
            raise NotFound(f"run {run_id!r} not found")
        folder = rf.RunFolder(self.root / run_id)
        if not self._inside(folder.path) or not (folder.status_path.is_file() or folder.config_path.is_file()):
            raise NotFound(f"run {run_id!r} not found")
        return folder.path

    def _inside(self, path: Path) -> bool:
        """A folder under the root, also once links are resolved: a symlinked run folder that points outside the
        runs root is not followed."""
        try:
            return Path(os.path.realpath(path)).is_relative_to(Path(os.path.realpath(self.root)))
        except OSError:
            return False

    def run_ids(self, population_only: bool = False) -> list[str]:
        """Runs, most recently updated first (by the mtime of the status, else the config); with
        `population_only`, only runs that have a population status (robust-job runs have none)."""
        found: list[tuple[float, str]] = []
        try:
            children = list(self.root.iterdir())
        except OSError:
            return []
        for child in children:
            if not _ID_RE.match(child.name) or (child.is_symlink() and not self._inside(child)):
                continue
            folder = rf.RunFolder(child)
            for path in (folder.status_path,) if population_only else (folder.status_path, folder.config_path):
                try:
                    found.append((-path.stat().st_mtime, child.name))
                    break
                except OSError:
                    continue
        return [run_id for _, run_id in sorted(found)]

    def status(self, run_id: str) -> RunStatus:
        path = rf.RunFolder(self.run_dir(run_id)).status_path
        if not path.exists():
            raise NotFound(f"run {run_id!r} has no population status ({rf.STATUS}), or not yet")
        status = self._cache.get(path, "status",
                                 lambda p: _parse(p, lambda: read_json_confined(p.parent, rf.STATUS), rf.parse_status))
        changes: dict[str, Any] = {}
        if status.run_id != run_id:  # a run is named by its folder: one moved or copied must not answer with its old name
            changes["run_id"] = run_id
        if (state := rf.effective_state(status.state, is_held(path.parent))) != status.state:  # its driver is gone
            changes["state"] = state
        return status.model_copy(update=changes) if changes else status

    def history(self, run_id: str) -> list[HistoryRow]:
        path = rf.RunFolder(self.run_dir(run_id)).history_path
        if not path.exists():
            return []
        return self._cache.get(path, "history",
                               lambda p: _parse(p, lambda: _read_rows_confined(p.parent, rf.HISTORY), rf.parse_history))

    def lineage(self, run_id: str) -> list[LineageEntry]:
        path = rf.RunFolder(self.run_dir(run_id)).lineage_path
        if not path.exists():
            return []
        return self._cache.get(path, "lineage",
                               lambda p: _parse(p, lambda: read_json_confined(p.parent, rf.LINEAGE), rf.parse_lineage))

    def job_ids(self, run_id: str) -> list[str]:
        jobs = rf.RunFolder(self.run_dir(run_id)).jobs_dir
        if not jobs.is_dir():
            return []
        return sorted(p.name for p in jobs.iterdir() if p.is_dir() and _ID_RE.match(p.name) and self._inside(p))

    def job(self, run_id: str, job_id: str) -> JobStatus:
        if not _ID_RE.match(job_id):
            raise NotFound(f"job {job_id!r} not found")
        run_dir = self.run_dir(run_id)
        path = rf.RunFolder(run_dir).job(job_id).status_path
        if not path.exists() or not self._inside(path.parent):
            raise NotFound(f"job {job_id!r} not found in run {run_id!r}")
        rel = rf.job_status_rel(job_id)
        job = self._cache.get(path, "job", lambda p: _parse(p, lambda: read_json_confined(run_dir, rel), rf.parse_job_status))
        state = rf.effective_job_state(job.state, (is_held(path.parent), is_held(run_dir)))  # its process may be gone
        return job.model_copy(update={"state": state}) if state != job.state else job
