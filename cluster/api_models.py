"""Request and response models of the status service: the run folder's JSON schemas, written once as pydantic.

The same models validate what is read from disk or from the live coordinator, so a malformed
snapshot is caught on the way in (and answered with a 503) rather than on the way out (a 500).
Loss values are `float | None` because a diverged member's loss is NaN, which JSON cannot carry:
it is sent as null.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

Strategy = Literal["fixed", "linear_increase", "linear_decrease", "exp_increase", "exp_decrease", "anneal"]
MemberState = Literal["training", "idle", "restarting", "failed"]
RunState = Literal["running", "done", "failed"]
Source = Literal["live", "run_folder"]
RayState = Literal["disabled", "connecting", "connected", "unreachable"]


class _Snapshot(BaseModel):
    """Tolerates extra keys so that the writer can add fields without breaking readers."""

    model_config = ConfigDict(extra="ignore")


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


class LossParts(_Snapshot):
    total: float | None
    reconstruction: float | None
    kl_z1: float | None
    kl_z2: float | None


class Member(_Snapshot):
    index: int = Field(ge=1)
    strategy: Strategy
    tau: float | None
    loss: LossParts | None = None
    val_loss: float | None = None
    patience: int
    state: MemberState
    node_id: str | None = None
    flags: list[str] = []


class RunStatus(_Snapshot):
    """Exactly `status.json` (and the coordinator's `status()`)."""

    run_id: str
    state: RunState
    epoch: int
    epochs: int
    generation_seconds: float | None = None
    best_member: int | None = None
    updated_at: str
    members: list[Member]


class Population(RunStatus):
    source: Source = Field(description="'live': asked the coordinator actor; 'run_folder': read status.json")
    note: str | None = Field(None, description="why the live coordinator was not used, when it was not")


class RunSummary(BaseModel):
    run_id: str
    state: RunState | None = Field(None, description="null when the run has no readable status.json")
    epoch: int | None = None
    epochs: int | None = None
    updated_at: str | None = None
    live: bool = Field(description="a coordinator actor for this run is alive")
    has_folder: bool


class RunList(BaseModel):
    runs: list[RunSummary]


class HistoryRow(_Snapshot):
    epoch: int
    member: int
    strategy: str
    tau: float | None
    tau_next: float | None
    loss_total: float | None
    loss_reconstruction: float | None
    loss_kl_z1: float | None
    loss_kl_z2: float | None
    val_loss: float | None = None
    patience: int
    is_best: bool
    seconds: float | None
    event: str = ""
    node_id: str | None = None


class HistoryPage(BaseModel):
    run_id: str
    total: int = Field(description="rows matching the filters, before paging")
    offset: int
    limit: int
    rows: list[HistoryRow]


class Job(_Snapshot):
    """Exactly `jobs/<id>/status.json`."""

    id: str
    method: str | None = None
    kind: Literal["robust", "evaluation"]
    state: Literal["queued", "running", "done", "failed"]
    error: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    created_at: str | None = None
    updated_at: str | None = None
    metrics: dict[str, Any] = {}


class JobList(BaseModel):
    run_id: str
    jobs: list[Job]
    unreadable: list[str] = Field([], description="job folders whose status.json could not be read")
