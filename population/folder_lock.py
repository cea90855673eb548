"""One writer per run folder: an exclusive OS lock on RUN_DIR/.lock, held by the process that drives the run.

The kernel releases a `flock` when its holder dies (kill -9 included), so a reader tells a live run from a crashed
one by trying the lock. The lock file names the holder (pid, host, start time) and carries a heartbeat that the
holder refreshes every `HEARTBEAT_S` seconds: a reader on another machine, where the lock of a network file system
may not be visible, goes by the heartbeat instead. No torch, no Ray: the CLI and the status service use it cheaply.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from popvae.population.config import ConfigError

LOCK_NAME = ".lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 6 * HEARTBEAT_S  # a heartbeat older than this is a holder that is gone


class RunLocked(ConfigError):
    """The folder is held by another process; the message names it (bad input: exit 2)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_holder(folder: Path) -> dict[str, Any]:
    """What the lock file says about its (last) holder; {} when it is missing or unreadable."""
    try:
        data = json.loads((Path(folder) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {holder.get('started_at')})"


def is_held(folder: Path) -> bool | None:
    """True when a live process holds the folder's lock, False when the lock file is there but free (its holder
    ended or died), None when the folder has no lock file (a run from before locks, or no run)."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return None
    finally:
        os.close(fd)  # closing drops the shared lock we may have taken
    holder = read_holder(folder)
    if holder.get("host") not in (None, socket.gethostname()) and _fresh(holder.get("heartbeat_at")):
        return True  # held on another machine, whose lock we cannot see: trust its heartbeat
    return False


def _fresh(stamp: Any) -> bool:
    try:
        age = (datetime.now(timezone.utc) - datetime.fromisoformat(str(stamp))).total_seconds()
    except ValueError:
        return False
    return age < STALE_AFTER_S


class RunLock:
    """The exclusive lock of one run folder. `acquire` creates the folder (and only the lock file in it)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.created = False
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        """RunLocked when another process holds it."""
        self.created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunLocked(f"run folder {self.folder} is in use by {describe(read_holder(self.folder))}; "
                            "wait for it to end or stop it first") from None
        self._fd = fd
        self._holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": _now()}
        self._write()
        self._beat = threading.Thread(target=self._heartbeat, name="run-lock-heartbeat", daemon=True)
        self._beat.start()

    def _write(self) -> None:
        fd = self._fd  # release() may clear it meanwhile; it joins this thread before closing the descriptor
        if fd is None:
            return
        data = json.dumps({**self._holder, "heartbeat_at": _now()}).encode()
        with contextlib.suppress(OSError):  # a full disk must not stop the run: the lock itself still holds
            os.pwrite(fd, data, 0)  # over the old content, then cut: a reader never finds the file empty
            os.ftruncate(fd, len(data))

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def release(self) -> None:
        """Let go; a folder this lock created that holds nothing else is removed again (nothing was written)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join()  # no heartbeat may write to the descriptor once it is closed (its number is reused)
            self._beat = None
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if self.created and [p.name for p in self.folder.iterdir()] == [LOCK_NAME]:
            with contextlib.suppress(OSError):
                (self.folder / LOCK_NAME).unlink()
                self.folder.rmdir()
        os.close(fd)


@contextlib.contextmanager
def holding(folder: Path) -> Iterator[RunLock]:
    lock = RunLock(folder)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
