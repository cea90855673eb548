"""Memory estimates checked before any work: a packed population pays one worker process, not one per member."""

from __future__ import annotations

import pytest

from popvae.population import bounds
from popvae.population.config import ConfigError, parse_config


def test_packed_members_share_their_worker_process() -> None:
    packed, unpacked = (parse_config({"members": 64, "pack_size": size}) for size in ("auto", 1))
    assert bounds.worker_processes(packed) == 1 and bounds.worker_processes(unpacked) == 64
    assert bounds.worker_processes(parse_config({"members": 10, "pack_size": 4})) == 3
    gap = bounds.memory_estimate(unpacked)["total"] - bounds.memory_estimate(packed)["total"]
    assert gap == 63 * bounds.WORKER_PROCESS_BYTES


def test_a_population_too_large_for_this_machine_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bounds, "machine_memory", lambda: 8 * 2**30)
    bounds.check_memory(parse_config({"members": 64}))  # packed: 64 small models and one process fit in 8 GiB
    with pytest.raises(ConfigError, match=r"64 members and the dataset would need about \d+\.\d GiB; this machine has 8\.0"):
        bounds.check_memory(parse_config({"members": 64, "pack_size": 1}))  # 64 processes do not
