"""A run stopped during its final scoring (every epoch trained, summary.json not yet written) is never `done`: it reads
as interrupted, `--resume` finishes the scoring without training again, and the temp files a killed writer left
are removed when it starts. On the session's real Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from popvae.cluster.run_store import RunStore
from popvae.population.config import ConfigError
from popvae.population.contract import NAMESPACE, coordinator_name
from popvae.population.driver import new_run, resumed_run, train_run
from popvae.population.preflight import resume_config
from popvae.population.run_folder import RunFolder
from tests.test_population import small_config


def test_a_run_stopped_while_scored_is_not_done_and_its_resume_finishes_the_scoring(ray_session, tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    states = []

    def stop_while_scoring(what: str, done: int, total: int) -> None:
        states.append(folder.read_status().state)
        raise KeyboardInterrupt  # what SIGINT raises in the driver (stop_signals' Interrupted is one)

    with pytest.raises(KeyboardInterrupt):
        train_run(new_run(small_config(epochs=2), folder.path), on_scoring=stop_while_scoring)
    assert states == ["scoring"]  # every epoch trained, not done yet
    assert folder.read_status().state == "interrupted" and folder.read_status().epoch == 2
    assert not folder.summary_path.exists()
    folder.set_state("scoring")  # as a kill -9 during the scoring leaves it: its lock is free, so it reads interrupted
    assert folder.state() == "interrupted" and RunStore(tmp_path).status("run").state == "interrupted"
    stray = [folder.plots_dir / ".tau.png.k2j4x.tmp", folder.path / ".summary.json.a1b2.tmp"]
    for path in stray:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    rows_before = folder.read_history()

    assert resume_config(folder.path)[1] == 2  # not refused as "nothing left to train"
    summary = train_run(resumed_run(folder.path))
    assert folder.read_status().state == "done" and folder.read_summary().epochs_done == summary["epochs_done"] == 2
    assert (folder.plots_dir / "tau.png").is_file() and (folder.plots_dir / "reconstructions.png").is_file()
    assert not any(p.exists() for p in stray)
    assert folder.read_history() == rows_before  # nothing trained again
    with pytest.raises(ConfigError, match="nothing left to train"):
        resume_config(folder.path)


def test_a_full_disk_ends_popvae_train_with_one_line_naming_the_file(ray_session, tmp_path: Path, capsys,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected at the atomic-write layer (the file system itself is not filled) while the run's config is
    written: exit 1, the cause in one line naming the file, nothing half written."""
    import errno
    import tempfile

    from popvae.cluster.cli import main

    real = tempfile.mkstemp

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        if str(kwargs.get("prefix", "")).startswith(".config.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    run = tmp_path / "run"
    code = main(["train", "--dataset", "synthetic", "--members", "2", "--epochs", "1", "--run-dir", str(run), "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith(f"popvae: run failed: no space left on device while writing {run / 'config.json'}; ")
    assert not run.exists()  # nothing was written: no config, no temp file, and the lock took its empty folder back


def test_a_run_being_scored_is_still_going_for_the_service_and_popvae_status(tmp_path: Path) -> None:
    """While its writer holds the lock a `scoring` run is served as scoring and `popvae status --watch` keeps
    watching; once done it stops. (Without the lock it reads interrupted: above.)"""
    from fake_runs import make_run, status
    from fastapi.testclient import TestClient

    from popvae.cluster.service import create_app
    from popvae.cluster.status_table import _view
    from popvae.population.folder_lock import RunLock
    from popvae.population.run_folder import parse_status

    folder = RunFolder(make_run(tmp_path, "r1", epochs=3))
    folder.write_status(parse_status(status("r1", 3, 3, 4, state="scoring")))
    lock = RunLock(folder.path)
    lock.acquire()
    try:
        client = TestClient(create_app(tmp_path), raise_server_exceptions=False)
        assert client.get("/population").json()["state"] == "scoring"
        assert _view(client, "", None, False)[1] is True
        folder.set_state("done")
        assert _view(client, "", None, False)[1] is False
    finally:
        lock.release()


def test_sigint_to_popvae_train_while_it_scores_then_resume_completes_the_run(ray_session, tmp_path: Path) -> None:
    """The issue's case on a real `popvae train` process: SIGINT once every epoch is trained, while the test split
    (10,000 synthetic images, so that the scoring lasts long enough to be caught) is scored; then `--resume`. Both
    processes join the session's Ray (`--address`): the scoring runs in the driver, and what a signal leaves of a
    run's own local Ray is tests/test_faults.py's to check, so neither starts one of its own."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    small = {"dataset": "synthetic", "synthetic_size": 40_000, "members": 2, "epochs": 1, "batch_size": 16,
             "steps_per_epoch": 2, "val_size": 16, "model": {"widths": [4, 8, 8, 8], "z1_vars": 2, "z1_categories": 4,
                                                               "z2_vars": 2, "z2_categories": 4}}
    config = tmp_path / "small.json"
    config.write_text(json.dumps(small))
    folder = RunFolder(tmp_path / "run")
    cli = [sys.executable, "-c", "import sys; from popvae.cluster.cli import main; sys.exit(main())", "train"]
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    ray = ["--address", ray_session.get_runtime_context().gcs_address]
    proc = subprocess.Popen([*cli, "--config", str(config), "--run-dir", str(folder.path), "--quiet", *ray],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 240
        while folder.recorded_state() != "scoring":
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:] if proc.stderr else ""
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert f"continue with: popvae train --resume {folder.path}" in err
    assert folder.read_status().state == "interrupted" and not folder.summary_path.exists()
    with pytest.raises(ValueError):  # the interrupted driver took its coordinator off the shared cluster
        ray_session.get_actor(coordinator_name(folder.path.name), namespace=NAMESPACE)

    done = subprocess.run([*cli, "--resume", str(folder.path), "--quiet", *ray], capture_output=True,
                          text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert folder.read_status().state == "done" and folder.read_summary().test_images == 10_000
    assert not [p for p in folder.path.rglob(".*.tmp")]
