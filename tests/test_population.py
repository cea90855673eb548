"""The distributed path on a real local Ray: broadcast, resume, a killed pack, an injected NaN, packed (several members
per worker) and unpacked (`pack_size` 1)."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from popvae.models.checkpoint import load_model
from popvae.population import folder_io
from popvae.population.config import parse_config
from popvae.population.contract import NAMESPACE
from popvae.population.coordinator import Coordinator
from popvae.population.driver import load_run_data, run_population
from popvae.population.pack_planning import plan_packs
from popvae.population.placement import cpu_share

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}


def member_weights_equal(handles):
    """True when every member holds exactly the same weights (after a broadcast)."""
    import ray

    all_weights = ray.get([h.get_weights.remote(i) for i, h in handles.items()])
    first = all_weights[0]
    return all(all(np.array_equal(first[k], w[k]) for k in first) for w in all_weights[1:])


def small_config(**over):
    """A tiny population in one worker (pack_size 4): the protocol these tests check does not depend on the layout,
    and each extra worker process costs a torch import; the tests of layouts set pack_size, and the CLI tests run the
    default (one looped pack per CPU)."""
    base = {"dataset": "synthetic", "synthetic_size": 256, "members": 3, "epochs": 3, "batch_size": 16,
            "steps_per_epoch": 4, "model": SMALL_MODEL, "seed": 3, "pack_size": 4}
    return parse_config({**base, **over})


def start_coordinator(cfg, run_dir):
    data = load_run_data(cfg)
    return Coordinator.options(namespace=NAMESPACE).remote(cfg, str(run_dir), (data.train.images, data.val.images), False)


@pytest.mark.parametrize(("pack_mode", "precision"), [("loop", "bf16"), ("vmap", "fp32")])
def test_broadcast_leaves_every_member_with_the_best_weights(ray_session, tmp_path, pack_mode, precision):
    coord = start_coordinator(small_config(epochs=1, pack_mode=pack_mode, precision=precision), tmp_path / "run")
    handles = ray_session.get(coord.member_handles.remote())
    assert not member_weights_equal(handles)  # members start from different seeds
    entry = ray_session.get(coord.run_generation.remote(0))
    assert member_weights_equal(handles)
    best = ray_session.get(handles[entry["best"]].get_weights.remote(entry["best"]))
    rows = folder_io.read_rows(tmp_path / "run" / "history.parquet")
    assert sum(r["is_best"] for r in rows) == 1 and len(rows) == 3
    assert entry["received"] == {str(i): entry["best"] for i in (1, 2, 3) if i != entry["best"]}
    ray_session.get(coord.wait_for_writes.remote())  # checkpoints are written in the background
    saved, meta = load_model(tmp_path / "run" / "best.pt")
    assert all(np.array_equal(saved.state_dict()[k].numpy(), best[k]) for k in best)
    assert meta["member"] == entry["best"]
    for h in handles.values():
        ray_session.kill(h)
    ray_session.kill(coord)


def test_without_the_broadcast_members_keep_their_own_weights(ray_session, tmp_path):
    coord = start_coordinator(small_config(epochs=1, broadcast=False), tmp_path / "run")
    handles = ray_session.get(coord.member_handles.remote())
    entry = ray_session.get(coord.run_generation.remote(0))
    assert not member_weights_equal(handles)
    ray_session.get(coord.wait_for_writes.remote())
    saved, meta = load_model(tmp_path / "run" / "best.pt")  # the best is still picked and saved
    best = ray_session.get(handles[entry["best"]].get_weights.remote(entry["best"]))
    assert meta["member"] == entry["best"] and all(np.array_equal(saved.state_dict()[k].numpy(), best[k]) for k in best)
    for h in handles.values():
        ray_session.kill(h)
    ray_session.kill(coord)


def test_one_member_follows_another_members_schedule(ray_session, tmp_path):
    from popvae.population.temperature import REFERENCE_DYNAMICS

    cfg = small_config(members=1, schedule_of=2, temperature=REFERENCE_DYNAMICS)  # member 2: linear increase, +0.5
    coord = start_coordinator(cfg, tmp_path / "solo")  # the generations alone: no scoring, no plots
    for epoch in range(cfg.epochs):
        ray_session.get(coord.run_generation.remote(epoch))
    rows = sorted(folder_io.read_rows(tmp_path / "solo" / "history.parquet"), key=lambda r: r["epoch"])
    assert [r["strategy"] for r in rows] == ["linear_increase"] * 3
    assert [r["tau"] for r in rows] == [1.0, 1.5, 2.0] and rows[-1]["tau_next"] == 2.5
    for h in ray_session.get(coord.member_handles.remote()).values():
        ray_session.kill(h)
    ray_session.kill(coord)


# precision and pack mode auto (the machine's defaults) in one pack ("one-pack"); fp32 under vmap without the
# broadcast ("vmap-fp32-no-broadcast"), where each member's own weights and Adam state (stacked) come back from the
# checkpoint. A pack of one restores through the same code as a pack of four (test_pack.py checks that packed
# members train as unpacked ones), so one member per process is not run again here: it cost three processes a run.
@pytest.mark.parametrize("over", [{}, {"pack_mode": "vmap", "precision": "fp32", "broadcast": False}],
                         ids=["one-pack", "vmap-fp32-no-broadcast"])
def test_stopped_and_resumed_run_equals_uninterrupted_run(ray_session, tmp_path, over):
    cfg = small_config(**over)
    data = load_run_data(cfg)
    whole = run_population(cfg, tmp_path / "whole", data)
    seen = []
    stop_after_first = lambda entry, status: seen.append(entry["epoch"]) or True  # noqa: E731  (early stop on request)
    stopped = run_population(cfg, tmp_path / "split", data, on_generation=stop_after_first)
    assert seen == [1] and stopped["epochs_done"] == 1
    assert folder_io.read_json(tmp_path / "split" / "status.json")["state"] == "stopped"
    resumed = run_population(cfg, tmp_path / "split", data, resume=True)
    a = folder_io.read_rows(tmp_path / "whole" / "history.parquet")
    b = folder_io.read_rows(tmp_path / "split" / "history.parquet")
    key = lambda r: (r["epoch"], r["member"])  # noqa: E731
    for ra, rb in zip(sorted(a, key=key), sorted(b, key=key), strict=True):
        assert {k: v for k, v in ra.items() if k not in ("seconds", "node_id")} == \
            {k: v for k, v in rb.items() if k not in ("seconds", "node_id")}
    wa, _ = load_model(tmp_path / "whole" / "best.pt")
    wb, _ = load_model(tmp_path / "split" / "best.pt")
    assert all(torch.equal(wa.state_dict()[k], wb.state_dict()[k]) for k in wa.state_dict())
    assert whole["test_mse"] == resumed["test_mse"]


def test_a_pack_that_dies_before_the_checkpoint_is_restarted_and_the_coordinator_goes_on(ray_session, tmp_path):
    """A pack lost between the broadcast and the checkpoint's gather (here: killed right after the broadcast) is
    restarted from the broadcast weights like any pack lost after it reported; its death used to escape the
    coordinator's method and read, to the driver, as the coordinator's own."""
    from popvae.population.coordinator import PopulationCoordinator
    from popvae.population.run_folder import RunFolder

    victim = 2

    class KillsAPackAfterTheSecondBroadcast(PopulationCoordinator):  # pickled by value: workers cannot import tests
        def _broadcast(self, decision, best_ref):
            lost = super()._broadcast(decision, best_ref)
            if self.record.epochs_done == 1:
                pack = self.workers[self.pack_of[victim]]
                ray_session.kill(pack)
                with contextlib.suppress(ray_session.exceptions.RayError):
                    ray_session.get(pack.pid.remote())  # returns once Ray knows it is dead
            return lost

    cfg = small_config(pack_size=1)  # one member per process: the victim dies alone; a checkpoint every epoch
    data = load_run_data(cfg)
    coord = ray_session.remote(KillsAPackAfterTheSecondBroadcast).options(namespace=NAMESPACE).remote(
        cfg, str(tmp_path / "run"), (data.train.images, data.val.images), False)
    try:
        assert ray_session.get(coord.run_generation.remote(0))["events"] == {}
        assert ray_session.get(coord.run_generation.remote(1))["events"] == {str(victim): "restarted"}
        assert ray_session.get(coord.run_generation.remote(2))["events"] == {}
        ray_session.get(coord.finish.remote())  # the last checkpoint is written in the background: on disk after this
        checkpoint = RunFolder(tmp_path / "run").read_checkpoint()
        assert checkpoint.epochs_done == 3 and sorted(checkpoint.optimizers) == [1, 2, 3]
        assert member_weights_equal(ray_session.get(coord.member_handles.remote()))
    finally:  # its packs hold the CPUs the next tests need, also when an assertion failed
        with contextlib.suppress(Exception):
            for h in ray_session.get(coord.member_handles.remote(), timeout=10).values():
                ray_session.kill(h)
        ray_session.kill(coord)


def wait_until_trained(ray_session, worker, member, before):
    """Until `member`'s weights differ from `before`: a worker runs one call at a time, so an answer with new weights
    comes after the whole train_epoch that changed them (and its result), not from inside it."""
    while all(np.array_equal(before[k], v) for k, v in ray_session.get(worker.get_weights.remote(member)).items()):
        time.sleep(0.05)


def wait_until_training(ray_session, coord, deadline_s=30):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if all(m["state"] == "training" for m in ray_session.get(coord.status.remote())["members"]):
            return
        time.sleep(0.05)
    raise AssertionError("members never started training")


def test_pack_killed_mid_epoch_is_restarted_and_the_run_goes_on(ray_session, tmp_path):
    # two packs of two: the killed pack's members are all restarted, the other pack's are untouched
    members, victims = 4, [3, 4]
    coord = start_coordinator(small_config(steps_per_epoch=60, members=members, pack_size=2), tmp_path / "run")
    assert ray_session.get(coord.pack_layout.remote())[-1] == victims
    ray_session.get(coord.run_generation.remote(0))
    pending = coord.run_generation.remote(1)
    wait_until_training(ray_session, coord)
    victim = ray_session.get(coord.member_handles.remote())[victims[0]]
    ray_session.kill(victim)  # the whole pack dies: every member in it is restarted from the last broadcast
    entry = ray_session.get(pending)
    assert entry["events"] == {str(i): "restarted" for i in victims}
    entry = ray_session.get(coord.run_generation.remote(2))
    assert entry["events"] == {}
    rows = folder_io.read_rows(tmp_path / "run" / "history.parquet")
    for i in range(1, members + 1):
        assert [r["event"] for r in rows if r["member"] == i] == (["", "restarted", ""] if i in victims else ["", "", ""])
    assert all(math.isfinite(r["score"]) for r in rows)
    handles = ray_session.get(coord.member_handles.remote())
    assert handles[victims[0]] != victim and member_weights_equal(handles)
    status = ray_session.get(coord.status.remote())
    assert [m["flags"] for m in status["members"]] == [["restarted@2"] if i in victims else [] for i in range(1, members + 1)]
    for h in handles.values():
        ray_session.kill(h)
    ray_session.kill(coord)


@pytest.mark.parametrize(("pack_size", "precision"), [(4, "bf16"), (1, "fp32")])
def test_injected_nan_member_is_reset_from_the_best_and_flagged(ray_session, tmp_path, pack_size, precision):
    coord = start_coordinator(small_config(pack_size=pack_size, precision=precision), tmp_path / "run")
    assert len(ray_session.get(coord.pack_layout.remote())) == (1 if pack_size == 4 else 3)
    ray_session.get(coord.run_generation.remote(0))
    handles = ray_session.get(coord.member_handles.remote())
    weights = ray_session.get(handles[3].get_weights.remote(3))
    ray_session.get(handles[3].set_weights.remote({k: np.full_like(v, np.nan) for k, v in weights.items()}, [3]))
    entry = ray_session.get(coord.run_generation.remote(1))
    assert entry["events"] == {"3": "nan_reset"} and entry["best"] != 3  # the slot's pack mates trained on
    assert member_weights_equal(handles)
    entry = ray_session.get(coord.run_generation.remote(2))
    every = folder_io.read_rows(tmp_path / "run" / "history.parquet")
    assert all(math.isfinite(r["score"]) for r in every if r["member"] != 3)
    rows = [r for r in every if r["member"] == 3]
    assert [r["event"] for r in rows] == ["", "nan_reset", ""]
    assert math.isnan(rows[1]["score"]) and math.isfinite(rows[2]["score"])
    assert "nan_reset@2" in ray_session.get(coord.status.remote())["members"][2]["flags"]
    for h in handles.values():
        ray_session.kill(h)
    ray_session.kill(coord)


def test_best_member_dying_after_it_reported_hands_the_broadcast_to_the_next_best(ray_session, tmp_path):
    cfg = small_config(steps_per_epoch=20, pack_size=1)  # one member per process: the best dies alone
    reference = start_coordinator(cfg, tmp_path / "ref")  # the same seed: members 1 and 2 train identically
    for epoch in (0, 1):
        ray_session.get(reference.run_generation.remote(epoch))
    scores = {r["member"]: r["score"] for r in folder_io.read_rows(tmp_path / "ref" / "history.parquet") if r["epoch"] == 2}
    for h in ray_session.get(reference.member_handles.remote()).values():
        ray_session.kill(h)
    victim, heir = sorted((1, 2), key=lambda i: scores[i])

    coord = start_coordinator(cfg, tmp_path / "run")
    ray_session.get(coord.run_generation.remote(0))
    handles = ray_session.get(coord.member_handles.remote())
    nan = ray_session.put({k: np.full_like(v, np.nan) for k, v in ray_session.get(handles[3].get_weights.remote(3)).items()})
    backlog = [handles[3].train_epoch.remote(100 + k, {3: 1.0}) for k in range(10)]  # member 3 reports late, and NaN
    handles[3].set_weights.remote(nan)
    broadcast = ray_session.get(handles[victim].get_weights.remote(victim))
    pending = coord.run_generation.remote(1)
    wait_until_trained(ray_session, handles[victim], victim, broadcast)  # it has reported epoch 1
    _, still_queued = ray_session.wait(backlog, num_returns=len(backlog), timeout=0)
    assert still_queued  # member 3 has not reported yet: the barrier is still open
    ray_session.kill(handles[victim])  # reported, not yet broadcast: the best's weights are gone
    entry = ray_session.get(pending)
    assert entry["best"] == heir
    assert entry["events"] == {str(victim): "restarted", "3": "nan_reset"}
    handles = ray_session.get(coord.member_handles.remote())
    assert member_weights_equal(handles)
    assert ray_session.get(coord.run_generation.remote(2))["events"] == {}
    for h in handles.values():
        ray_session.kill(h)
    ray_session.kill(coord)
    ray_session.kill(reference)


def test_baseline_is_one_member_with_annealed_tau(ray_session, tmp_path):
    cfg = small_config(baseline=True, members=1, temperature={"anneal_rate": 0.5, "tau_min": 0.1})
    summary = run_population(cfg, tmp_path / "base", load_run_data(cfg))
    rows = folder_io.read_rows(tmp_path / "base" / "history.parquet")
    assert [r["tau"] for r in rows] == pytest.approx([1.0, 0.5, 0.25])
    assert {r["strategy"] for r in rows} == {"anneal"} and summary["baseline"] is True
    assert 0 < summary["test_mse"] < 1
    assert (tmp_path / "base" / "plots" / "tau.png").stat().st_size > 0


def test_member_past_the_timeout_is_dropped_from_the_generation_and_back_in_the_next(ray_session, tmp_path):
    # A pack of one whose process is stopped (SIGSTOP) cannot answer before any deadline, however loaded the machine;
    # member 1's two tiny steps fit in the deadline with a wide margin. The deadline is what the generation waits.
    cfg = small_config(members=2, steps_per_epoch=2, pack_size=1, member_timeout_s=5.0)
    coord = start_coordinator(cfg, tmp_path / "run")
    ray_session.get(coord.run_generation.remote(0))
    stuck = ray_session.get(coord.member_handles.remote())[2]
    pid = ray_session.get(stuck.pid.remote())
    os.kill(pid, signal.SIGSTOP)
    try:
        never = stuck.pid.remote()  # queued on the stopped worker: it fails when the coordinator kills it
        entry = ray_session.get(coord.run_generation.remote(1))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert entry["events"] == {"2": "dropped"} and entry["best"] == 1
    rows = folder_io.read_rows(tmp_path / "run" / "history.parquet")
    assert [r["event"] for r in rows if r["member"] == 2] == ["", "dropped"]
    assert "dropped@2" in ray_session.get(coord.status.remote())["members"][1]["flags"]
    with pytest.raises(ray_session.exceptions.RayActorError):  # the stopped worker was killed, its queue with it
        ray_session.get(never)
    entry = ray_session.get(coord.run_generation.remote(2))  # the restarted member is back, from the best weights
    assert entry["events"] == {}
    assert ray_session.get(coord.status.remote())["members"][1]["state"] == "idle"
    for h in ray_session.get(coord.member_handles.remote()).values():
        ray_session.kill(h)
    ray_session.kill(coord)


def test_member_that_finds_no_slot_fails_the_run_with_the_reason_instead_of_hanging(ray_session, tmp_path, all_cpus_taken):
    cfg = small_config(members=2, placement_timeout_s=2.0)
    coord = start_coordinator(cfg, tmp_path / "run")
    with pytest.raises(ray_session.exceptions.RayActorError, match="found no slot on the cluster within 2 s"):
        ray_session.get(coord.status.remote())
    assert folder_io.read_json(tmp_path / "run" / "status.json")["state"] == "failed"
    # the CLI says why in one line and exits 1, instead of Ray's traceback
    config = tmp_path / "config.json"
    folder_io.write_json(config, cfg.model_dump(mode="json"))
    address = ray_session.get_runtime_context().gcs_address
    popvae = Path(sys.executable).parent / "popvae"
    done = subprocess.run([str(popvae), "train", "--config", str(config), "--run-dir", str(tmp_path / "cli"),
                           "--address", address, "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "popvae: run failed: RuntimeError: members [1, 2] found no slot on the cluster within 2 s" in done.stderr
    assert "Traceback" not in done.stderr


def test_cpu_share_never_asks_more_than_one_node_holds() -> None:
    # one member on head + two 1-CPU workers: 3 CPUs in all, but no node can host a 3-CPU actor
    assert cpu_share(3.0, 1.0, 1) == 1.0
    assert cpu_share(8.0, 4.0, 4) == 2.0
    assert cpu_share(2.0, 2.0, 5) == pytest.approx(0.4)


def test_plan_packs_one_pack_per_device_or_at_most_k() -> None:
    members = list(range(1, 9))
    # CPUs: a looped pack per CPU (auto resolves to loop there), a vmap pack per CPU node
    assert plan_packs(members, "auto", gpus=0, cpu_nodes=1, cpus=2) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert plan_packs(members, "auto", gpus=0, cpu_nodes=1, cpus=2, pack_mode="loop") == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert plan_packs(members, "auto", gpus=0, cpu_nodes=1, cpus=2, pack_mode="vmap") == [members]
    assert plan_packs(members, "auto", gpus=0, cpu_nodes=2, cpus=64, pack_mode="loop") == [[i] for i in members]
    assert plan_packs(members, "auto", gpus=1, cpu_nodes=1, cpus=2) == [members]  # n members on 1 GPU
    assert plan_packs(members, "auto", gpus=2, cpu_nodes=1) == [[1, 2, 3, 4], [5, 6, 7, 8]]
    assert plan_packs(members, "auto", gpus=2, cpu_nodes=3, device="cpu", pack_mode="vmap") == [[1, 2, 3], [4, 5, 6],
                                                                                                [7, 8]]
    assert plan_packs(members, 1, gpus=0, cpu_nodes=1) == [[i] for i in members]  # today's one member per process
    assert plan_packs(members, 3, gpus=0, cpu_nodes=1) == [[1, 2, 3], [4, 5, 6], [7, 8]]
    assert plan_packs([1, 2], "auto", gpus=4, cpu_nodes=1) == [[1], [2]]
