"""Where the workers go: a GPU bundle each (a placement group), or an equal share of the CPUs spread across nodes,
and which of them found a slot in time (docs/PACKING.md)."""

from __future__ import annotations

from typing import Any

import ray

from popvae.population.worker import RemoteWorker


def cpu_share(cluster_cpus: float, largest_node_cpus: float, n: int) -> float:
    """CPUs for each of n workers: an equal share of the cluster, but never more than one node holds (an
    actor cannot span nodes, so a larger request would wait for ever)."""
    return max(min(cluster_cpus / n, largest_node_cpus), 0.01)



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
