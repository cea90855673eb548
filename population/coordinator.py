"""The coordinator: a named Ray actor that runs the population's generations.

Per generation (DESIGN §4): every member trains one epoch; losses are gathered behind a barrier
with a timeout; the best is selected and every tau advanced (`population.temperature`); the best
weights are fetched once into the object store and that one ObjectRef is handed, as a top-level
argument, to every other member; history, lineage, status and a checkpoint are written.

Faults never stop the population: a member that dies is restarted and re-seeded from the last
broadcast weights, then retried once; one that exceeds the timeout is killed, restarted and
dropped from this generation; one whose loss is not finite is reset from the best and flagged.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import ray
import torch
from ray.exceptions import RayError

from popvae.models.checkpoint import atomic_torch_save, save_model
from popvae.models.registry import build
from popvae.population import rundir
from popvae.population.config import RunConfig
from popvae.population.temperature import annealed_tau, next_taus, strategy_for
from popvae.population.worker import Placement

NAMESPACE = "popvae"
LOSS_PARTS = ("total", "reconstruction", "kl_z1", "kl_z2")


# What checkpoints/latest.pt holds: enough to resume every member exactly.
CHECKPOINT_KEYS = frozenset({"epochs_done", "taus", "patience", "flags", "weights", "optimizers"})


def coordinator_name(run_id: str) -> str:
    return f"coordinator:{run_id}"


class CoordinatorState:
    def __init__(self, config: RunConfig, run_dir: str, data_refs: list[ray.ObjectRef], resume: bool = False) -> None:
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.run_id = self.run_dir.name
        self.train_ref, self.val_ref = data_refs
        n = config.members
        self.strategies = {i: "anneal" if config.baseline else strategy_for(i) for i in range(1, n + 1)}
        self.taus = {i: config.temperature.tau0 for i in self.strategies}
        self.patience = {i: 0 for i in self.strategies}
        self.state = {i: "idle" for i in self.strategies}
        self.flags: dict[int, list[str]] = {i: [] for i in self.strategies}
        self.last: dict[int, dict[str, Any]] = {}
        self.rows: list[dict[str, Any]] = []
        self.lineage: list[dict[str, Any]] = []
        self.epochs_done = 0
        self.best: int | None = None
        self.generation_seconds: float | None = None
        self.last_broadcast: ray.ObjectRef | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._write: Future[None] | None = None
        self.run_state = "running"
        self.placement = Placement(n, config.device, config.placement_timeout_s)
        spawned = {i: self._spawn(i) for i in self.strategies}
        self.members = {i: worker for i, (worker, _) in spawned.items()}
        self._await_placed({i: ready for i, (_, ready) in spawned.items()})
        if resume:
            self._restore()
        self._write_status()

    def _spawn(self, i: int) -> tuple[Any, ray.ObjectRef]:
        """A worker for member i, and the ref that resolves once the member is built."""
        worker = self.placement.spawn(i - 1)
        return worker, worker.host_member.remote(i, self.cfg, self.train_ref, self.val_ref)

    def _await_placed(self, ready: dict[int, ray.ObjectRef]) -> None:
        """Wait for members to be built, but not for ever: a run that stops and can be resumed beats one that
        hangs silently."""
        started, missing = self.placement.started({i: (self.members[i], ref) for i, ref in ready.items()})
        ray.get([ready[i] for i in started])  # a member that failed to build raises here
        if missing:
            self.run_state = "failed"
            self._write_status()
            raise RuntimeError(
                f"members {missing} found no slot on the cluster within {self.placement.timeout_s:g} s "
                f"(each needs {self.placement.describe()}; free now: {_devices(ray.available_resources())})"
            )

    def member_handles(self) -> dict[int, Any]:
        return dict(self.members)

    # --- one generation ---
    def run_generation(self, epoch: int) -> dict[str, Any]:
        started = time.perf_counter()
        taus_before = dict(self.taus)
        results, events = self._train_all(epoch)
        trained = time.perf_counter()

        def score(i: int) -> float:
            r = results.get(i)
            if r is None:
                return math.nan
            return r["val_loss"] if self.cfg.select_on == "val" else r["loss"]["total"]

        losses = {i: score(i) for i in self.members}
        for i, loss in losses.items():
            if not math.isfinite(loss) and results.get(i) is not None:
                events[i] = "nan_reset"
        candidates = dict(losses)
        while True:
            if not any(math.isfinite(v) for v in candidates.values()):
                self.run_state = "failed"
                self._write_status()
                raise RuntimeError(f"generation {epoch}: no member produced a finite loss and kept its weights")
            best, decided = self._select(epoch, candidates)
            best_ref = self.members[best].get_weights.remote()
            try:
                ray.get(best_ref)  # the best may have died since it reported: then the next best is broadcast
                break
            except RayError:
                self._restart(best)
                events[best], candidates[best] = "restarted", math.nan
        self._broadcast(best, best_ref, events)
        others = [i for i in self.members if i != best]
        for i, (tau, patience, _) in decided.items():
            self.taus[i], self.patience[i] = tau, patience
        coordinated = time.perf_counter()

        self.best, self.epochs_done = best, epoch + 1
        self.generation_seconds = coordinated - started
        for i in self.members:
            self.state[i] = "failed" if events.get(i) == "dropped" else "idle"
            if events.get(i):
                self.flags[i].append(f"{events[i]}@{epoch}")
            if results.get(i):
                self.last[i] = results[i]
            self.rows.append(self._row(epoch, i, results.get(i), taus_before[i], losses[i], best, events.get(i, "")))
        self.lineage.append({
            "epoch": epoch, "best": best, "best_loss": losses[best],
            "received": {str(i): best for i in others}, "tau_before": taus_before, "tau_after": dict(self.taus),
            "feedback": [i for i, d in decided.items() if d[2]], "events": {str(k): v for k, v in events.items()},
            "seconds": {"train": trained - started, "coordination": coordinated - trained},
        })
        # History first, checkpoint second: a crash in between only makes a resume redo this epoch.
        rundir.write_rows(self.run_dir / "history.parquet", self.rows)
        rundir.write_json(self.run_dir / "lineage.json", self.lineage)
        if epoch + 1 == self.cfg.epochs or (epoch + 1) % self.cfg.checkpoint_every == 0:
            self._checkpoint(best_ref, best, taus_before[best], losses[best])
        self.lineage[-1]["seconds"]["checkpoint"] = time.perf_counter() - coordinated
        rundir.write_json(self.run_dir / "lineage.json", self.lineage)
        self._write_status()
        return self.lineage[-1]

    def _train_all(self, epoch: int) -> tuple[dict[int, dict[str, Any] | None], dict[int, str]]:
        """The barrier: every member's epoch, restarting the dead once, dropping the late."""
        for i in self.members:
            self.state[i] = "training"
        self._write_status()
        pending = {self.members[i].train_epoch.remote(epoch, self.taus[i]): i for i in self.members}
        results: dict[int, dict[str, Any] | None] = {}
        events: dict[int, str] = {}
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
                pending[self.members[i].train_epoch.remote(epoch, self.taus[i])] = i
        for i in pending.values():  # past the deadline: free the barrier, keep the member for next time
            self._restart(i)
            events[i], results[i] = "dropped", None
        return results, events

    def _select(self, epoch: int, losses: dict[int, float]) -> tuple[int, dict[int, tuple[float, int, bool]]]:
        """The best member and every member's (next tau, patience, feedback applied)."""
        if self.cfg.baseline:
            return 1, {1: (annealed_tau(epoch + 1, self.cfg.temperature), 0, False)}
        best, moves = next_taus(self.taus, self.patience, losses, self.cfg.temperature)
        return best, {i: (m.tau, m.patience, m.feedback_applied) for i, m in moves.items()}

    def _broadcast(self, best: int, best_ref: ray.ObjectRef, events: dict[int, str]) -> None:
        """The best weights went into the object store once (`best_ref`); every other member reads that one
        object. A member that dies meanwhile is restarted from it."""
        self.last_broadcast = best_ref
        calls = {i: self.members[i].set_weights.remote(best_ref, events.get(i) == "nan_reset") for i in self.members if i != best}
        for i, call in calls.items():
            try:
                ray.get(call)
            except RayError:
                self._restart(i)
                events[i] = "restarted"

    def _restart(self, i: int) -> None:
        self.state[i] = "restarting"
        self._write_status()
        ray.kill(self.members[i], no_restart=True)
        self.members[i], ready = self._spawn(i)
        self._await_placed({i: ready})
        if self.last_broadcast is not None:
            ray.get(self.members[i].set_weights.remote(self.last_broadcast))

    def _row(self, epoch: int, i: int, result: dict[str, Any] | None, tau: float, score: float, best: int,
             event: str) -> dict[str, Any]:
        loss = (result or {}).get("loss", {})
        return {
            "epoch": epoch, "member": i, "strategy": self.strategies[i], "tau": tau, "tau_next": self.taus[i],
            **{f"loss_{k}": float(loss.get(k, math.nan)) for k in LOSS_PARTS},
            "val_loss": float((result or {}).get("val_loss", math.nan)), "score": float(score),
            "patience": self.patience[i], "is_best": i == best, "seconds": float((result or {}).get("seconds", math.nan)),
            "event": event, "node_id": (result or {}).get("node_id", ""),
        }

    # --- persistence ---
    def _checkpoint(self, best_ref: ray.ObjectRef, best: int, best_tau: float, best_loss: float) -> None:
        """Gather the state now (members are idle between generations), write it in the background: with fast
        devices, serialising every optimizer state would otherwise hold up the next generation."""
        weights = {k: torch.from_numpy(v.copy()) for k, v in ray.get(best_ref).items()}
        optimizers = dict(zip(self.members, ray.get([m.get_optimizer_state.remote() for m in self.members.values()])))
        state = {"epochs_done": self.epochs_done, "taus": dict(self.taus), "patience": dict(self.patience),
                 "flags": {i: list(f) for i, f in self.flags.items()}, "weights": weights, "optimizers": optimizers}
        meta = {"tau": best_tau, "member": best, "epoch": self.epochs_done - 1, "score": best_loss,
                "select_on": self.cfg.select_on, "run_id": self.run_id, "baseline": self.cfg.baseline}
        self.wait_for_writes()  # one write at a time, in order
        self._write = self._writer.submit(self._write_checkpoint, state, meta)

    def _write_checkpoint(self, state: dict[str, Any], meta: dict[str, Any]) -> None:
        atomic_torch_save(state, self.run_dir / "checkpoints" / "latest.pt")
        model = build("gsvae", self.cfg.model)
        model.load_state_dict(state["weights"])
        model.tau = meta["tau"]
        save_model(self.run_dir / "best.pt", model, meta)

    def wait_for_writes(self) -> None:
        """Block until the last checkpoint is on disk; re-raises a write that failed."""
        if self._write is not None:
            write, self._write = self._write, None
            write.result()

    def _restore(self) -> None:
        ckpt = torch.load(self.run_dir / "checkpoints" / "latest.pt", weights_only=True)
        self.epochs_done = ckpt["epochs_done"]
        self.taus, self.patience, self.flags = dict(ckpt["taus"]), dict(ckpt["patience"]), dict(ckpt["flags"])
        self.rows = [r for r in rundir.read_rows(self.run_dir / "history.parquet") if r["epoch"] < self.epochs_done]
        lineage = rundir.read_json(self.run_dir / "lineage.json") if (self.run_dir / "lineage.json").exists() else []
        self.lineage = [g for g in lineage if g["epoch"] < self.epochs_done]
        self.best = self.lineage[-1]["best"] if self.lineage else None
        self.last_broadcast = ray.put({k: v.numpy() for k, v in ckpt["weights"].items()})
        ray.get([m.set_weights.remote(self.last_broadcast) for m in self.members.values()])
        ray.get([self.members[i].set_optimizer_state.remote(ckpt["optimizers"][i]) for i in self.members])

    def next_epoch(self) -> int:
        return self.epochs_done

    def finish(self, state: str = "done") -> None:
        self.wait_for_writes()
        self.run_state = state
        for i in self.members:
            self.state[i] = "idle" if self.state[i] != "failed" else "failed"
        self._write_status()

    def status(self) -> dict[str, Any]:
        return _finite_or_none({
            "run_id": self.run_id, "state": self.run_state, "epoch": self.epochs_done, "epochs": self.cfg.epochs,
            "generation_seconds": self.generation_seconds, "best_member": self.best, "updated_at": rundir.now_iso(),
            "members": [
                {
                    "index": i, "strategy": self.strategies[i], "tau": self.taus[i],
                    "loss": ({k: self.last[i]["loss"].get(k) for k in LOSS_PARTS} if i in self.last else None),
                    "val_loss": self.last[i]["val_loss"] if i in self.last else None,
                    "patience": self.patience[i], "state": self.state[i],
                    "node_id": self.last[i]["node_id"] if i in self.last else None, "flags": list(self.flags[i]),
                }
                for i in self.members
            ],
        })

    def _write_status(self) -> None:
        rundir.write_json(self.run_dir / "status.json", self.status())


def _devices(resources: dict[str, float]) -> str:
    return ", ".join(f"{resources.get(k, 0):g} {k}" for k in ("CPU", "GPU"))


def _finite_or_none(obj: Any) -> Any:
    """JSON has no NaN: write null instead, so every reader can parse the status."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_none(v) for v in obj]
    return obj


# Threaded, so `status()` answers while a generation is running.
Coordinator = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)(CoordinatorState)
