"""Jobs on the worker pool: robust-AE training and evaluations, several at once, one per worker.

Every job's folder gets a `queued` status before anything starts, so the status service sees the
whole plan; a job that fails is recorded as failed and the others go on; a worker that dies is
replaced in its slot.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from popvae.models.dataset_loading import ImageSet
from popvae.population.contract import JobStatus
from popvae.population.placement import Placement
from popvae.population.run_folder import RunFolder


def run_jobs(jobs: list[dict[str, Any]], train: ImageSet, test: ImageSet, workers: int, device: str = "auto",
             on_done: Any = None, placement_timeout_s: float = 300.0) -> dict[str, dict[str, Any]]:
    """Run `jobs` (dicts with id, kind, dir, ...) on `workers` workers; returns {id: {state, metrics|error}}.

    Workers that find no slot on the cluster within `placement_timeout_s` are given up; the jobs run on
    the others, and if none is left the remaining jobs fail with the reason instead of waiting for ever."""
    for job in jobs:
        RunFolder(job["dir"]).write_job_status(JobStatus.of_job(job))
    holder = DataHolder.remote((train.images, train.labels), (test.images, test.labels))  # starts beside the workers
    try:
        placement = Placement(workers, device, placement_timeout_s)
        slots = _started(placement, {k: placement.spawn(k) for k in range(workers)})
        return _run_queue(jobs, slots, placement, *ray.get(holder.refs.remote()), train.classes, on_done,
                          placement_timeout_s)
    finally:
        with contextlib.suppress(Exception):  # after a process-group SIGTERM Ray is gone: the stop goes on
            ray.kill(holder)


@ray.remote(num_cpus=0, max_restarts=0)
class DataHolder:
    """Puts the splits into the object store once (every worker maps the same objects), so that they are this
    actor's and the driver owns no stored object: after a SIGTERM to the whole process group, an owner's attempt to
    recover its lost objects ends the driver with exit 1 from inside Ray, before it can stop as interrupted (as the
    population's coordinator does for its images, docs/PACKING.md §5)."""

    def __init__(self, train: tuple[Any, Any], test: tuple[Any, Any]) -> None:
        self._refs = [ray.put(train), ray.put(test)]

    def refs(self) -> list[ray.ObjectRef]:
        return self._refs


def _run_queue(jobs: list[dict[str, Any]], slots: dict[int, Any], placement: Placement, train_ref: ray.ObjectRef,
               test_ref: ray.ObjectRef, classes: tuple[str, ...], on_done: Any,
               placement_timeout_s: float) -> dict[str, dict[str, Any]]:
    """Each idle worker takes the next job; a worker that dies is replaced in its slot."""
    queue, running, results = list(jobs), {}, {}
    idle = list(slots)
    while queue or running:
        while idle and queue:
            slot, job = idle.pop(0), queue.pop(0)
            running[slots[slot].run_job.remote(job, train_ref, test_ref, classes)] = (slot, job)
        if not running:  # jobs left but no worker: every slot was lost and none could be replaced
            why = f"no worker found a slot on the cluster within {placement_timeout_s:g} s (each needs {placement.describe()})"
            for job in queue:
                _fail(job, why, results, on_done)
            break
        done, _ = ray.wait(list(running), num_returns=1)
        slot, job = running.pop(done[0])
        try:
            results[job["id"]] = {"state": "done", "metrics": ray.get(done[0])}
        except RayTaskError as err:  # the job raised; its status.json already says failed
            cause = err.cause if err.cause is not None else err
            results[job["id"]] = {"state": "failed", "error": f"{type(cause).__name__}: {cause}"}
        except RayActorError as err:  # the worker died under the job: record it, replace the worker
            _fail(job, f"worker died: {err}".splitlines()[0], results, None)
            slots.pop(slot)
            slots.update(_started(placement, {slot: placement.spawn(slot)}))
        if on_done is not None:
            on_done(job, results[job["id"]])
        if slot in slots:
            idle.append(slot)
    for handle in slots.values():
        ray.kill(handle)
    return results


def _started(placement: Placement, workers: dict[int, Any]) -> dict[int, Any]:
    """The workers that started within the placement timeout (the others are given up)."""
    return placement.started({k: (worker, worker.node_id.remote()) for k, worker in workers.items()})[0]


def _fail(job: dict[str, Any], error: str, results: dict[str, dict[str, Any]], on_done: Any) -> None:
    results[job["id"]] = {"state": "failed", "error": error}
    RunFolder(job["dir"]).write_job_status(JobStatus.of_job(job).update(state="failed", error=error))
    if on_done is not None:
        on_done(job, results[job["id"]])


def run_robust(plan: dict[str, Any], train: ImageSet, test: ImageSet, *, workers: int | None = None,
               address: str | None = None, num_cpus: int | None = None, say: Any = None,
               on_done: Any = None) -> dict[str, dict[str, Any]]:
    """A robust plan (`plans.plan_robust`) run: join (or start) Ray, then hold RUN_DIR's lock while the jobs run (a
    job whose driver died reads as interrupted), write RUN_DIR/config.json if it has none, and run the jobs on
    `workers` workers (default one per job, at most the cluster's CPUs; never more than the jobs). Nothing is
    written when Ray cannot be joined (ClusterUnreachable) or the folder is in use (RunLocked)."""
    from popvae.population.driver import ensure_ray
    from popvae.population.folder_lock import holding

    jobs, run_dir = plan["jobs"], Path(plan["run_dir"])
    folder = RunFolder(run_dir)
    ensure_ray(address, num_cpus)
    with holding(run_dir):
        if not folder.config_path.exists():
            folder.write_config(plan["config"])
        count = min(len(jobs), workers or max(1, int(ray.cluster_resources().get("CPU", 1))))
        if say is not None:
            say(f"{len(jobs)} jobs on {count} workers; status in {folder.job('<method>').status_path}")
        return run_jobs(jobs, train, test, count, on_done=on_done)
