"""How a run's files are written so that a crash never leaves half a file, and read back. What each file of a run
folder is called and holds is `population.run_folder.RunFolder`'s to say."""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from popvae.models.atomic import atomic_write


def file_in_the_way(folder: Path) -> Path | None:
    """The file (if any) at `folder` or one of its parents that would stop the folder being created."""
    return next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, lambda fh: fh.write(json.dumps(obj, indent=2, default=str).encode()))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_rows(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write all rows as one Parquet table (small: a row per member per epoch), built in memory first so that a full
    disk fails in the plain file write (NoSpaceLeft), not inside Arrow. Arrow is imported here, not at start-up."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(list(rows)), buffer)
    atomic_write(path, lambda fh: fh.write(buffer.getbuffer()))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a parquet file ([] when there is none), read through one open: Arrow given a path opens it again
    for the pages after the footer, and a writer's rename in between would pair the old footer with the new file."""
    import pyarrow.parquet as pq

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    return pq.read_table(io.BytesIO(data)).to_pylist()
