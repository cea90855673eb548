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
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import ray

from popvae.population.config import RunConfig

if TYPE_CHECKING:
    from popvae.population.pack import Pack

PROGRESS_EVERY_S = 1.0  # how often a training pack tells the coordinator its steps done (a call it does not wait for)


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

    def train_epoch(self, epoch: int, taus: dict[int, float], progress_to: Any = None) -> dict[int, dict[str, Any]]:
        """One epoch of every member in the pack: {member: its result}. With `progress_to` (the coordinator's handle),
        the steps done are sent to its `progress` about every PROGRESS_EVERY_S, without waiting for an answer."""
        pack = self._p()
        if progress_to is None:
            return pack.train_epoch(epoch, taus)
        last = [-math.inf]

        def report(t: int, steps: int) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                progress_to.progress.remote(epoch, pack.indices, t, steps)

        return pack.train_epoch(epoch, taus, report)

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

        from popvae.models.dataset_loading import ImageSet

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
