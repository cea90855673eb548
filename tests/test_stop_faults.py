"""Stops at the OS level, on real `popvae train` processes (each starts its own Ray): SIGTERM to the whole process
group (as `timeout`, `kill -TERM -PGID` and systemd send it) exits 143 in bounded time although Ray's own processes
die with the driver; and a new run started while a kill -9'd driver's Ray processes linger neither collides with
them nor kills anything it did not start; nor does a run started beside a live cluster join it uninvited."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from popvae.population import stop_signals
from tests.test_faults import SMALL, alive, descendants, epoch, popvae, status, wait_for


def start_in_own_group(tmp_path, run, *extra: str) -> subprocess.Popen:
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    return subprocess.Popen(popvae("train", "--config", str(config), "--run-dir", str(run), "--num-cpus", "2",
                                   "--quiet", *extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "RAY_DEDUP_LOGS": "0"})


def state(pid: int) -> str | None:
    """The process's state letter (T: stopped, Z: zombie), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def sigterm_to_the_whole_group(tmp_path: Path) -> tuple[int, str, Path]:
    """A training run's process group sent SIGTERM once it trains: its exit code, its stderr and its run folder
    (also repeated by benchmarks/fault_races.py)."""
    run = tmp_path / "run"
    proc = start_in_own_group(tmp_path, run, "--epochs", "400")
    try:
        wait_for(lambda: epoch(run) >= 1, proc=proc)  # training: the coordinator and its pack are up
        os.killpg(proc.pid, signal.SIGTERM)  # the driver and every Ray process it started, at once
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err, run


def test_sigterm_to_the_whole_process_group_exits_143_within_seconds(tmp_path):
    code, err, run = sigterm_to_the_whole_group(tmp_path)
    assert code == 143, (code, err)
    lines = [ln for ln in err.splitlines() if ln.startswith("popvae")]
    assert "SIGTERM" in lines[-1] and f"--resume {run}" in lines[-1], err
    assert status(run)["state"] == "interrupted"


def test_a_new_run_beside_a_killed_drivers_lingering_ray_neither_collides_nor_kills_it(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    proc = start_in_own_group(tmp_path, first, "--epochs", "400")
    try:
        wait_for(lambda: epoch(first) >= 1, proc=proc)
        family = descendants(proc.pid)
        proc.kill()  # kill -9 of the driver alone
        proc.wait()
        for pid in alive(family):  # hold what is left of it as it is: it cannot end by itself while the next run works
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        # Those killed with the driver (the kernel's parent-death signal) die even when stopped: wait until every one
        # is either stopped or gone, and watch the stopped ones.
        wait_for(lambda: all(state(pid) in ("T", "Z", None) for pid in family), timeout=30)
        lingering = {pid for pid in family if state(pid) == "T"}
        assert lingering  # Ray's processes outlive a kill -9 of the driver
        done = subprocess.run(popvae("train", "--config", str(tmp_path / "small.json"), "--run-dir", str(second),
                                     "--epochs", "2", "--num-cpus", "2", "--quiet"),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert status(second)["state"] == "done" and (second / "summary.json").is_file()
        assert alive(lingering) == lingering  # the new run killed nothing it did not start
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in alive(family):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                os.kill(pid, signal.SIGCONT)
    wait_for(lambda: not alive(family), timeout=30)
    assert status(first)["state"] in ("running", "interrupted")  # the killed run's folder is as it was left



def test_a_stop_signal_is_remembered_when_ray_fails_first(monkeypatch):
    """After a process-group SIGTERM, Ray's own failure (the coordinator died of the same signal) can reach the driver
    before the signal's exception, or instead of it: the run still stops as interrupted, not failed."""
    for name in ("_received", "_received_at", "_installed"):
        monkeypatch.setattr(stop_signals, name, getattr(stop_signals, name))  # restored afterwards: no other test sees this stop
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    assert stop_signals.stop_requested() is None
    try:
        stop_signals.stop_on_signals()
        with pytest.raises(stop_signals.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    stop = stop_signals.stop_requested()
    assert stop is not None and stop.exit_code == 143
    assert stop_signals.stop_time_left(8.0) <= 8.0


def test_train_without_an_address_starts_its_own_ray_beside_a_cluster_left_on_the_machine(ray_session, tmp_path):
    """Ray alone joins the cluster this machine's address file names (one `ray start` left, or this suite's own), and
    refuses --num-cpus there with a traceback; `popvae train` without --address starts its own, as its help says."""
    from popvae.population import folder_io

    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(popvae("train", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--epochs", "1",
                                 "--num-cpus", "1", "--quiet"), capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    nodes = {row["node_id"] for row in folder_io.read_rows(tmp_path / "run" / "history.parquet")}
    assert nodes and ray_session.get_runtime_context().get_node_id() not in nodes
