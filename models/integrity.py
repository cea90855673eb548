"""Checked files: every checkpoint and model file has a sha256 manifest beside it (`best.pt.sha256`, in the format of
`sha256sum`), verified before torch reads a byte of the file: torch's zip reader can crash the interpreter on a
damaged archive, so a damaged file must be refused before it gets there.

A file is replaced in three atomic steps, so that a crash at any point leaves a file its manifest accepts: the new
file is staged under a temp name, the manifest lists the new and the old hash, the file is renamed into place, the
manifest lists the new hash only. A file written before manifests existed is checked by its zip CRCs instead.
Torch-free: the CLI checks files before it imports torch.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from popvae.models.atomic import NoSpaceLeft, atomic_write, replace_durably

SUFFIX = ".sha256"


class DamagedFile(ValueError):
    """The file does not match its manifest, or is no intact zip archive; the message names the file, `reason`
    says what is wrong without it."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path} is {reason}")
        self.reason = reason


def manifest_of(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _listed(path: Path) -> list[str]:
    """The hashes the manifest accepts for `path` (empty when there is none)."""
    try:
        lines = manifest_of(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [line.split()[0] for line in lines if line.split() and len(line.split()[0]) == 64]


def _write_manifest(path: Path, hashes: list[str]) -> None:
    text = "".join(f"{h}  {path.name}\n" for h in dict.fromkeys(hashes))
    atomic_write(manifest_of(path), lambda fh: fh.write(text.encode()))


def checked_write(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """`write(fh)` into `path` atomically, with its manifest (see the module's note on the order)."""
    path = Path(path)
    staged = path.with_name(f".{path.name}.staged")
    try:
        atomic_write(staged, write)
    except NoSpaceLeft as err:  # name the file being written, not its staging name
        raise NoSpaceLeft(path) from err
    new = file_sha256(staged)
    _write_manifest(path, [new, *_listed(path)])
    replace_durably(staged, path)
    _write_manifest(path, [new])


def verify(path: str | Path) -> None:
    """DamagedFile unless `path` matches its manifest (or, without one, is a zip archive whose CRCs all hold)."""
    path = Path(path)
    listed = _listed(path)
    if manifest_of(path).exists() and not listed:
        raise DamagedFile(path, f"damaged: its manifest {manifest_of(path).name} holds no sha256")
    if listed:
        if file_sha256(path) not in listed:
            raise DamagedFile(path, f"damaged: its sha256 does not match {manifest_of(path).name}")
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise DamagedFile(path, f"damaged, or not a file written by torch.save ({err})") from None
    if bad is not None:
        raise DamagedFile(path, f"damaged: the CRC of {bad} in it does not match")
