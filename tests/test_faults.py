"""Faults at the OS level, on real `popvae train` processes: kill -9 of a member process and of the coordinator (the
run goes on by itself), two runs into one folder and a resume of a live run (exit 2 naming the holder), SIGTERM and
SIGINT (exit 143 / 130, one line, status interrupted, every process of the run gone), kill -9 of the driver (the
folder reads as interrupted; a resume finishes it).

Each run here starts its own local Ray, on purpose, and cannot share the session's (conftest): these tests check the
process tree of a run on one machine, as `popvae train` without `--address` makes it. The member and the coordinator
are found among the driver's descendants, a signal must leave no process of the run (Ray's own included), and kill -9
of the driver must end its actors through Ray's fate sharing; a run joined to a shared cluster has none of those
processes under its driver. The runs are as few as the ways a run ends that these tests check: SIGTERM mid-run
(Ray replaces our SIGTERM handler when it starts, so this path differs from SIGINT's), kill -9 of the driver, SIGINT
mid-run (on the resume of that killed run), and a signal before any epoch; the member and coordinator kills share the
first run, the refused second runs exit before Ray starts. The generation protocol's faults that need no process
tree (a killed pack, a late one, a NaN, the best dying) run on the session's Ray in tests/test_population.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from popvae.cluster.run_store import RunStore
from popvae.population import folder_io

SMALL = {"dataset": "synthetic", "synthetic_size": 128, "members": 2, "batch_size": 16, "steps_per_epoch": 2,
         "val_size": 16, "model": {"widths": [4, 8, 8, 8], "z1_vars": 2, "z1_categories": 4, "z2_vars": 2,
                                   "z2_categories": 4}}
CLI = [sys.executable, "-c", "import sys; from popvae.cluster.cli import main; sys.exit(main())"]


def popvae(*argv: str) -> list[str]:
    return [*CLI, *argv]


def start(tmp_path: Path, *argv: str) -> subprocess.Popen:
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    return subprocess.Popen(popvae(*argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_DEDUP_LOGS": "0"})


def status(run: Path) -> dict:
    try:
        return folder_io.read_json(run / "status.json")
    except (OSError, ValueError):
        return {}


def wait_for(what, timeout: float = 120.0, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := what()):
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}): {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> set[int]:
    kids, out, todo = _children(), set(), [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in out:
                out.add(k)
                todo.append(k)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pids: set[int]) -> set[int]:
    def running(p: int) -> bool:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    return {p for p in pids if running(p)}


def process_of(driver: int, title: str) -> int:
    return wait_for(lambda: next((p for p in descendants(driver) if cmdline(p).startswith(title)), None))


def epoch(run: Path) -> int:
    return status(run).get("epoch", 0)


def test_kill_member_and_coordinator_then_sigterm(tmp_path):
    run = tmp_path / "run"
    proc = start(tmp_path, "train", "--config", str(tmp_path / "small.json"), "--run-dir", str(run), "--epochs", "400",
                 "--num-cpus", "2", "--quiet")
    try:
        wait_for(lambda: epoch(run) >= 1, proc=proc)
        # two runs into one folder, and a resume of the live run: refused, naming the holder, nothing touched
        for argv in (("train", "--config", str(tmp_path / "small.json"), "--run-dir", str(run)), ("train", "--resume", str(run))):
            second = subprocess.run(popvae(*argv), capture_output=True, text=True, timeout=120)
            assert second.returncode == 2 and f"pid {proc.pid}" in second.stderr, second.stderr
        # kill -9 of one member's process: restarted by the coordinator, the run goes on
        member = process_of(proc.pid, "ray::Worker")
        os.kill(member, signal.SIGKILL)
        wait_for(lambda: any(r["event"] == "restarted" for r in folder_io.read_rows(run / "history.parquet")), proc=proc)
        # kill -9 of the coordinator's process: the driver starts a new one from the last checkpoint
        coordinator = process_of(proc.pid, "ray::PopulationCoordinator")
        before = epoch(run)
        os.kill(coordinator, signal.SIGKILL)
        wait_for(lambda: status(run).get("coordinator_restarts") == 1 and epoch(run) >= before + 2, proc=proc)
        assert any(g.get("coordinator_restarted") for g in folder_io.read_json(run / "lineage.json"))
        assert proc.poll() is None
        # SIGTERM: exit 143, one line, status interrupted, every process of the run gone
        family = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [ln for ln in err.splitlines() if ln.startswith("popvae")]
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "SIGTERM" in lines[-1] and f"--resume {run}" in lines[-1], err
    assert status(run)["state"] == "interrupted"
    wait_for(lambda: not alive(family), timeout=30)


def test_driver_killed_then_resumed_then_sigint(tmp_path):
    run = tmp_path / "run"
    proc = start(tmp_path, "train", "--config", str(tmp_path / "small.json"), "--run-dir", str(run), "--epochs", "400",
                 "--num-cpus", "2", "--quiet")
    wait_for(lambda: epoch(run) >= 2 and (run / "checkpoints" / "latest.pt.sha256").exists(), proc=proc)
    coordinator = process_of(proc.pid, "ray::PopulationCoordinator")
    proc.kill()  # kill -9 of the driver: nothing can clean up, the kernel frees the lock
    proc.wait()
    wait_for(lambda: not alive({coordinator}), timeout=60)  # Ray's fate sharing ends the run's actors
    assert status(run)["state"] in ("running", "interrupted")
    assert RunStore(tmp_path).status("run").state == "interrupted"  # the service tells the dead run from a live one
    done = epoch(run)
    resumed = start(tmp_path, "train", "--resume", str(run), "--epochs", str(done + 400), "--num-cpus", "2", "--quiet")
    try:
        wait_for(lambda: epoch(run) >= done + 1 and status(run).get("state") == "running", proc=resumed)
        assert RunStore(tmp_path).status("run").state == "running"
        family = descendants(resumed.pid)
        resumed.send_signal(signal.SIGINT)
        _, err = resumed.communicate(timeout=60)
    finally:
        if resumed.poll() is None:
            resumed.kill()
    assert resumed.returncode == 130 and "Traceback" not in err and "SIGINT" in err, err
    assert status(run)["state"] == "interrupted"
    wait_for(lambda: not alive(family), timeout=30)
    rows = folder_io.read_rows(run / "history.parquet")
    assert sorted({r["epoch"] for r in rows}) == list(range(epoch(run)))  # no epoch lost or trained twice


@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_signal_before_any_epoch_leaves_nothing_to_resume(tmp_path, signum):
    run = tmp_path / "run"
    proc = start(tmp_path, "train", "--config", str(tmp_path / "small.json"), "--run-dir", str(run), "--epochs", "400",
                 "--num-cpus", "2", "--quiet")
    wait_for(lambda: (run / ".lock").exists(), proc=proc)
    family = descendants(proc.pid)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum and "Traceback" not in err, err
    assert len([ln for ln in err.splitlines() if ln.strip()]) <= 2, err  # Ray's token notice may precede our line
    wait_for(lambda: not alive(family), timeout=30)
