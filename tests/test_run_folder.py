"""RunFolder: the one place that knows a run folder's file names, its typed reads and writes, the run kind and the
effective state; and the writes it relies on failing in one clear line when the disk is full."""

from __future__ import annotations

import errno
import math
import pickle
import re
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
from fake_runs import history_rows, job, status

from popvae.models import atomic
from popvae.models.atomic import NoSpaceLeft, atomic_write
from popvae.population import run_folder as rf
from popvae.population.config import ConfigError, RunConfig
from popvae.population.contract import LineageEntry, RunResult
from popvae.population.preflight import resume_config
from popvae.population.run_folder import Checkpoint, RunFolder, effective_job_state, effective_state, run_kind

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("models", "attacks", "population", "cluster", "popvae")
NAMES = ("status.json", "history.parquet", "best.pt", "latest.pt", "lineage.json", "config.json", "summary.json")


def test_each_file_name_is_spelled_once_in_the_source_in_the_run_folder_module() -> None:
    pattern = re.compile("|".join(f'"{re.escape(n).replace(chr(92) + ".", ".")}"' for n in NAMES))  # grep's '.'
    found: dict[str, list[str]] = {}
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".js", ".css", ".html", ".sh", ".yaml"):
                for line in path.read_text(errors="replace").splitlines():
                    for hit in pattern.findall(line):
                        found.setdefault(hit, []).append(str(path.relative_to(ROOT)))
    assert found == {f'"{n}"': ["population/run_folder.py"] for n in NAMES}


def test_every_file_round_trips_through_its_schema(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "r1")
    cfg = RunConfig(dataset="synthetic", members=3, epochs=4)
    folder.write_config(cfg)
    assert folder.read_config() == cfg and folder.config_path == tmp_path / "r1" / "config.json"
    folder.write_status(rf.parse_status(status("r1", 2, 4, 3, state="stopped")))
    assert folder.read_status().state == "stopped" and folder.recorded_state() == "stopped"
    folder.write_history(history_rows(2, 3))
    rows = folder.read_history()
    assert [r.epoch for r in rows] == [0, 0, 0, 1, 1, 1] and math.isnan(rows[4].loss_total)  # Parquet keeps NaN
    entry = LineageEntry(epoch=0, best=2, best_loss=float("nan"), received={"1": 2}, tau_before={"1": 1.0},
                         tau_after={"1": 1.1})
    folder.write_lineage([entry])
    assert folder.read_lineage()[0].best == 2 and folder.read_lineage()[0].best_loss is None  # JSON has no NaN
    result = RunResult(run_id="r1", best_member=2, best_tau=1.1, best_epoch=1, select_on="val", baseline=False,
                       test_mse=0.02, test_loss=float("nan"), test_images=16, evaluation="how", epochs_done=2)
    folder.write_summary(result)
    assert folder.read_summary() == result.model_copy(update={"test_loss": None})
    folder.job("job-a").write_job_status(job("job-a"))
    assert folder.job_ids() == ["job-a"] and folder.job("job-a").read_job_status().state == "running"
    assert folder.job("job-a").path == tmp_path / "r1" / "jobs" / "job-a"
    assert folder.latest_path == tmp_path / "r1" / "checkpoints" / "latest.pt" and folder.kind() == "population"


def test_a_config_that_is_no_run_config_is_refused_naming_why(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.write_config({"kind": "robust"})
    assert folder.read_config_data() == {"kind": "robust"} and folder.kind() == "robust"
    folder.config_path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping of settings, not a list"):
        folder.read_config()


def test_checkpoint_keys_are_checked() -> None:
    state = Checkpoint(3, {1: 1.0}, {1: 0}, {1: []}, {}, {}).state()
    assert rf.CHECKPOINT_KEYS == state.keys() and Checkpoint.of_state(state).epochs_done == 3
    assert "member_weights" not in state and Checkpoint.of_state({**state, "member_weights": {1: {}}}).member_weights
    with pytest.raises(ValueError, match="not a popvae run checkpoint"):
        Checkpoint.of_state({"epochs_done": 1})


@pytest.mark.parametrize("config, has_status, jobs, kind", [
    ({"kind": "robust"}, False, [], "robust"),
    ({"kind": "evaluation"}, True, [], "evaluation"),
    ({"members": 3}, False, [], "population"),
    ({}, True, [], "population"),
    ("not a mapping", False, ["evaluation-1"], "evaluation"),
    ({}, False, ["vae-kl"], None),
])
def test_run_kind(config: object, has_status: bool, jobs: list[str], kind: str | None) -> None:
    assert run_kind(config, has_status, jobs) == kind


def test_effective_state_running_or_scoring_without_its_writer_is_interrupted() -> None:
    assert effective_state("running", False) == "interrupted"
    assert effective_state("scoring", False) == "interrupted"
    assert effective_state("scoring", True) == "scoring"
    assert effective_state("running", None) == "running"  # the lock cannot be checked from here: trust the file
    assert effective_state("done", False) == "done"
    assert effective_job_state("queued", (True, False)) == "interrupted"
    assert effective_job_state("running", (True, True)) == "running"
    assert effective_job_state("failed", (False, False)) == "failed"


def test_the_run_a_checkpoint_belongs_to(tmp_path: Path) -> None:
    assert RunFolder.holding(tmp_path / "run" / "best.pt").path == tmp_path / "run"
    assert RunFolder.holding(tmp_path / "run" / "jobs" / "vae-kl" / "model.pt").path == tmp_path / "run"
    assert RunFolder.holding(tmp_path / "elsewhere" / "model.pt").path == tmp_path / "elsewhere"


def test_temp_files_left_by_a_killed_writer_are_removed_and_nothing_else(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    stray = [folder.plots_dir / ".tau.png.k2j4.tmp", folder.checkpoints_dir / ".latest.pt.staged",
             folder.path / ".status.json.x.tmp"]
    kept = [folder.plots_dir / "tau.png", folder.path / ".lock", folder.path / "notes.tmp"]
    for path in stray + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".a.tmp").write_text("not the run's")
    (folder.path / "link").symlink_to(outside)
    assert sorted(folder.remove_temp_files()) == sorted(stray)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stray) and (outside / ".a.tmp").exists()


def test_resume_names_the_file_actually_missing(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.write_config(RunConfig(dataset="synthetic"))
    with pytest.raises(ConfigError) as err:
        resume_config(folder.path)
    assert str(err.value) == f"cannot resume {folder.path}: no checkpoints/latest.pt there"
    folder.config_path.unlink()
    with pytest.raises(ConfigError, match="no config.json and no checkpoints/latest.pt there"):
        resume_config(folder.path)


# --- a full disk ---
def test_enospc_during_a_write_says_which_file_and_leaves_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "run" / "status.json"
    atomic_write(path, lambda fh: fh.write(b"old"))

    def full(fh: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpaceLeft) as err:
        atomic_write(path, full)
    assert str(err.value) == f"no space left on device while writing {path}" and err.value.errno == errno.ENOSPC
    assert path.read_bytes() == b"old" and [p.name for p in path.parent.iterdir()] == ["status.json"]
    shipped = pickle.loads(pickle.dumps(err.value))  # as Ray carries it from the coordinator to the driver
    assert isinstance(shipped, NoSpaceLeft) and str(shipped) == str(err.value)


def test_enospc_while_a_checkpoint_is_written_names_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    folder = RunFolder(tmp_path / "run")

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", fsync)
    with pytest.raises(NoSpaceLeft, match=f"^no space left on device while writing {re.escape(str(folder.latest_path))}$"):
        folder.write_checkpoint(Checkpoint(1, {1: 1.0}, {1: 0}, {1: []}, {"w": torch.zeros(4)}, {}))
    assert not folder.checkpoints_dir.exists() or not any(folder.checkpoints_dir.iterdir())  # nothing half written


def test_free_space_is_checked_before_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    folder = RunFolder(tmp_path / "run")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 4096, 4096))
    with pytest.raises(NoSpaceLeft, match=r"while writing .*latest\.pt \(it needs \d+ bytes, 4096 are free\)"):
        folder.write_checkpoint(Checkpoint(1, {1: 1.0}, {1: 0}, {1: []}, {"w": torch.zeros(4)}, {}))
    assert not any(folder.checkpoints_dir.iterdir())  # refused before a byte was written
