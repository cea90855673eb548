"""The coordinator: a named Ray actor that runs the population's generation protocol.

Per generation (DESIGN §4): every member trains one epoch; scores are gathered behind a barrier
with a timeout; the best is selected and every tau advanced (`temperature.next_taus`); the best
weights are fetched once into the object store and that one ObjectRef is handed, as a top-level
argument, to every other member. What happened is booked by the `Recorder` (history, lineage,
status, checkpoints), which also restores a resumed run.

Faults never stop the population: a member that dies is restarted and re-seeded from the last
broadcast weights, then retried once; one that exceeds the timeout is killed, restarted and
dropped from this generation; one whose score is not finite is reset from the best and flagged.
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
from popvae.population.temperature import MemberTau, annealed_tau, next_taus
from popvae.population.worker import Placement

Result = dict[str, Any]  # what a member's train_epoch reports


class PopulationCoordinator:
    """The generation protocol over one worker per member (`handles`); `record` keeps the books."""

    def __init__(self, config: RunConfig, run_dir: str, data_refs: list[ray.ObjectRef], resume: bool = False) -> None:
        self.cfg = config
        self.record = Recorder(config, Path(run_dir))
        self.train_ref, self.val_ref = data_refs
        self.last_broadcast: ray.ObjectRef | None = None
        self.placement = Placement(config.members, config.device, config.placement_timeout_s)
        spawned = {i: self._spawn(i) for i in self.record.members}
        self.handles = {i: worker for i, (worker, _) in spawned.items()}
        self._await_placed({i: ready for i, (_, ready) in spawned.items()})
        if resume:
            self._restore()
        self.record.write_status()

    # --- placement ---
    def _spawn(self, i: int) -> tuple[Any, ray.ObjectRef]:
        """A worker for member i, and the ref that resolves once the member is built."""
        worker = self.placement.spawn(i - 1)
        return worker, worker.host_member.remote(i, self.cfg, self.train_ref, self.val_ref)

    def _await_placed(self, ready: dict[int, ray.ObjectRef]) -> None:
        """Wait for members to be built, but not for ever: a run that stops and can be resumed beats one that
        hangs silently."""
        started, missing = self.placement.started({i: (self.handles[i], ref) for i, ref in ready.items()})
        ray.get([ready[i] for i in started])  # a member that failed to build raises here
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
        scores = {i: self._score(results.get(i)) for i in self.handles}
        for i, score in scores.items():
            if not math.isfinite(score) and results.get(i) is not None:
                events[i] = "nan_reset"
        candidates = dict(scores)
        while True:
            if not any(math.isfinite(v) for v in candidates.values()):
                self.record.set_state("failed")
                raise RuntimeError(f"generation {epoch}: no member produced a finite loss and kept its weights")
            best, decisions = self._select(epoch, candidates)
            best_ref = self.handles[best].get_weights.remote()
            try:
                ray.get(best_ref)  # the best may have died since it reported: then the next best is broadcast
                break
            except RayError:
                self._restart(best)
                events[best], candidates[best] = "restarted", math.nan
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
        """The barrier: every member's epoch, restarting the dead once, dropping the late."""
        taus = self.record.taus()
        self.record.set_member_state("training", self.handles)
        pending = {self.handles[i].train_epoch.remote(epoch, taus[i]): i for i in self.handles}
        results: dict[int, Result | None] = {}
        events: dict[int, MemberEvent] = {}
        deadline = time.monotonic() + self.cfg.member_timeout_s
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            i = pending.pop(ready[0])
            try:
                results[i] = ray.get(ready[0])
            except RayError:
                if events.get(i) == "restarted":  # failed twice in one generation: leave it out
                    events[i], results[i] = "dropped", None
                    continue
                self._restart(i)
                events[i] = "restarted"
                pending[self.handles[i].train_epoch.remote(epoch, taus[i])] = i
        for i in pending.values():  # past the deadline: free the barrier, keep the member for next time
            self._restart(i)
            events[i], results[i] = "dropped", None
        return results, events

    def _select(self, epoch: int, scores: dict[int, float]) -> tuple[int, dict[int, MemberTau]]:
        """The best member and every member's next tau decision."""
        if self.cfg.baseline:
            return 1, {1: MemberTau(annealed_tau(epoch + 1, self.cfg.temperature), 0, False)}
        return next_taus(self.record.taus(), self.record.patience(), scores, self.cfg.temperature)

    def _broadcast(self, best: int, best_ref: ray.ObjectRef, events: dict[int, MemberEvent]) -> None:
        """The best weights went into the object store once (`best_ref`); every other member reads that one
        object. A member that dies meanwhile is restarted from it."""
        self.last_broadcast = best_ref
        calls = {i: h.set_weights.remote(best_ref, events.get(i) == "nan_reset") for i, h in self.handles.items() if i != best}
        for i, call in calls.items():
            try:
                ray.get(call)
            except RayError:
                self._restart(i)
                events[i] = "restarted"

    def _restart(self, i: int) -> None:
        self.record.set_member_state("restarting", [i])
        ray.kill(self.handles[i], no_restart=True)
        self.handles[i], ready = self._spawn(i)
        self._await_placed({i: ready})
        if self.last_broadcast is not None:
            ray.get(self.handles[i].set_weights.remote(self.last_broadcast))

    def _gather(self, best_ref: ray.ObjectRef) -> Gathered:
        """What a checkpoint needs (members are idle between generations)."""
        optimizers = ray.get([h.get_optimizer_state.remote() for h in self.handles.values()])
        return ray.get(best_ref), dict(zip(self.handles, optimizers))

    def _restore(self) -> None:
        weights, optimizers = self.record.restore()
        self.last_broadcast = ray.put(weights)
        ray.get([h.set_weights.remote(self.last_broadcast) for h in self.handles.values()])
        ray.get([h.set_optimizer_state.remote(optimizers[i]) for i, h in self.handles.items()])

    # --- the actor's interface (population.run, the status service, tests) ---
    def member_handles(self) -> dict[int, Any]:
        return dict(self.handles)

    def next_epoch(self) -> int:
        return self.record.epochs_done

    def finish(self, state: RunState = "done") -> None:
        self.record.finish(state)

    def coordinator_restarted(self, count: int) -> None:
        """This coordinator replaces one whose process died (the `count`-th time in this run's session)."""
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
