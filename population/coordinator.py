"""The coordinator: a named Ray actor that carries out the population's generations.

Members live in packs (docs/PACKING.md): a worker hosts k members (stacked under vmap, or stepped in a loop), and a member is
(pack, slot); `pack_planning.plan_packs` decides which members share a worker (`pack_size`). Per generation (docs/ALGORITHMS.md
§2): every pack trains one epoch of all its members; scores are gathered behind a barrier with a timeout; the
generation policy (`population/generation.py`) picks the best, every next tau and patience, the receivers and the
resets; the best weights are fetched once into the object store and that one ObjectRef is handed, as a top-level
argument, to every receiving pack, while the pack holding the best copies it between slots (no object-store read).
This actor only executes (train, barrier, broadcast, restart) and holds the taus; the `Recorder` persists what
happened (history, lineage, status, checkpoints) and reads a resumed run back.

Faults never stop the population: a pack that dies is restarted and all its members re-seeded from the last
broadcast weights (event `restarted` on each), then retried once; a pack that exceeds the timeout is killed,
restarted, and its members dropped from this generation, unless nothing finite was reported, when it is retried
once (with every member in one pack, a drop would leave nothing to select); a member whose score is not finite is
reset from the best and flagged (its slot only: weights and Adam state).
"""

from __future__ import annotations

import importlib
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.exceptions import RayError

from popvae.population import generation
from popvae.population.config import RunConfig
from popvae.population.contract import RunState, StopReason, dump
from popvae.population.pack_planning import plan_packs
from popvae.population.placement import Placement
from popvae.population.recorder import Gathered, Recorder

Result = dict[str, Any]  # what a member's train_epoch reports


class PopulationCoordinator:
    """The generation protocol over packs (`packs[p]`: the members worker `workers[p]` hosts); `tau` holds every
    member's tau and patience; `record` keeps the books."""

    def __init__(self, config: RunConfig, run_dir: str, images: tuple[np.ndarray, np.ndarray], resume: bool = False,
                 restarts: int = 0) -> None:
        """`images` (train, validation) come by value and are put in the object store here, so that this actor owns
        them and the driver owns no stored object: when a SIGTERM to the whole process group takes Ray's processes
        down, an owner's attempt to recover its lost objects ends the process with exit 1 from inside Ray, before the
        driver can stop as interrupted. `restarts` > 0: this coordinator replaces one whose process died (the run's
        `restarts`-th time)."""
        # The first checkpoint's optimizer states arrive as torch tensors: import torch while the packs start
        # (seconds this actor spends waiting anyway) rather than inside the first generation.
        threading.Thread(target=importlib.import_module, args=("torch",), name="import-torch", daemon=True).start()
        self.cfg = config
        self.tau = generation.first_taus(config)
        self.record = Recorder(config, Path(run_dir), taus=lambda: self.tau)
        self.train_ref, self.val_ref = (ray.put(a) for a in images)
        self.last_broadcast: ray.ObjectRef | None = None
        self.training: int | None = None  # the epoch (from 0) the packs train now
        self.steps: dict[int, tuple[int, int]] = {}  # member -> (steps done, steps) in that epoch, as its pack reported
        # The books come back before anything is written: a status written from here on (even the failure to place
        # the members) is the run's, never a blank one.
        restored = None
        if resume:
            restored, self.tau = self.record.restore()
            self.record.since_improvement = self._plateau()[0]  # the stopper's count, from the restored lineage
        if restarts:
            self.record.coordinator_restarted(restarts)
        cpu_nodes = sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0)
        resources = ray.cluster_resources()
        self.packs = plan_packs(list(self.record.members), config.pack_size, resources.get("GPU", 0), cpu_nodes,
                                config.device, int(resources.get("CPU", 1)), config.pack_mode)
        self.pack_of = {i: p for p, pack in enumerate(self.packs) for i in pack}
        self.placement = Placement(len(self.packs), config.device, config.placement_timeout_s, share_gpus=True)
        spawned = {p: self._spawn(p) for p in range(len(self.packs))}
        self.workers = {p: worker for p, (worker, _) in spawned.items()}
        self._await_placed({p: ready for p, (_, ready) in spawned.items()})
        if restored is not None:
            self._load(restored)
        self.record.write_status()

    # --- placement ---
    def _spawn(self, p: int) -> tuple[Any, ray.ObjectRef]:
        """A worker for pack p, and the ref that resolves once its members are built."""
        worker = self.placement.spawn(p)
        return worker, worker.host_pack.remote(self.packs[p], self.cfg, self.train_ref, self.val_ref)

    def _await_placed(self, ready: dict[int, ray.ObjectRef]) -> None:
        """Wait for packs to be built, but not for ever: a run that stops and can be resumed beats one that
        hangs silently."""
        started, missing_packs = self.placement.started({p: (self.workers[p], ref) for p, ref in ready.items()})
        ray.get([ready[p] for p in started])  # a pack that failed to build raises here
        missing = sorted(i for p in missing_packs for i in self.packs[p])
        if missing:
            self.record.set_state("failed")
            raise RuntimeError(
                f"members {missing} found no slot on the cluster within {self.placement.timeout_s:g} s "
                f"(each needs {self.placement.describe()}; free now: {_devices(ray.available_resources())})"
            )

    # --- one generation ---
    def run_generation(self, epoch: int) -> dict[str, Any]:
        """Train, decide, broadcast, book; returns the generation's lineage entry (as JSON data)."""
        started = time.perf_counter()
        barrier = self._train_all(epoch)
        results = barrier.results
        trained = time.perf_counter()
        scores = {i: self._score(results.get(i)) for i in self.pack_of}
        non_finite = [i for i, score in scores.items() if not math.isfinite(score) and results.get(i) is not None]
        candidates, lost = dict(scores), set()
        while True:
            if not generation.any_finite(candidates):
                self.record.set_state("failed")
                raise RuntimeError(generation.failure_message(epoch, barrier.timed_out, self.cfg.member_timeout_s))
            events = generation.member_events(self.pack_of, retried=barrier.retried, dropped=barrier.dropped,
                                              lost=lost, non_finite=non_finite)
            decision = generation.decide(epoch, candidates, self.tau, self.cfg,
                                         reset=[i for i, e in events.items() if e == "nan_reset"])
            best_ref = self.workers[self.pack_of[decision.best]].get_weights.remote(decision.best)
            try:
                ray.get(best_ref)  # the best may have died since it reported: then the next best is broadcast
                break
            except RayError:  # its pack mates' trained weights died with it
                lost.update(self._restart(self.pack_of[decision.best]))
                candidates.update({i: math.nan for i in lost})
        lost.update(self._broadcast(decision, best_ref))
        gathered = None
        if self.record.checkpoint_due(epoch):
            gathered, restarted = self._gather(best_ref)
            lost.update(restarted)
        events = generation.member_events(self.pack_of, retried=barrier.retried, dropped=barrier.dropped, lost=lost,
                                          non_finite=non_finite)
        before, self.tau = self.tau, {**self.tau, **decision.taus}
        seconds = {"train": trained - started, "coordination": time.perf_counter() - trained}
        entry = self.record.record_generation(epoch, results, scores, decision, before, events, seconds, gathered)
        self.record.set_stop(*self._plateau())
        return dump(entry)

    def _plateau(self) -> tuple[int, generation.StopReason | None]:
        """The stopper's count and whether the run ends now (generation.stop_reason), from the lineage so far."""
        losses = [g.best_loss for g in self.record.lineage]
        count = generation.plateau_count(losses, self.cfg.stop.min_delta) if self.cfg.stop is not None else 0
        return count, generation.stop_reason(self.record.epochs_done, losses, self.cfg)

    def _score(self, result: Result | None) -> float:
        """The loss selection uses (`select_on`); NaN for a member that did not report."""
        if result is None:
            return math.nan
        return result["loss"]["total"] if self.cfg.select_on == "train" else result["val_loss"]

    def _train_all(self, epoch: int) -> _Barrier:
        """The barrier: every pack's epoch; a pack that fails or runs late is restarted, then retried or dropped as
        `generation.after_fault` says. One deadline for all packs, a failed pack's retry included; a late pack's
        retry (its deadline has passed) gets `member_timeout_s` of its own."""
        taus = {i: t.tau for i, t in self.tau.items()}
        self.training, self.steps = epoch, {}
        me = ray.get_runtime_context().current_actor
        self.record.set_member_state("training", list(self.pack_of))
        barrier = _Barrier()
        tries = dict.fromkeys(self.workers, 1)
        deadline = time.monotonic() + self.cfg.member_timeout_s

        def train(p: int, until: float) -> tuple[ray.ObjectRef, float]:
            return self.workers[p].train_epoch.remote(epoch, {i: taus[i] for i in self.packs[p]}, me), until

        pending = {p: train(p, deadline) for p in self.workers}
        while pending:
            refs = {ref: p for p, (ref, _) in pending.items()}
            first = min(until for _, until in pending.values())
            ready, _ = ray.wait(list(refs), num_returns=1, timeout=max(0.0, first - time.monotonic()))
            if ready:
                p = refs[ready[0]]
                _, until = pending.pop(p)
                try:
                    barrier.results.update(ray.get(ready[0]))
                    continue
                except RayError:
                    fault: generation.PackFault = "failed"
            else:  # past its deadline: free the barrier, keep the members for the next try or generation
                p = next(q for q, (_, until) in pending.items() if until == first)
                del pending[p]
                fault, until = "late", time.monotonic() + self.cfg.member_timeout_s
            finite = any(math.isfinite(self._score(r)) for r in barrier.results.values())
            action = generation.after_fault(fault, tries[p], finite)
            if fault == "late" or action == "retry":  # a pack that died for good is restarted by the next call
                self._restart(p)
            if action == "retry":
                tries[p] += 1
                barrier.retried.update(self.packs[p])
                pending[p] = train(p, until)
            else:
                barrier.dropped.update(self.packs[p])
                if fault == "late":
                    barrier.timed_out.update(self.packs[p])
                barrier.results.update(dict.fromkeys(self.packs[p]))
        return barrier

    def _broadcast(self, decision: generation.Decision, best_ref: ray.ObjectRef) -> list[int]:
        """The best weights went into the object store once (`best_ref`); every receiving pack reads that one
        object, the pack holding the best copies between slots. A pack that dies meanwhile is restarted from it;
        returns the members restarted so."""
        self.last_broadcast = best_ref
        home = self.pack_of[decision.best]
        calls = {}
        for p, worker in self.workers.items():
            targets = [i for i in self.packs[p] if i in decision.receivers]
            reset = [i for i in self.packs[p] if i in decision.reset]
            if targets:
                calls[p] = worker.copy_slot.remote(decision.best, targets, reset) if p == home else \
                    worker.set_weights.remote(best_ref, targets, reset)
        lost = []
        for p, call in calls.items():
            try:
                ray.get(call)
            except RayError:
                lost += self._restart(p)
        return lost

    def _restart(self, p: int) -> list[int]:
        """A new worker for pack p, every member re-seeded from the last broadcast; returns those members."""
        members = self.packs[p]
        self.record.set_member_state("restarting", members)
        ray.kill(self.workers[p], no_restart=True)
        self.workers[p], ready = self._spawn(p)
        self._await_placed({p: ready})
        if self.last_broadcast is not None:
            ray.get(self.workers[p].set_weights.remote(self.last_broadcast))
        return list(members)

    def _gather(self, best_ref: ray.ObjectRef) -> tuple[Gathered, list[int]]:
        """What a checkpoint needs (members are idle between generations); each member's own weights only when
        there is no broadcast (after one, every member holds the best's). A pack that died since the broadcast is
        restarted from it, its members' optimizer state begun afresh, like any pack lost after it reported: a
        pack's death must never read as the coordinator's. Returns those members too."""
        asked = {p: w.get_optimizer_state.remote() for p, w in self.workers.items()}
        optimizers: dict[int, dict[str, Any]] = {}
        restarted: list[int] = []
        for p, ref in asked.items():
            try:
                optimizers.update(ray.get(ref))
            except RayError:
                restarted += self._restart(p)
                optimizers.update(ray.get(self.workers[p].get_optimizer_state.remote()))
        own = None if self.cfg.broadcast else \
            {i: ray.get(self.workers[p].get_weights.remote(i)) for i, p in sorted(self.pack_of.items())}
        return (ray.get(best_ref), {i: optimizers[i] for i in sorted(optimizers)}, own), restarted

    def _load(self, restored: Gathered) -> None:
        """Every member back to the checkpoint the recorder read: weights, optimizer states, own weights."""
        weights, optimizers, own = restored
        self.last_broadcast = ray.put(weights)
        ray.get([w.set_weights.remote(self.last_broadcast) for w in self.workers.values()])
        if own is not None:
            ray.get([self.workers[self.pack_of[i]].set_weights.remote(ray.put(w), [i]) for i, w in own.items()])
        ray.get([w.set_optimizer_state.remote({i: optimizers[i] for i in self.packs[p]}) for p, w in self.workers.items()])

    # --- the actor's interface (population.driver, the status service, tests) ---
    def member_handles(self) -> dict[int, Any]:
        """{member: the worker hosting its pack} (pack mates share one handle)."""
        return {i: self.workers[p] for i, p in self.pack_of.items()}

    def pack_layout(self) -> list[list[int]]:
        """The members of each pack, in pack order."""
        return [list(pack) for pack in self.packs]

    def next_epoch(self) -> int:
        return self.record.epochs_done

    def finish(self, state: RunState = "done", reason: StopReason | None = None) -> None:
        """The run ends in `state`; `reason` (when given) replaces the stop reason the stopper recorded."""
        self.record.finish(state, reason)

    def status(self) -> dict[str, Any]:
        """status.json's content, and for each member training now its steps done in the epoch (live only)."""
        status = self.record.status()
        steps = dict(self.steps)
        members = [m.model_copy(update=dict(zip(("steps_done", "steps"), steps[m.index], strict=True)))
                   if m.state == "training" and m.index in steps else m for m in status.members]
        return dump(status.model_copy(update={"members": members}))

    def progress(self, epoch: int, members: list[int], done: int, steps: int) -> None:
        """A pack's steps done in the epoch it trains (its worker reports about once a second); late news of an
        earlier epoch is dropped."""
        if epoch == self.training:
            self.steps.update(dict.fromkeys(members, (done, steps)))

    def wait_for_writes(self) -> None:
        """Block until the last checkpoint is on disk; re-raises a write that failed."""
        self.record.wait_for_writes()


@dataclass
class _Barrier:
    """What one generation's barrier gathered: every member's result (None when dropped), and which members were
    retried (their pack restarted before they reported), dropped, and dropped for running past the timeout."""

    results: dict[int, Result | None] = field(default_factory=dict)
    retried: set[int] = field(default_factory=set)
    dropped: set[int] = field(default_factory=set)
    timed_out: set[int] = field(default_factory=set)


def _devices(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


# Threaded, so `status()` answers while a generation is running.
Coordinator = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)(PopulationCoordinator)
