"""The coordinator: a named Ray actor that runs the population's generation protocol.

Members live in packs (docs/PACKING.md): a worker hosts k members as one stacked model, and a member is
(pack, slot); `worker.plan_packs` decides which members share a worker (`pack_size`). Per generation (docs/ALGORITHMS.md §2):
every pack trains one epoch of all its members; scores are gathered behind a barrier with a timeout; the best is
selected and every tau advanced (`temperature.next_taus`); the best weights are fetched once into the object store
and that one ObjectRef is handed, as a top-level argument, to every other pack, while the pack holding the best
copies it between slots (no object-store read). What happened is booked per member by the `Recorder` (history,
lineage, status, checkpoints), which also restores a resumed run.

Faults never stop the population: a pack that dies is restarted and all its members re-seeded from the last
broadcast weights (event `restarted` on each), then retried once; a pack that exceeds the timeout is killed,
restarted and its members dropped from this generation; a member whose score is not finite is reset from the best
and flagged (its slot only: weights and Adam state).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError

from popvae.population.config import RunConfig
from popvae.population.contract import MemberEvent, RunState, dump
from popvae.population.recorder import Gathered, Recorder
from popvae.population.temperature import MemberTau, annealed_tau, next_taus, scheduled_tau
from popvae.population.worker import Placement, plan_packs

Result = dict[str, Any]  # what a member's train_epoch reports


class PopulationCoordinator:
    """The generation protocol over packs (`packs[p]`: the members worker `workers[p]` hosts); `record` keeps the books."""

    def __init__(self, config: RunConfig, run_dir: str, data_refs: list[ray.ObjectRef], resume: bool = False) -> None:
        self.cfg = config
        self.record = Recorder(config, Path(run_dir))
        self.train_ref, self.val_ref = data_refs
        self.last_broadcast: ray.ObjectRef | None = None
        cpu_nodes = sum(1 for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0)
        self.packs = plan_packs(list(self.record.members), config.pack_size, ray.cluster_resources().get("GPU", 0),
                                cpu_nodes, config.device)
        self.pack_of = {i: p for p, pack in enumerate(self.packs) for i in pack}
        self.placement = Placement(len(self.packs), config.device, config.placement_timeout_s, share_gpus=True)
        spawned = {p: self._spawn(p) for p in range(len(self.packs))}
        self.workers = {p: worker for p, (worker, _) in spawned.items()}
        self._await_placed({p: ready for p, (_, ready) in spawned.items()})
        if resume:
            self._restore()
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
        """Train, select, broadcast, book; returns the generation's lineage entry (as JSON data)."""
        started = time.perf_counter()
        results, events = self._train_all(epoch)
        trained = time.perf_counter()
        scores = {i: self._score(results.get(i)) for i in self.pack_of}
        for i, score in scores.items():
            if not math.isfinite(score) and results.get(i) is not None:
                events[i] = "nan_reset"
        candidates = dict(scores)
        while True:
            if not any(math.isfinite(v) for v in candidates.values()):
                self.record.set_state("failed")
                raise RuntimeError(f"generation {epoch}: no member produced a finite loss and kept its weights")
            best, decisions = self._select(epoch, candidates)
            best_ref = self.workers[self.pack_of[best]].get_weights.remote(best)
            try:
                ray.get(best_ref)  # the best may have died since it reported: then the next best is broadcast
                break
            except RayError:  # its pack mates' trained weights died with it
                for i in self._restart(self.pack_of[best], events):
                    candidates[i] = math.nan
        self._broadcast(best, best_ref, events)
        seconds = {"train": trained - started, "coordination": time.perf_counter() - trained}
        entry = self.record.record_generation(epoch, results, scores, best, decisions, events, seconds,
                                              gather=lambda: self._gather(best_ref))
        return dump(entry)

    def _score(self, result: Result | None) -> float:
        """The loss selection uses (`select_on`); NaN for a member that did not report."""
        if result is None:
            return math.nan
        return result["val_loss"] if self.cfg.select_on == "val" else result["loss"]["total"]

    def _train_all(self, epoch: int) -> tuple[dict[int, Result | None], dict[int, MemberEvent]]:
        """The barrier: every pack's epoch, restarting a dead pack once, dropping a late one."""
        taus = self.record.taus()
        self.record.set_member_state("training", list(self.pack_of))
        train = lambda p: self.workers[p].train_epoch.remote(epoch, {i: taus[i] for i in self.packs[p]})  # noqa: E731
        pending = {train(p): p for p in self.workers}
        results: dict[int, Result | None] = {}
        events: dict[int, MemberEvent] = {}
        retried: set[int] = set()
        deadline = time.monotonic() + self.cfg.member_timeout_s
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            p = pending.pop(ready[0])
            try:
                results.update(ray.get(ready[0]))
            except RayError:
                if p in retried:  # failed twice in one generation: leave its members out
                    self._drop(p, events, results)
                    continue
                self._restart(p, events)
                retried.add(p)
                pending[train(p)] = p
        for p in pending.values():  # past the deadline: free the barrier, keep the members for next time
            self._restart(p, events)
            self._drop(p, events, results)
        return results, events

    def _drop(self, p: int, events: dict[int, MemberEvent], results: dict[int, Result | None]) -> None:
        for i in self.packs[p]:
            events[i], results[i] = "dropped", None

    def _select(self, epoch: int, scores: dict[int, float]) -> tuple[int, dict[int, MemberTau]]:
        """The best member and every member's next tau decision."""
        if self.cfg.baseline:
            return 1, {1: MemberTau(annealed_tau(epoch + 1, self.cfg.temperature), 0, False)}
        if self.cfg.schedule_of is not None:
            tau = scheduled_tau(self.record.taus()[1], self.cfg.schedule_of, self.cfg.temperature)
            return 1, {1: MemberTau(tau, 0, False)}
        return next_taus(self.record.taus(), self.record.patience(), scores, self.cfg.temperature)

    def _broadcast(self, best: int, best_ref: ray.ObjectRef, events: dict[int, MemberEvent]) -> None:
        """The best weights went into the object store once (`best_ref`); every other pack reads that one object,
        the pack holding the best copies between slots. A pack that dies meanwhile is restarted from it. Without
        the broadcast (an ablation) only the members reset after a NaN receive the best weights."""
        self.last_broadcast = best_ref
        home = self.pack_of[best]
        calls = {}
        for p, worker in self.workers.items():
            reset = [i for i in self.packs[p] if i != best and events.get(i) == "nan_reset"]
            targets = [i for i in self.packs[p] if i != best] if self.cfg.broadcast else reset
            if targets:
                calls[p] = worker.copy_slot.remote(best, targets, reset) if p == home else \
                    worker.set_weights.remote(best_ref, targets, reset)
        for p, call in calls.items():
            try:
                ray.get(call)
            except RayError:
                self._restart(p, events)

    def _restart(self, p: int, events: dict[int, MemberEvent]) -> list[int]:
        """A new worker for pack p, every member re-seeded from the last broadcast; returns those members."""
        members = self.packs[p]
        self.record.set_member_state("restarting", members)
        ray.kill(self.workers[p], no_restart=True)
        self.workers[p], ready = self._spawn(p)
        self._await_placed({p: ready})
        if self.last_broadcast is not None:
            ray.get(self.workers[p].set_weights.remote(self.last_broadcast))
        for i in members:
            events[i] = "restarted"
        return members

    def _gather(self, best_ref: ray.ObjectRef) -> Gathered:
        """What a checkpoint needs (members are idle between generations); each member's own weights only when
        there is no broadcast (after one, every member holds the best's)."""
        optimizers: dict[int, dict[str, Any]] = {}
        for states in ray.get([w.get_optimizer_state.remote() for w in self.workers.values()]):
            optimizers.update(states)
        own = None if self.cfg.broadcast else \
            {i: ray.get(self.workers[p].get_weights.remote(i)) for i, p in sorted(self.pack_of.items())}
        return ray.get(best_ref), {i: optimizers[i] for i in sorted(optimizers)}, own

    def _restore(self) -> None:
        weights, optimizers, own = self.record.restore()
        self.last_broadcast = ray.put(weights)
        ray.get([w.set_weights.remote(self.last_broadcast) for w in self.workers.values()])
        if own is not None:
            ray.get([self.workers[self.pack_of[i]].set_weights.remote(ray.put(w), [i]) for i, w in own.items()])
        ray.get([w.set_optimizer_state.remote({i: optimizers[i] for i in self.packs[p]}) for p, w in self.workers.items()])

    # --- the actor's interface (population.run, the status service, tests) ---
    def member_handles(self) -> dict[int, Any]:
        """{member: the worker hosting its pack} (pack mates share one handle)."""
        return {i: self.workers[p] for i, p in self.pack_of.items()}

    def pack_layout(self) -> list[list[int]]:
        """The members of each pack, in pack order."""
        return [list(pack) for pack in self.packs]

    def next_epoch(self) -> int:
        return self.record.epochs_done

    def finish(self, state: RunState = "done") -> None:
        self.record.finish(state)

    def coordinator_restarted(self, count: int) -> None:
        """This coordinator replaces one whose process died (the `count`-th time in this run, across resumes)."""
        self.record.coordinator_restarted(count)

    def status(self) -> dict[str, Any]:
        return dump(self.record.status())

    def wait_for_writes(self) -> None:
        """Block until the last checkpoint is on disk; re-raises a write that failed."""
        self.record.wait_for_writes()


def _devices(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


# Threaded, so `status()` answers while a generation is running.
Coordinator = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)(PopulationCoordinator)
