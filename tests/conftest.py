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

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="popvae")
    yield ray
    ray.shutdown()
