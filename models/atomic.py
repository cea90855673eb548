"""Atomic file writes, shared by checkpoints and every run-folder file: a crash or a kill leaves the old
file or the new one, never half of either. Torch-free, so that the service and the CLI can use it cheaply."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(fh)` into a temp file beside `path`, fsync it, rename it over `path`, then fsync the folder so that
    the rename itself survives a power loss."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    replace_durably(tmp, path)


def replace_durably(src: str | Path, path: str | Path) -> None:
    """Rename `src` over `path`, then fsync the folder so that the rename itself survives a power loss."""
    try:
        os.replace(src, path)
    except BaseException:
        Path(src).unlink(missing_ok=True)
        raise
    folder = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
