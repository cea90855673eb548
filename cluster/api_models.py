"""Request and response models of the status service that are the API's own: queries, the population answer
(a run status plus where it came from), lists and pages, health and errors.

What a run folder holds (RunStatus, MemberStatus, HistoryRow, JobStatus) is `popvae.population.contract`:
the same models validate what is read from disk or from the live coordinator, so a malformed
snapshot is caught on the way in (and answered with a 503) rather than on the way out (a 500).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from popvae.population.contract import HistoryRow, JobStatus, LineageEntry, RunKind, RunState, RunStatus

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

Source = Literal["live", "run_folder"]
RayState = Literal["disabled", "connecting", "connected", "unreachable"]


class RunQuery(BaseModel):
    """Query parameters; unknown ones are rejected (422) so that a typo never silently widens a query."""

    model_config = ConfigDict(extra="forbid")

    run: str | None = Field(
        None, pattern=ID_PATTERN, description="run id (its folder's name); default: the most recently updated run"
    )


class HistoryQuery(RunQuery):
    member: int | None = Field(None, ge=1, le=1_000_000, description="1-based member index")
    epoch_min: int | None = Field(None, ge=0, le=1_000_000_000)
    epoch_max: int | None = Field(None, ge=0, le=1_000_000_000, description="inclusive; a range below epoch_min matches nothing")
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=1_000_000_000)


class ErrorBody(BaseModel):
    detail: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    runs_root: str
    ray: RayState
    ray_note: str | None = None


class Population(RunStatus):
    source: Source = Field(description="'live': asked the coordinator actor; 'run_folder': read status.json")
    note: str | None = Field(None, description="why the live coordinator was not used, when it was not")


class RunSummary(BaseModel):
    run_id: str
    kind: RunKind | None = Field(
        None, description="population (popvae train), robust (popvae robust) or evaluation (only evaluation jobs); "
        "null for a live run without folder"
    )
    state: RunState | None = Field(None, description="a run of jobs: its jobs' (run_folder.jobs_state); else null when the "
                                    "run has no readable status.json")
    epoch: int | None = Field(None, description="generations done (as in status.json)")
    epochs: int | None = None
    updated_at: str | None = None
    live: bool = Field(description="a coordinator actor for this run is alive")
    has_folder: bool


class RunList(BaseModel):
    runs: list[RunSummary]


class HistoryPage(BaseModel):
    run_id: str
    total: int = Field(description="rows matching the filters, before paging")
    offset: int
    limit: int
    rows: list[HistoryRow]


class JobList(BaseModel):
    run_id: str
    jobs: list[JobStatus]
    unreadable: list[str] = Field([], description="job folders whose status.json could not be read")


class Picture(BaseModel):
    path: str = Field(description="relative to the run folder; fetch it from /runs/{run_id}/files/{path}")
    title: str = Field(description="what it shows, for a caption")


class RunOverview(BaseModel):
    """Everything about one run that is not per epoch: what it is, its config, its end-of-run summary, pictures, reports."""

    run_id: str
    kind: RunKind | None
    status: RunStatus | None = Field(None, description="status.json, when the run has a population (null otherwise)")
    config: dict[str, Any] = Field({}, description="config.json as written when the run started")
    summary: dict[str, Any] | None = Field(None, description="summary.json (test scores of the best model), once the run ended")
    pictures: list[Picture] = Field([], description="PNG pictures under the run folder (plots, evaluation figures)")
    reports: list[str] = Field([], description="report.md files under the run folder, relative paths")


class LineagePage(BaseModel):
    run_id: str
    generations: list[LineageEntry] = Field(description="one entry per generation done, oldest first (lineage.json)")


class JobHistory(BaseModel):
    """A job's history.parquet: a robust job's row per epoch (its loss parts, seconds)."""

    run_id: str
    job_id: str
    rows: list[dict[str, Any]]
