"""Shared fixtures: one real local Ray per test session (2 CPUs), torch on one thread."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def ray_session():
    """A real `ray.init(num_cpus=2)`, started once and shared by every test that asks for it."""
    import ray

    from popvae.population.contract import NAMESPACE

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace=NAMESPACE)
    yield ray
    ray.shutdown()


@pytest.fixture
def all_cpus_taken(ray_session):
    """An actor holding every CPU of the session, so that nothing else can be placed until the test ends."""

    class Hog:
        def ping(self) -> bool:
            return True

    hog = ray_session.remote(num_cpus=ray_session.cluster_resources()["CPU"])(Hog).remote()
    ray_session.get(hog.ping.remote())
    yield
    ray_session.kill(hog)
