"""The worker pool: one Worker actor per device (a GPU bundle, or a share of the CPUs).

A worker either hosts a pack of population members (`population.pack`: k members under vmap or in a loop, as the
run's `pack_mode` says, docs/PACKING.md §2; a pack of 1 is one member per process) or runs one job (robust-AE
training, an evaluation); Ray runs an actor's calls one at a time, so it never does both at once. Data arrive as
top-level ObjectRef arguments, so Ray hands every worker on a node the same object-store copy, zero-copy; a pack then
holds the images on its device once.
Members are addressed by their 1-based index wherever they live.

torch is imported inside the worker's methods, never by this module: the coordinator imports it to place workers, and
its process starts a second sooner without torch (start-up is on every run's critical path; it loads torch later, at
its first checkpoint: docs/ARCHITECTURE.md §1).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from popvae.population.config import RunConfig

if TYPE_CHECKING:
    from popvae.population.pack import Pack


class Worker:
    def __init__(self, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))  # Ray's CPU counts are logical: match torch to them
        self.threads = max(1, threads)
        self.pack: Pack | None = None

    def node_id(self) -> str:
        """Answers once the worker is placed and started (and says where)."""
        return ray.get_runtime_context().get_node_id()

    def pid(self) -> int:
        return os.getpid()

    # --- hosting a pack of population members ---
    def host_pack(self, indices: list[int], config: RunConfig, train_images: np.ndarray, val_images: np.ndarray) -> None:
        from popvae.population.pack import make_pack

        self.pack = make_pack(indices, config, train_images, val_images, self.threads)

    def _p(self) -> Pack:
        if self.pack is None:
            raise RuntimeError("this worker hosts no members")
        return self.pack

    def train_epoch(self, generation: int, taus: dict[int, float]) -> dict[int, dict[str, Any]]:
        """One epoch of every member in the pack: {member: its result}."""
        return self._p().train_epoch(generation, taus)

    def get_weights(self, index: int) -> dict[str, np.ndarray]:
        return self._p().get_weights(index)

    def set_weights(self, weights: dict[str, np.ndarray], members: list[int] | None = None,
                    reset: list[int] = ()) -> None:  # type: ignore[assignment]
        """Load `weights` (one object-store object, read once) into `members` (default: all); `reset` also clears
        those members' Adam state."""
        pack = self._p()
        for i in pack.indices if members is None else members:
            pack.set_weights(i, weights, i in reset)

    def copy_slot(self, source: int, members: list[int], reset: list[int] = ()) -> None:  # type: ignore[assignment]
        """The broadcast inside the pack that holds the best: a slot copy, no object-store read."""
        self._p().copy_slot(source, members, reset)

    def get_optimizer_state(self) -> dict[int, dict[str, Any]]:
        pack = self._p()
        return {i: pack.get_optimizer_state(i) for i in pack.indices}

    def set_optimizer_state(self, states: dict[int, dict[str, Any]]) -> None:
        for i, state in states.items():
            self._p().set_optimizer_state(i, state)

    # --- running a job ---
    def run_job(self, job: dict[str, Any], train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                classes: tuple[str, ...]) -> dict[str, Any]:
        """`job["kind"]` is "robust" (train one method into job["dir"], then run the evaluation job it may carry as
        job["evaluation"] on the model it trained, in the same process) or "evaluation"."""
        import torch

        from popvae.models.data import ImageSet

        self.pack = None  # a worker runs members or a job, never both
        train_set, test_set = ImageSet(*train, classes), ImageSet(*test, classes)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if job["kind"] == "robust":
            from popvae.population.robust import train_job

            metrics = train_job(job["method"], train_set, test_set, Path(job["dir"]), job["epochs"], job["batch_size"],
                                job["steps_per_epoch"], job["seed"], device, precision=job.get("precision", "fp32"),
                                overrides=job.get("overrides"), schedule=job.get("schedule"))
            if job.get("evaluation") is None:
                return metrics
            job = job["evaluation"]
        from popvae.population.evaluation import run_evaluation_job

        return run_evaluation_job(job, train_set, test_set, device)


RemoteWorker = ray.remote(max_restarts=0, max_task_retries=0)(Worker)


def cpu_share(cluster_cpus: float, largest_node_cpus: float, n: int) -> float:
    """CPUs for each of n workers: an equal share of the cluster, but never more than one node holds (an
    actor cannot span nodes, so a larger request would wait for ever)."""
    return max(min(cluster_cpus / n, largest_node_cpus), 0.01)


def plan_packs(members: list[int], pack_size: str | int, gpus: float, cpu_nodes: int, device: str = "auto") -> list[list[int]]:
    """Which members share a worker: "auto" = one pack per GPU when the cluster has GPUs (and device allows them),
    otherwise one per CPU node; K = at most K per pack. Packs are contiguous runs of members, sizes within one."""
    if pack_size == "auto":
        count = int(gpus) if device != "cpu" and gpus >= 1 else max(cpu_nodes, 1)
    else:
        count = math.ceil(len(members) / int(pack_size))
    count = max(1, min(count, len(members)))
    return [[int(i) for i in chunk] for chunk in np.array_split(np.asarray(members), count)]


class Placement:
    """Where n workers go: one GPU bundle each (a placement group) when the cluster has a GPU per worker (or, with
    `share_gpus`, any GPU: then the workers split the GPUs, so n packs fit on fewer devices), otherwise an equal share
    of the cluster's CPUs, spread across nodes, with torch threads to match."""

    def __init__(self, n: int, device: str = "auto", timeout_s: float = 300.0, share_gpus: bool = False) -> None:
        self.n = n
        self.timeout_s = timeout_s
        self.group = None
        self.cpus = 0.0
        self.gpus = 1.0
        available = ray.cluster_resources().get("GPU", 0) if device != "cpu" else 0
        if available >= n or (share_gpus and available >= 1):
            from ray.util.placement_group import placement_group

            self.gpus = min(1.0, available / n)
            self.group = placement_group([{"GPU": self.gpus, "CPU": 1}] * n, strategy="PACK")
            try:
                ray.get(self.group.ready(), timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                ray.util.remove_placement_group(self.group)
                raise RuntimeError(f"no room for {n} bundles of {self.gpus:g} GPU + 1 CPU within {timeout_s:g} s") from None

    def describe(self) -> str:
        """What one worker asks the cluster for."""
        return f"{self.gpus:g} GPU and 1 CPU" if self.group is not None else f"{self.cpus:.2f} CPUs"

    def started(self, pending: dict[int, tuple[Any, ray.ObjectRef]]) -> tuple[dict[int, Any], list[int]]:
        """Of `pending` ({key: (worker, its first call)}), the workers whose call finished within the timeout,
        and the keys of those that found no slot: those are killed, so that they never start later. Waiting for
        ever would hang a run on a cluster that lost a node."""
        keys = {ref: k for k, (_, ref) in pending.items()}
        ready, waiting = ray.wait(list(keys), num_returns=len(keys), timeout=self.timeout_s)
        for ref in waiting:
            ray.kill(pending[keys[ref]][0], no_restart=True)
        return {keys[ref]: pending[keys[ref]][0] for ref in ready}, sorted(keys[ref] for ref in waiting)

    def spawn(self, slot: int) -> Any:
        """A new worker for slot 0..n-1 (a restarted worker takes its predecessor's slot)."""
        if self.group is not None:
            from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

            strategy = PlacementGroupSchedulingStrategy(self.group, placement_group_bundle_index=slot)
            return RemoteWorker.options(num_cpus=1, num_gpus=self.gpus, scheduling_strategy=strategy).remote(1)
        nodes = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]]
        self.cpus = cpu_share(ray.cluster_resources().get("CPU", 1.0), max(nodes, default=1.0), self.n)
        return RemoteWorker.options(num_cpus=self.cpus, scheduling_strategy="SPREAD").remote(max(int(self.cpus), 1))
