"""Atomic file writes, shared by checkpoints and every run-folder file: a crash or a kill leaves the old
file or the new one, never half of either. A full disk (or quota) is said in one line naming the file
(`NoSpaceLeft`), not as whatever the writing library made of it. Torch-free, so that the service and the CLI
can use it cheaply."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

FULL = (errno.ENOSPC, errno.EDQUOT)
SPARE_BYTES = 1 << 20  # room left beside a checked write: its manifest and the folder's own metadata


class NoSpaceLeft(OSError):
    """No space left on the device (or over quota) while writing `path`: one line that names the file."""

    def __init__(self, path: str | Path, detail: str = "") -> None:
        self.path, self.detail = str(path), detail
        super().__init__(errno.ENOSPC, f"no space left on device while writing {path}{detail}", str(path))

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # Ray ships it from the actor that wrote to the driver
        return NoSpaceLeft, (self.path, self.detail)


def ensure_space(path: str | Path, nbytes: int) -> None:
    """NoSpaceLeft, before anything is written, when `path`'s filesystem has less than `nbytes` (plus a spare MiB)
    free for unprivileged writers."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < nbytes + SPARE_BYTES:
        raise NoSpaceLeft(path, f" (it needs {nbytes} bytes, {free} are free)")


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(fh)` into a temp file beside `path`, fsync it, rename it over `path`, then fsync the folder so that
    the rename itself survives a power loss. NoSpaceLeft when the disk is full (nothing is left behind)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        _raise_if_full(err, path)
        raise
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        _raise_if_full(err, path)
        raise
    replace_durably(tmp, path)


def _raise_if_full(err: BaseException, path: Path) -> None:
    """ENOSPC and EDQUOT raised again as NoSpaceLeft naming `path`; the caller re-raises anything else as it was."""
    if isinstance(err, OSError) and err.errno in FULL and not isinstance(err, NoSpaceLeft):
        raise NoSpaceLeft(path) from err


def replace_durably(src: str | Path, path: str | Path) -> None:
    """Rename `src` over `path`, then fsync the folder so that the rename itself survives a power loss."""
    try:
        os.replace(src, path)
    except BaseException as err:
        Path(src).unlink(missing_ok=True)
        _raise_if_full(err, Path(path))
        raise
    folder = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    except OSError as err:
        _raise_if_full(err, Path(path))
        raise
    finally:
        os.close(folder)
