"""The runs the status service knows: folders under its root, plus runs whose coordinator is alive.

This is where the live-or-folder decision is made: the coordinator's snapshot is preferred, and
the folder's `status.json` is used (with a note saying why) whenever the coordinator cannot answer.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from popvae.cluster.api_models import JobList, Population, RunSummary, Source
from popvae.cluster.live_status import LiveCoordinators
from popvae.cluster.run_files import run_kind
from popvae.cluster.run_store import NotFound, RunStore, Unreadable
from popvae.population.contract import HistoryRow, JobStatus, RunStatus
from popvae.population.run_folder import RunFolder, jobs_state


class Runs:
    """The runs the service knows: folders under the root, plus runs whose coordinator is alive."""

    def __init__(self, store: RunStore, live: LiveCoordinators) -> None:
        self.store, self.live = store, live
        self._memo: dict[str, tuple[object, str | None, bytes]] = {}

    def resolve(self, run: str | None, population: bool = False) -> str:
        """`run` if it exists; else the newest run (with `population`: the newest that has a population status)."""
        if run is not None:
            if run in self.live.run_ids():
                return run
            self.store.run_dir(run)
            return run
        newest = self.store.run_ids(population_only=population) or sorted(self.live.run_ids())
        if not newest:
            raise NotFound("no runs under the runs root")
        if population:  # one run with a damaged status.json must not hide every other run
            return next((run_id for run_id in newest if self._readable(run_id)), newest[0])
        return newest[0]

    def _readable(self, run_id: str) -> bool:
        try:
            self.store.status(run_id)
            return True
        except (NotFound, Unreadable):
            return run_id in self.live.run_ids()

    def has_folder(self, run_id: str) -> bool:
        try:
            self.store.run_dir(run_id)
            return True
        except NotFound:
            return False

    def summaries(self) -> list[RunSummary]:
        live = self.live.run_ids()
        folders = self.store.run_ids()
        out = []
        for run_id in folders + sorted(live - set(folders)):
            try:
                status = self.store.status(run_id) if run_id in folders else None
            except (NotFound, Unreadable):
                status = None
            fields = status.model_dump(include={"state", "epoch", "epochs", "updated_at"}) if status else {}
            try:
                kind = run_kind(self.store.root / run_id) if run_id in folders else "population"
            except Unreadable:  # a config.json that links out of its folder: listed, never read
                kind = None
            if status is None and kind in ("robust", "evaluation"):  # its state is its jobs' (no status.json)
                fields["state"] = jobs_state(j.state for j in self.jobs(run_id).jobs)
            out.append(RunSummary(run_id=run_id, kind=kind, live=run_id in live, has_folder=run_id in folders, **fields))
        return out

    def population_json(self, run_id: str) -> bytes:
        """The /population body. It is polled far more often than it changes, so it is validated and serialised
        once per snapshot (a new live answer or a rewritten status.json) and then served as bytes."""
        source, snapshot, note = self._snapshot(run_id)
        hit = self._memo.get(run_id)
        if hit is not None and hit[0] is snapshot and hit[1] == note:
            return hit[2]
        body = self._population(run_id, source, snapshot, note).model_dump_json().encode()
        self._memo[run_id] = (snapshot, note, body)
        return body

    def _snapshot(self, run_id: str) -> tuple[Source, dict[str, Any] | RunStatus, str | None]:
        """The live coordinator's raw status when it answers, else the folder's (parsed, cached) status.json."""
        if run_id in self.live.run_ids():
            raw, note = self.live.status(run_id)
            if raw is not None:
                return "live", raw, None
        else:
            note = self.live.unavailable_reason() or f"no live coordinator for run {run_id!r}"
        if not self.has_folder(run_id):
            raise Unreadable(f"run {run_id!r} has no folder under the runs root and its coordinator did not answer: {note}")
        status = self.store.status(run_id)
        if status.state == "interrupted":
            note = f"the run's driver is gone (its folder lock is free); it ended after epoch {status.epoch}: {note}"
        return "run_folder", status, note

    def _population(self, run_id: str, source: Source, snapshot: dict[str, Any] | RunStatus, note: str | None) -> Population:
        try:
            status = RunStatus.model_validate(snapshot)
        except ValidationError:  # only a live answer can fail here: status.json was validated when it was read
            source, note = "run_folder", "the live coordinator's status did not match the schema"
            status = self.store.status(run_id)
        return Population(**status.model_dump(), source=source, note=note)

    def history(self, run_id: str, member: int | None, epoch_min: int | None, epoch_max: int | None) -> list[HistoryRow]:
        rows = self.store.history(run_id)
        has_population = bool(rows) or run_id in self.live.run_ids() or RunFolder(self.store.run_dir(run_id)).status_path.exists()
        if not has_population:  # e.g. a folder of robust jobs: say so rather than answer an empty page
            raise NotFound(f"run {run_id!r} has no population history (history.parquet), or not yet")
        if member is not None and all(r.member != member for r in rows) and not self._is_member(run_id, member):
            raise NotFound(f"member {member} not found in run {run_id!r}")
        return [
            r
            for r in rows
            if (member is None or r.member == member)
            and (epoch_min is None or r.epoch >= epoch_min)
            and (epoch_max is None or r.epoch <= epoch_max)
        ]

    def _is_member(self, run_id: str, member: int) -> bool:
        try:
            return any(m.index == member for m in self.store.status(run_id).members)
        except (NotFound, Unreadable):
            return False

    def jobs(self, run_id: str) -> JobList:
        if not self.has_folder(run_id):
            return JobList(run_id=run_id, jobs=[])
        jobs, unreadable = [], []
        for job_id in self.store.job_ids(run_id):
            try:
                jobs.append(self.store.job(run_id, job_id))
            except (NotFound, Unreadable):
                unreadable.append(job_id)
        return JobList(run_id=run_id, jobs=jobs, unreadable=unreadable)

    def job(self, run: str | None, job_id: str) -> JobStatus:
        """The job in `run`, or when no run is named, in the newest run that has it."""
        candidates = [self.resolve(run)] if run is not None else self.store.run_ids()
        for run_id in candidates:
            try:
                return self.store.job(run_id, job_id)
            except NotFound:
                continue
        raise NotFound(f"job {job_id!r} not found" + (f" in run {run!r}" if run else ""))
