"""What a run folder holds beyond its status: its kind, pictures and reports, and the one safe way to serve a file.

`safe_file` is the only path from a URL to a file: a relative path of plain names (no `..`, no hidden parts),
resolved (symlinks followed) and required to stay inside the run folder, with an allowed suffix. Anything else
is NotFound, so that a crafted path never reads outside the run or answers a 500.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from popvae.cluster.api_models import Picture
from popvae.cluster.run_store import NotFound, Refused, read_json_confined
from popvae.population import run_folder as rf
from popvae.population.contract import RunKind

MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
               ".md": "text/markdown; charset=utf-8", ".csv": "text/csv; charset=utf-8"}
_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@+=-]{0,127}$")
_MAX_LISTED = 200  # pictures or reports listed per run: a big evaluation must not make the overview slow
_SKIP = {rf.CHECKPOINTS, "tensorboard"}

_TITLES = {
    "tau.png": "tau per member over epochs (used that epoch; circle: the best member)",
    "loss.png": "selection loss per member over epochs (circle: the best member)",
    "reconstructions.png": "test images (top row) and the best model's reconstructions",
}


def read_json_or(run_dir: Path, name: str, default: Any) -> Any:
    """The JSON file `name` of the run, or `default` when it is missing or damaged; Refused (never the default) when it
    is a link out of the folder, so that the answer says why rather than pretend the file is absent."""
    try:
        return read_json_confined(run_dir, name)
    except Refused:
        raise
    except (OSError, ValueError):
        return default


def run_kind(run_dir: Path) -> RunKind | None:
    """The run's kind (`run_folder.run_kind`), its config read confined to the folder."""
    folder = rf.RunFolder(run_dir)
    return rf.run_kind(read_json_or(run_dir, rf.CONFIG, {}), folder.status_path.is_file(), folder.job_ids())


def _walk(run_dir: Path, suffix: str) -> list[str]:
    found: list[str] = []
    stack = [run_dir]
    while stack and len(found) < _MAX_LISTED:
        folder = stack.pop()
        try:
            children = sorted(folder.iterdir())
        except OSError:
            continue
        for child in children:
            if not _PART.match(child.name) or child.is_symlink():
                continue
            if child.is_dir() and child.name not in _SKIP:
                stack.append(child)
            elif child.suffix == suffix and child.is_file():
                found.append(child.relative_to(run_dir).as_posix())
    return sorted(found)[:_MAX_LISTED]


def pictures(run_dir: Path) -> list[Picture]:
    out = []
    for rel in _walk(run_dir, ".png"):
        name = rel.rsplit("/", 1)[-1]
        where = rel.rsplit("/", 1)[0] if "/" in rel else "run folder"
        out.append(Picture(path=rel, title=_TITLES.get(name, f"{name.removesuffix('.png').replace('_', ' ')} ({where})")))
    return out


def reports(run_dir: Path) -> list[str]:
    return _walk(run_dir, ".md")


def safe_file(run_dir: Path, rel: str) -> tuple[Path, str]:
    """The file `rel` inside `run_dir` and its media type; NotFound for anything outside, hidden, odd or not served."""
    parts = rel.split("/")
    if not rel or len(parts) > 8 or not all(_PART.match(p) for p in parts):
        raise NotFound(f"file {rel!r} not found")
    media = MEDIA_TYPES.get(Path(parts[-1]).suffix.lower())
    if media is None:
        raise NotFound(f"file {rel!r} not found (only {', '.join(sorted(MEDIA_TYPES))} files are served)")
    root = run_dir.resolve()
    try:
        path = (root / Path(*parts)).resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise NotFound(f"file {rel!r} not found") from e
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(f"file {rel!r} not found")
    if path.stat().st_nlink > 1:
        raise Refused(f"file {rel!r} has other hard links; the service serves only files the run wrote itself")
    return path, media
