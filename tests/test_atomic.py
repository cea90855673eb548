"""Atomic writes: a failing writer leaves the old file and no temp file behind; a reader never sees half of a rewrite."""

from __future__ import annotations

import threading

import pytest

from popvae.models.atomic import atomic_write
from popvae.population.folder_io import read_json, read_rows, write_json, write_rows


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "status.json"
    write_json(path, {"state": "running"})

    def broken(fh):
        fh.write(b'{"state": "do')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, broken)
    assert read_json(path) == {"state": "running"}
    assert [p.name for p in path.parent.iterdir()] == ["status.json"]


def test_history_read_while_it_is_rewritten_is_always_a_whole_table(tmp_path):
    """A run rewrites history.parquet every generation while the service and the console read it. Arrow given a
    path opened the file twice (footer, then pages), so a rename in between raised "Page was smaller than expected"
    in about one read in seven here; read_rows reads one open file."""
    path = tmp_path / "history.parquet"
    write_rows(path, [{"epoch": 0, "loss": 0.0}])
    done = threading.Event()

    def rewrite() -> None:
        n = 1
        while not done.is_set():
            write_rows(path, [{"epoch": i, "loss": float(i), "note": "x" * (i % 7)} for i in range(n)])
            n = n % 200 + 1

    writer = threading.Thread(target=rewrite)
    writer.start()
    try:
        tables = [read_rows(path) for _ in range(1500)]
    finally:
        done.set()
        writer.join()
    assert all(rows and [r["epoch"] for r in rows] == list(range(len(rows))) for rows in tables)
