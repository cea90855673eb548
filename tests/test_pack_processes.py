"""Packing changes speed, not results: k members packed in one worker process and the same k one per process (packs
of 1, each in its own Ray worker), from the same weights, seeds and batches, agree after several epochs and a
broadcast (one object-store object to the packs of 1, a slot copy inside the pack)."""

from __future__ import annotations

import numpy as np
import pytest

from popvae.population.config import parse_config
from popvae.population.driver import load_run_data
from popvae.population.worker import RemoteWorker

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}
INDICES = [1, 2, 3]
TAUS = {1: 1.0, 2: 0.7, 3: 1.6}


def _close(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)


def test_packed_members_equal_members_one_per_process(ray_session):
    cfg = parse_config({"dataset": "synthetic", "synthetic_size": 256, "members": 3, "batch_size": 16,
                        "steps_per_epoch": 5, "model": SMALL_MODEL, "seed": 11, "select_on": "val", "device": "cpu"})
    data = load_run_data(cfg)
    train, val = ray_session.put(data.train.images), ray_session.put(data.val.images)
    packed = RemoteWorker.options(num_cpus=0).remote(1)
    alone = {i: RemoteWorker.options(num_cpus=0).remote(1) for i in INDICES}
    ray_session.get([packed.host_pack.remote(INDICES, cfg, train, val)]
                    + [w.host_pack.remote([i], cfg, train, val) for i, w in alone.items()])
    try:
        for epoch in range(3):
            if epoch == 2:  # broadcast the best of epoch 1 (the same member on both sides), then train on
                best = min(INDICES, key=lambda i: got[i]["val_loss"])
                others = [i for i in INDICES if i != best]
                ref = alone[best].get_weights.remote(best)
                ray_session.get([packed.copy_slot.remote(best, others, [others[0]])]
                                + [alone[i].set_weights.remote(ref, None, [i] if i == others[0] else []) for i in others])
            got = ray_session.get(packed.train_epoch.remote(epoch, TAUS))
            each = {}
            for i, w in alone.items():
                each.update(ray_session.get(w.train_epoch.remote(epoch, {i: TAUS[i]})))
            for i in INDICES:
                assert got[i]["loss"]["total"] == pytest.approx(each[i]["loss"]["total"], rel=1e-4)
                assert got[i]["val_loss"] == pytest.approx(each[i]["val_loss"], rel=1e-4)
            if epoch == 1:
                assert min(INDICES, key=lambda i: got[i]["val_loss"]) == min(INDICES, key=lambda i: each[i]["val_loss"])
        for i in INDICES:
            assert _close(ray_session.get(packed.get_weights.remote(i)), ray_session.get(alone[i].get_weights.remote(i)))
        opt_packed = ray_session.get(packed.get_optimizer_state.remote())
        for i in INDICES:
            mine, theirs = opt_packed[i]["state"], ray_session.get(alone[i].get_optimizer_state.remote())[i]["state"]
            assert mine.keys() == theirs.keys() and len(mine) > 0
            for p in mine:
                assert float(mine[p]["step"]) == float(theirs[p]["step"])
                assert np.allclose(mine[p]["exp_avg"].numpy(), theirs[p]["exp_avg"].numpy(), rtol=1e-3, atol=1e-6)
        # the member reset at the broadcast restarted its Adam: fewer steps than its pack mates
        steps = {i: float(opt_packed[i]["state"][0]["step"]) for i in INDICES}
        assert steps[others[0]] == 5 and steps[best] == 15
    finally:
        for w in [packed, *alone.values()]:
            ray_session.kill(w)
