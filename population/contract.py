"""The run-folder contract: what a run writes and what every reader parses, in one place (no torch, no Ray).

    RUN_DIR/status.json          RunStatus (members: MemberStatus), also what the live coordinator answers
    RUN_DIR/history.parquet      HistoryRow, one per member per generation
    RUN_DIR/lineage.json         LineageEntry, one per generation
    RUN_DIR/summary.json         RunResult, the test-set scores once every epoch is trained
    RUN_DIR/jobs/<id>/status.json  JobStatus (robust-AE training and evaluations)

The files' names, and how each is read and written, are `population.run_folder.RunFolder`'s alone.

The coordinator and the job pool build these models and write `dump(model)`; the status service
validates what it reads with the same models. Readers tolerate extra keys (a writer may add fields)
and every field added later has a default, so older run folders still parse. JSON has no NaN: a
diverged member's loss is written as null (history.parquet keeps NaN, Parquet can hold it).

The coordinator of run R is the Ray actor named `coordinator_name(R)` in namespace `NAMESPACE`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from popvae.population.folder_io import now_iso
from popvae.population.temperature import Strategy

NAMESPACE = "popvae"
COORDINATOR_PREFIX = "coordinator:"


def coordinator_name(run_id: str) -> str:
    """The name of run `run_id`'s coordinator actor (in namespace NAMESPACE)."""
    return f"{COORDINATOR_PREFIX}{run_id}"


def run_id_of(actor_name: str) -> str | None:
    """The run a coordinator actor name belongs to, or None for any other actor."""
    return actor_name[len(COORDINATOR_PREFIX) :] if actor_name.startswith(COORDINATOR_PREFIX) else None


LOSS_PARTS = ("total", "reconstruction", "kl_z1", "kl_z2")

RunState = Literal["running", "scoring", "done", "stopped", "failed", "interrupted"]
"""running; scoring (every epoch trained, the best model being scored on the test split); done (every epoch trained
and summary.json written); stopped (ended early on request, resumable); failed; interrupted (a signal
stopped it, or its driver died: resumable from the last checkpoint)."""
MemberState = Literal["training", "idle", "restarting", "failed"]
MemberEvent = Literal["", "restarted", "dropped", "nan_reset"]
"""What happened to a member in one generation (history `event`; its flags read `event@epoch`)."""
StopReason = Literal["budget", "plateau", "user", "failed", "interrupted"]
"""Why a run ended: every epoch trained; the plateau stopper (config `stop`); a stop asked for (`on_generation`
returned True); a failure; a signal, or its driver died."""
JobKind = Literal["robust", "evaluation"]
RunKind = Literal["population", "robust", "evaluation"]
"""What a run folder holds: a population, robust-AE jobs, or only evaluations (`run_folder.run_kind`)."""
JobState = Literal["queued", "running", "done", "failed", "interrupted"]


class _Record(BaseModel):
    """Tolerates extra keys so that a writer can add fields without breaking readers."""

    model_config = ConfigDict(extra="ignore")


def finite_or_none(obj: Any) -> Any:
    """JSON has no NaN: null instead, so that every reader can parse what was written."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_or_none(v) for v in obj]
    return obj


def dump(record: BaseModel) -> Any:
    """A record as JSON-ready data, NaN and infinities as null."""
    return finite_or_none(record.model_dump(mode="json"))


class LossParts(_Record):
    """A member's mean training loss over its last epoch, per image: summed binary cross-entropy plus the two KLs."""

    total: float | None = Field(description="reconstruction + kl_z1 + kl_z2; null when it diverged")
    reconstruction: float | None = Field(description="binary cross-entropy summed over the pixels of an image")
    kl_z1: float | None = Field(description="KL of the first categorical latent layer")
    kl_z2: float | None = Field(description="KL of the second categorical latent layer")


class MemberStatus(_Record):
    index: int = Field(ge=1, description="1-based member number")
    strategy: Strategy = Field(description="its own tau schedule (Algorithm 2)")
    tau: float | None = Field(description="the tau it trains with in the next generation (the history's tau_next of the "
                              "last epoch done; the history's tau is the one each epoch used)")
    loss: LossParts | None = Field(None, description="its last epoch's mean training loss; null before its first epoch")
    val_loss: float | None = Field(None, description="its last epoch's loss on the held-out validation images, no noise")
    patience: int = Field(description="generations in a row it lost to the best (Algorithm 3)")
    state: MemberState
    node_id: str | None = Field(None, description="the Ray node it last trained on")
    flags: list[str] = Field([], description="what happened to it: event@epoch (0-based epoch)")


class RunStatus(_Record):
    """Exactly `status.json`, and the coordinator's `status()`."""

    run_id: str
    state: RunState
    epoch: int = Field(description="generations done (the console's 'epoch k/n' while epoch k+1 trains is k done)")
    epochs: int = Field(description="generations planned")
    generation_seconds: float | None = Field(None, description="wall time of the last generation done")
    best_member: int | None = Field(None, description="the best member of the last generation done")
    updated_at: str
    coordinator_restarts: int = Field(0, description="coordinators started in place of one whose process died")
    since_improvement: int = Field(0, description="generations in a row the best selection loss did not improve by "
                                   "stop.min_delta (the plateau stopper's counter)")
    stop_reason: StopReason | None = Field(None, description="why the run ended; null while it runs")
    members: list[MemberStatus]


class HistoryRow(_Record):
    """One row of `history.parquet`: one member in one generation."""

    epoch: int = Field(description="0-based epoch (generation); people see epoch + 1")
    member: int = Field(description="1-based member number")
    strategy: Strategy
    tau: float | None = Field(description="the tau it trained with")
    tau_next: float | None = Field(description="the tau chosen for the next generation")
    loss_total: float | None
    loss_reconstruction: float | None
    loss_kl_z1: float | None
    loss_kl_z2: float | None
    val_loss: float | None = None
    score: float | None = Field(None, description="the loss selection used (select_on); NaN/null when it did not report")
    patience: int
    is_best: bool = Field(description="it won this generation: every other member received its weights")
    seconds: float | None = Field(description="its training and scoring time this epoch")
    event: MemberEvent = ""
    node_id: str | None = None
    steps: int = Field(0, description="optimizer steps it took this generation")
    curve_mse: float | None = Field(None, description="its reconstruction MSE (relaxed code at its tau, no noise) on the "
                                    "run's fixed validation subset (curve_subset), after this generation's training")
    curve_mse_hard: float | None = Field(None, description="the same from hard codes (one-hot argmax)")


class CurvePoint(_Record):
    """One generation of a run's learning curve (`RunFolder.learning_curve`): the generation's best member."""

    generation: int = Field(ge=1, description="1-based generation")
    member: int = Field(description="the generation's best member")
    mse: float | None = Field(description="its curve_mse: relaxed code, validation subset")
    mse_hard: float | None = Field(description="its curve_mse_hard (null for a model without discrete codes)")
    steps_per_member: int = Field(description="optimizer steps each member has taken so far (the most any took)")
    member_steps_total: int = Field(description="all members' optimizer steps so far (the population's compute)")


class LineageEntry(_Record):
    """One generation's decisions (`lineage.json`): enough to replay the run. Member indices are string keys."""

    epoch: int
    best: int
    best_loss: float | None
    received: dict[str, int] = Field(description="member -> the member whose weights it received")
    tau_before: dict[str, float]
    tau_after: dict[str, float]
    feedback: list[int] = Field([], description="members whose tau got the feedback term")
    events: dict[str, MemberEvent] = {}
    seconds: dict[str, float] = Field({}, description="train, coordination, checkpoint")
    coordinator_restarted: bool = Field(False, description="a new coordinator took over (from the last checkpoint) "
                                        "before this generation")


class JobStatus(_Record):
    """Exactly `jobs/<id>/status.json`. Built by `queued`, moved on by `update`: one path for every kind of job."""

    id: str
    method: str | None = None
    kind: JobKind
    state: JobState
    error: str | None = None
    epoch: int | None = None
    epochs: int | None = None
    created_at: str | None = None
    updated_at: str | None = None
    metrics: dict[str, Any] = {}

    @classmethod
    def queued(cls, id: str, kind: JobKind, method: str | None = None, epochs: int = 0,
               created_at: str | None = None) -> JobStatus:
        now = now_iso()
        return cls(id=id, method=method, kind=kind, state="queued", epoch=0, epochs=epochs,
                   created_at=created_at or now, updated_at=now)

    @classmethod
    def of_job(cls, job: dict[str, Any]) -> JobStatus:
        """The queued status of a job-pool job (a dict with id, kind, and method, epochs when it has them)."""
        return cls.queued(job["id"], job["kind"], job.get("method"), job.get("epochs", 0))

    def update(self, **changes: Any) -> JobStatus:
        """A validated copy with `changes` and a new `updated_at`."""
        return type(self).model_validate({**self.model_dump(), **changes, "updated_at": now_iso()})



class RunResult(_Record):
    """Exactly `summary.json`: the best model's test-set scores and how they were taken, written when a run ends."""

    run_id: str
    best_member: int = Field(description="1-based member whose weights best.pt holds")
    best_tau: float = Field(description="the tau it was selected at")
    best_epoch: int = Field(description="0-based epoch of best.pt")
    select_on: str = Field(description="val, val_hard or train: what chose the best")
    baseline: bool
    precision: str = Field("fp32", description="fp32 or bf16: how the run trained (a summary older than the option: fp32)")
    pack_mode: str = Field("vmap", description="vmap or loop: how its packs stepped their members")
    test_mse: float | None = Field(description="mean squared error of deterministic reconstructions, [0,1] pixels")
    test_mse_hard: float | None = Field(None, description="the same from hard codes (one-hot argmax of each "
                                        "categorical, the tau -> 0 limit); null in summaries older than it")
    test_loss: float | None = Field(description="the loss on the test split (see `evaluation`)")
    test_images: int
    evaluation: str = Field(description="how each score was taken")
    epochs_done: int
    events: list[str] = Field([], description="member events that happened in the run (restarted, dropped, nan_reset)")
    stop_reason: StopReason | None = Field(None, description="why training ended: budget, plateau or user")
