"""Shared fixtures: one real local Ray per test session (2 CPUs), one real run folder per session, torch on one
thread."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# No Ray started behind a test's back: a call from a thread a test left behind (a bounded stop's abandoned call)
# after the session's Ray shut down would otherwise join the cluster being torn down, and Ray ends that process
# (here: pytest) with exit 1 when the raylet is gone. Ray reads this when it is first imported, below this line.
os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray on 2 CPUs, started once and shared by every test that asks for it. It is Ray's own test
    cluster rather than `ray.init(num_cpus=2)` only so that its dashboard agent listens on a free port:
    `ray.init` always takes port 52365 (ray-project/ray#14763), and every `popvae` the tests start beside it would
    then wait about 3.4 s for its own agent to give up on that port.

    Ray's test-only `_system_config` shortens one wait: the fault tests make a pack late by SIGSTOPping its process,
    and a stopped process cannot take Ray's request to exit, so the raylet waits `kill_worker_timeout_milliseconds`
    (5 s by default) before it SIGKILLs it and frees its CPUs for the replacement. The tests check what happens, not
    how long Ray waits."""
    import ray
    from ray.cluster_utils import Cluster

    from popvae.population.contract import NAMESPACE

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "dashboard_agent_listen_port": None,
        "object_store_memory": 1 << 30, "_system_config": {"kill_worker_timeout_milliseconds": 500}})
    ray.init(address=cluster.address, log_to_driver=False, namespace=NAMESPACE)
    yield ray
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def pristine(ray_session, tmp_path_factory) -> Path:
    """A population run trained once per session (2 members, 1 epoch) for the tests that read it or change a copy of
    it (tests/test_damaged_files.py's `copy`): none may write to it."""
    from popvae.population.driver import load_run_data, run_population
    from tests.test_population import small_config

    run = tmp_path_factory.mktemp("runs") / "pristine"
    cfg = small_config(epochs=1, members=2)
    run_population(cfg, run, load_run_data(cfg))
    return run


@contextlib.contextmanager
def cpus_taken(ray: Any) -> Iterator[None]:
    """An actor holding every CPU of the cluster, so that nothing else can be placed inside the block."""

    class Hog:  # defined here so that Ray pickles it by value (workers cannot import conftest)
        def ping(self) -> bool:
            return True

    hog = ray.remote(num_cpus=ray.cluster_resources()["CPU"])(Hog).remote()
    ray.get(hog.ping.remote())
    try:
        yield
    finally:
        ray.kill(hog)


@pytest.fixture
def all_cpus_taken(ray_session):
    """Every CPU of the session taken until the test ends."""
    with cpus_taken(ray_session):
        yield
