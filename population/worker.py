"""The worker pool: one Worker actor per device (a GPU bundle, or a share of the CPUs).

A worker either hosts one population member or runs one job (robust-AE training, an evaluation);
Ray runs an actor's calls one at a time, so it never does both at once. Data arrive as top-level
ObjectRef arguments, so Ray hands every worker on a node the same object-store copy, zero-copy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from popvae.models.data import ImageSet
from popvae.population.config import RunConfig
from popvae.population.member import MemberState


class Worker:
    def __init__(self, threads: int) -> None:
        torch.set_num_threads(max(1, threads))  # Ray's CPU counts are logical: match torch to them
        self.threads = max(1, threads)
        self.member: MemberState | None = None

    def node_id(self) -> str:
        """Answers once the worker is placed and started (and says where)."""
        return ray.get_runtime_context().get_node_id()

    # --- hosting a population member ---
    def host_member(self, index: int, config: RunConfig, train_images: np.ndarray, val_images: np.ndarray) -> None:
        self.member = MemberState(index, config, train_images, val_images, self.threads)

    def _m(self) -> MemberState:
        if self.member is None:
            raise RuntimeError("this worker hosts no member")
        return self.member

    def train_epoch(self, generation: int, tau: float) -> dict[str, Any]:
        return self._m().train_epoch(generation, tau)

    def get_weights(self) -> dict[str, np.ndarray]:
        return self._m().get_weights()

    def set_weights(self, weights: dict[str, np.ndarray], reset_optimizer: bool = False) -> None:
        self._m().set_weights(weights, reset_optimizer)

    def get_optimizer_state(self) -> dict[str, Any]:
        return self._m().get_optimizer_state()

    def set_optimizer_state(self, state: dict[str, Any]) -> None:
        self._m().set_optimizer_state(state)

    # --- running a job ---
    def run_job(self, job: dict[str, Any], train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                classes: tuple[str, ...]) -> dict[str, Any]:
        """`job["kind"]` is "robust" (train one method into job["dir"]) or "evaluation"."""
        self.member = None  # a worker runs a member or a job, never both
        train_set, test_set = ImageSet(*train, classes), ImageSet(*test, classes)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if job["kind"] == "robust":
            from popvae.population.robust import train_job

            return train_job(job["method"], train_set, test_set, Path(job["dir"]), job["epochs"], job["batch_size"],
                             job["steps_per_epoch"], job["seed"], device)
        from popvae.population.evaluation import run_evaluation_job

        return run_evaluation_job(job, train_set, test_set, device)


RemoteWorker = ray.remote(max_restarts=0, max_task_retries=0)(Worker)


def cpu_share(cluster_cpus: float, largest_node_cpus: float, n: int) -> float:
    """CPUs for each of n workers: an equal share of the cluster, but never more than one node holds (an
    actor cannot span nodes, so a larger request would wait for ever)."""
    return max(min(cluster_cpus / n, largest_node_cpus), 0.01)


class Placement:
    """Where n workers go: one GPU bundle each (a placement group) when the cluster has a GPU per
    worker, otherwise an equal share of the cluster's CPUs, spread across nodes."""

    def __init__(self, n: int, device: str = "auto", timeout_s: float = 300.0) -> None:
        self.n = n
        self.timeout_s = timeout_s
        self.group = None
        self.cpus = 0.0
        if device != "cpu" and ray.cluster_resources().get("GPU", 0) >= n:
            from ray.util.placement_group import placement_group

            self.group = placement_group([{"GPU": 1, "CPU": 1}] * n, strategy="PACK")
            try:
                ray.get(self.group.ready(), timeout=timeout_s)
            except ray.exceptions.GetTimeoutError:
                ray.util.remove_placement_group(self.group)
                raise RuntimeError(f"no room for {n} bundles of 1 GPU + 1 CPU within {timeout_s:g} s") from None

    def describe(self) -> str:
        """What one worker asks the cluster for."""
        return "1 GPU and 1 CPU" if self.group is not None else f"{self.cpus:.2f} CPUs"

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
            return RemoteWorker.options(num_cpus=1, num_gpus=1, scheduling_strategy=strategy).remote(1)
        nodes = [node["Resources"].get("CPU", 0.0) for node in ray.nodes() if node["Alive"]]
        self.cpus = cpu_share(ray.cluster_resources().get("CPU", 1.0), max(nodes, default=1.0), self.n)
        return RemoteWorker.options(num_cpus=self.cpus, scheduling_strategy="SPREAD").remote(max(int(self.cpus), 1))
