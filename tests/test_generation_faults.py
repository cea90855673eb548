"""The generation policy's fault rules carried out on a real local Ray: a lone stalled pack (every member in one
pack, its worker SIGSTOPped past the timeout) is restarted and retried within the generation, and a replacement
coordinator that cannot place its members keeps the run's status (epoch, restarts) instead of a blank one."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time

import pytest
from conftest import cpus_taken

from popvae.population import folder_io
from popvae.population.contract import NAMESPACE
from popvae.population.coordinator import Coordinator
from popvae.population.driver import load_run_data
from tests.test_faults import cmdline, descendants
from tests.test_population import small_config, start_coordinator
from tests.test_stop_faults import state


def stop_everything(ray, coord) -> None:
    for handle in ray.get(coord.member_handles.remote()).values():
        ray.kill(handle)
    ray.kill(coord)


def test_a_lone_stalled_pack_is_restarted_and_retried_within_the_generation(ray_session, tmp_path):
    # The timeout must exceed a fresh worker's start-up and epoch (its retry); the stall waits it out, so it stays short.
    coord = start_coordinator(small_config(members=2, pack_size=2, member_timeout_s=12.0), tmp_path / "run")
    assert ray_session.get(coord.pack_layout.remote()) == [[1, 2]]  # every member in one pack
    ray_session.get(coord.run_generation.remote(0))
    stalled = ray_session.get(coord.member_handles.remote())[1]
    pid = ray_session.get(stalled.pid.remote())
    os.kill(pid, signal.SIGSTOP)  # the worker stops answering: the barrier's deadline passes
    try:
        entry = ray_session.get(coord.run_generation.remote(1))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert entry["events"] == {"1": "restarted", "2": "restarted"}  # retried, not dropped: the run goes on
    rows = [r for r in folder_io.read_rows(tmp_path / "run" / "history.parquet") if r["epoch"] == 2]
    assert len(rows) == 2 and all(math.isfinite(r["score"]) for r in rows)
    handles = ray_session.get(coord.member_handles.remote())
    assert handles[1] != stalled and ray_session.get(handles[1].pid.remote()) != pid
    end = time.monotonic() + 60
    while state(pid) not in ("Z", None) and time.monotonic() < end:  # the stalled worker was killed, not left behind
        time.sleep(0.1)
    assert state(pid) in ("Z", None)
    assert ray_session.get(coord.run_generation.remote(2))["events"] == {}
    stop_everything(ray_session, coord)


def test_a_replacement_coordinator_that_finds_no_slot_keeps_the_runs_status(ray_session, tmp_path):
    cfg = small_config(members=2, epochs=5)
    run = tmp_path / "run"
    coord = start_coordinator(cfg, run)
    for epoch in (0, 1):
        ray_session.get(coord.run_generation.remote(epoch))
    ray_session.get(coord.wait_for_writes.remote())
    before = folder_io.read_json(run / "status.json")
    stop_everything(ray_session, coord)
    data = load_run_data(cfg)
    with cpus_taken(ray_session):  # the node is gone: the new coordinator's members find no slot
        replacement = Coordinator.options(namespace=NAMESPACE).remote(
            cfg.model_copy(update={"placement_timeout_s": 2.0}), str(run), (data.train.images, data.val.images), True, 1)
        with pytest.raises(ray_session.exceptions.RayActorError, match="found no slot on the cluster within 2 s"):
            ray_session.get(replacement.status.remote())
    status = folder_io.read_json(run / "status.json")
    assert (status["state"], status["epoch"], status["epochs"], status["coordinator_restarts"]) == ("failed", 2, 5, 1)
    assert [m["tau"] for m in status["members"]] == [m["tau"] for m in before["members"]]
    assert [m["patience"] for m in status["members"]] == [m["patience"] for m in before["members"]]


def test_a_lone_pack_late_again_after_its_retry_fails_the_run_naming_the_timeout(ray_session, tmp_path):
    coord = start_coordinator(small_config(members=2, pack_size=2, steps_per_epoch=100, member_timeout_s=5.0),
                              tmp_path / "run")
    first = ray_session.get(ray_session.get(coord.member_handles.remote())[1].pid.remote())
    known = {p for p in descendants(os.getpid()) if cmdline(p).startswith("ray::Worker")} - {first}
    stopped = [first]
    done = threading.Event()

    def stall_the_retry() -> None:  # the restarted worker stops too, once it trains (so it is late on any machine)
        while not done.is_set() and len(stopped) < 2:
            for p in descendants(os.getpid()) - known - set(stopped):
                if cmdline(p).startswith("ray::Worker.train_epoch"):
                    os.kill(p, signal.SIGSTOP)
                    stopped.append(p)
            time.sleep(0.01)

    watcher = threading.Thread(target=stall_the_retry, daemon=True)
    os.kill(first, signal.SIGSTOP)
    watcher.start()
    try:
        with pytest.raises(ray_session.exceptions.RayTaskError,
                           match=r"members \[1, 2\] did not finish within member_timeout_s = 5 s \(--timeout\)"):
            ray_session.get(coord.run_generation.remote(0))
    finally:
        done.set()
        watcher.join()
        for p in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
    # The error above can only come from a retry that was late too (the first lateness is retried). Whether the
    # watcher stalled the retry or a slow machine made it late by itself does not matter; the worker was replaced.
    assert ray_session.get(ray_session.get(coord.member_handles.remote())[1].pid.remote()) != first
    assert folder_io.read_json(tmp_path / "run" / "status.json")["state"] == "failed"
    stop_everything(ray_session, coord)
