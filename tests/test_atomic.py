"""Atomic writes: a failing writer leaves the old file and no temp file behind."""

from __future__ import annotations

import pytest

from popvae.models.atomic import atomic_write
from popvae.population.folder_io import read_json, write_json


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
