"""The recorder: the population's book, per member, and everything it leaves in the run folder.

It owns each member's record (strategy, state, flags, last result), the history rows, the lineage,
`status.json`, the checkpoints (written in the background) with `best.pt`, and the restore from
`checkpoints/latest.pt`. It decides nothing and knows nothing of how members execute: the coordinator
hands it the generation policy's decision (`population.generation`), plain results, its taus (read
through `taus`, never kept here) and, when a checkpoint is due, a function that gathers the weights
and optimizer states. Every file is built through `population.contract`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from popvae.population import folder_io
from popvae.population.config import RunConfig
from popvae.population.contract import (
    LOSS_PARTS,
    SCHEMA_VERSION,
    HistoryRow,
    LineageEntry,
    LossParts,
    MemberEvent,
    MemberState,
    MemberStatus,
    RunState,
    RunStatus,
    StopReason,
)
from popvae.population.run_folder import Checkpoint, RunFolder
from popvae.population.temperature import MemberTau, Strategy, strategy_for
from popvae.population.tensorboard_logs import RunLogs

if TYPE_CHECKING:
    import torch

    from popvae.population.generation import Decision

Weights = dict[str, np.ndarray]
Gathered = tuple[Weights, dict[int, Any], dict[int, Weights] | None]
"""What a checkpoint needs from the members: the best weights, every member's optimizer state, and each member's own
weights when they differ (no broadcast), else None."""


@dataclass
class MemberRecord:
    """One member as the run knows it."""

    strategy: Strategy
    state: MemberState = "idle"
    flags: list[str] = field(default_factory=list)  # "event@epoch"
    last: dict[str, Any] | None = None  # its last reported result (loss parts, val_loss, node_id, seconds)


class Recorder:
    def __init__(self, config: RunConfig, run_dir: Path, taus: Callable[[], Mapping[int, MemberTau]]) -> None:
        """`taus()`: every member's current tau and patience, as the coordinator holds them."""
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.folder = RunFolder(self.run_dir)
        self.run_id = self.run_dir.name
        self.taus = taus
        self.members = {i: MemberRecord(_strategy(config, i)) for i in range(1, config.members + 1)}
        self.history: list[HistoryRow] = []
        self.lineage: list[LineageEntry] = []
        self.state: RunState = "running"
        self.epochs_done = 0
        self.best: int | None = None
        self.generation_seconds: float | None = None
        self.coordinator_restarts = 0
        self.since_improvement = 0  # the plateau stopper's count (the coordinator's decision, booked here)
        self.stop_reason: StopReason | None = None
        self._restarted = False  # the next lineage entry says that a new coordinator took over
        self.logs = RunLogs(self.run_dir)  # TensorBoard events per member and progress.csv
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._write: Future[None] | None = None

    # --- states ---
    def set_member_state(self, state: MemberState, members: Iterable[int]) -> None:
        for i in members:
            self.members[i].state = state
        self.write_status()

    def set_state(self, state: RunState) -> None:
        self.state = state
        self.write_status()

    def coordinator_restarted(self, count: int) -> None:
        self.coordinator_restarts, self._restarted = count, True
        self.write_status()

    def set_stop(self, since_improvement: int, reason: StopReason | None) -> None:
        """The stopper's count after a generation and why the run ends there (None: it goes on)."""
        self.since_improvement, self.stop_reason = since_improvement, reason
        self.write_status()

    def finish(self, state: RunState, reason: StopReason | None = None) -> None:
        """The run ends (done, stopped or failed): the last checkpoint on disk, members idle unless failed; `reason`
        replaces the recorded stop reason when given."""
        self.stop_reason = reason or self.stop_reason
        self.wait_for_writes()
        self.logs.close()
        for m in self.members.values():
            m.state = "failed" if m.state == "failed" else "idle"
        self.set_state(state)

    # --- one generation ---
    def checkpoint_due(self, epoch: int) -> bool:
        """Generation `epoch` (from 0) ends with a checkpoint: every `checkpoint_every` generations, and the last."""
        return epoch + 1 == self.cfg.epochs or (epoch + 1) % self.cfg.checkpoint_every == 0

    def record_generation(self, epoch: int, results: dict[int, dict[str, Any] | None], scores: dict[int, float],
                          decision: Decision, before: Mapping[int, MemberTau], events: dict[int, MemberEvent],
                          seconds: dict[str, float], gathered: Gathered | None) -> LineageEntry:
        """Book the generation's outcome (`before`: the taus it trained at; `taus()` already the next ones), write
        history and lineage, then the checkpoint (`gathered`, when `checkpoint_due`), then the status."""
        writing = time.perf_counter()
        best = decision.best  # `epoch` counts from 0 here; every file counts from 1
        self.best, self.epochs_done = best, epoch + 1
        self.generation_seconds = seconds["train"] + seconds["coordination"]
        for i, member in self.members.items():
            event = events.get(i, "")
            member.state = "failed" if event == "dropped" else "idle"
            if event:
                member.flags.append(f"{event}@{epoch + 1}")
            if results.get(i):
                member.last = results[i]
            self.history.append(self._row(epoch, i, results.get(i), before[i].tau, scores[i], best, event))
        entry = LineageEntry(
            epoch=epoch + 1, best=best, best_loss=scores[best], received={str(i): src for i, src in decision.receivers.items()},
            tau_before=_by_member(before), tau_after=_by_member(self.taus()),
            feedback=[i for i, d in decision.taus.items() if d.feedback_applied],
            events={str(i): e for i, e in events.items()}, seconds=dict(seconds), coordinator_restarted=self._restarted,
        )
        self._restarted = False
        self.lineage.append(entry)
        # History first, checkpoint second: a crash in between only makes a resume redo this epoch.
        self.folder.write_history(self.history)
        self._write_lineage()
        self.logs.generation(self.history[-len(self.members):], self.history,
                             {i: r.get("step_losses", []) for i, r in results.items() if r})
        if gathered is not None:
            self._checkpoint(*gathered, best_tau=before[best].tau, best_score=scores[best])
        entry.seconds["checkpoint"] = time.perf_counter() - writing
        self._write_lineage()
        self.write_status()
        return entry

    def _row(self, epoch: int, i: int, result: dict[str, Any] | None, tau: float, score: float, best: int,
             event: MemberEvent) -> HistoryRow:
        result = result or {}
        loss = result.get("loss", {})
        member, next_ = self.members[i], self.taus()[i]
        return HistoryRow(
            epoch=epoch + 1, member=i, strategy=member.strategy, tau=tau, tau_next=next_.tau,
            **{f"loss_{k}": float(loss.get(k, math.nan)) for k in LOSS_PARTS},
            val_loss=float(result.get("val_loss", math.nan)), score=float(score), patience=next_.patience,
            is_best=i == best, seconds=float(result.get("seconds", math.nan)), event=event, node_id=result.get("node_id", ""),
            steps=int(result.get("steps", 0)), curve_mse=float(result.get("curve_mse", math.nan)),
            curve_mse_hard=float(result.get("curve_mse_hard", math.nan)),
        )

    # --- status ---
    def status(self) -> RunStatus:
        return RunStatus(
            run_id=self.run_id, state=self.state, epoch=self.epochs_done, epochs=self.cfg.epochs,
            generation_seconds=self.generation_seconds, best_member=self.best, updated_at=folder_io.now_iso(),
            coordinator_restarts=self.coordinator_restarts, since_improvement=self.since_improvement,
            stop_reason=self.stop_reason, members=[self._member_status(i, m, self.taus()[i]) for i, m in self.members.items()],
        )

    @staticmethod
    def _member_status(i: int, m: MemberRecord, tau: MemberTau) -> MemberStatus:
        last = m.last or {}
        return MemberStatus(
            index=i, strategy=m.strategy, tau=tau.tau,
            loss=LossParts(**{k: last["loss"].get(k) for k in LOSS_PARTS}) if m.last else None,
            val_loss=last.get("val_loss"), patience=tau.patience, state=m.state, node_id=last.get("node_id"),
            flags=list(m.flags),
        )

    def write_status(self) -> None:
        self.folder.write_status(self.status())

    def _write_lineage(self) -> None:
        self.folder.write_lineage(self.lineage)

    # --- checkpoints ---
    def _checkpoint(self, weights: Weights, optimizers: dict[int, Any], own: dict[int, Weights] | None, best_tau: float,
                    best_score: float) -> None:
        """Copy the state now (members are idle between generations), write it in the background: with fast
        devices, serialising every optimizer state would otherwise hold up the next generation."""
        taus = self.taus()
        state = Checkpoint(self.epochs_done, {i: t.tau for i, t in taus.items()}, {i: t.patience for i, t in taus.items()},
                           {i: list(m.flags) for i, m in self.members.items()}, _tensors(weights), optimizers,
                           None if own is None else {i: _tensors(w) for i, w in own.items()})
        meta = {"tau": best_tau, "member": self.best, "epoch": self.epochs_done, "score": best_score,
                "select_on": self.cfg.select_on, "run_id": self.run_id, "baseline": self.cfg.baseline,
                "schema_version": SCHEMA_VERSION}
        self.wait_for_writes()  # one write at a time, in order
        self._write = self._writer.submit(self._write_checkpoint, state, meta)

    def _write_checkpoint(self, state: Checkpoint, meta: dict[str, Any]) -> None:
        from popvae.models.registry import build

        self.folder.write_checkpoint(state)
        model = build("gsvae", self.cfg.model)
        model.load_state_dict(state.weights)
        model.tau = meta["tau"]
        self.folder.write_best(model, meta)

    def wait_for_writes(self) -> None:
        """Block until the last checkpoint is on disk; re-raises a write that failed."""
        if self._write is not None:
            write, self._write = self._write, None
            write.result()

    def restore(self) -> tuple[Gathered, dict[int, MemberTau]]:
        """Back to the last checkpoint (history and lineage cut to it); returns the weights every member restarts
        from, each member's optimizer state, each member's own weights where the run keeps them, and every
        member's tau and patience (for the coordinator, which holds them)."""
        ckpt = self.folder.read_checkpoint()  # its sha256 verified before torch reads it
        self.epochs_done = ckpt.epochs_done
        for i, m in self.members.items():
            m.flags = list(ckpt.flags[i])
        taus = {i: MemberTau(ckpt.taus[i], ckpt.patience[i], False) for i in self.members}
        self.history = [r for r in self.folder.read_history() if r.epoch <= self.epochs_done]
        self.lineage = [g for g in self.folder.read_lineage() if g.epoch <= self.epochs_done]
        self.best = self.lineage[-1].best if self.lineage else None
        if self.lineage:  # the status goes on showing the last generation's time and results, not blanks
            seconds = self.lineage[-1].seconds
            self.generation_seconds = seconds.get("train", 0.0) + seconds.get("coordination", 0.0)
        for r in self.history:
            if r.epoch == self.epochs_done and r.loss_total is not None and math.isfinite(r.loss_total):
                self.members[r.member].last = {"loss": {k: getattr(r, f"loss_{k}") for k in LOSS_PARTS},
                                               "val_loss": r.val_loss, "node_id": r.node_id or None}
        if self.folder.status_path.is_file():  # the count is the run's, across resumes
            self.coordinator_restarts = self.folder.read_status().coordinator_restarts
        own = {i: _arrays(w) for i, w in ckpt.member_weights.items()} if ckpt.member_weights is not None else None
        return (_arrays(ckpt.weights), ckpt.optimizers, own), taus


def _strategy(config: RunConfig, i: int) -> Strategy:
    if config.baseline:
        return "anneal"
    if config.fixed_taus is not None:
        return "fixed"
    return strategy_for(config.schedule_of if config.schedule_of is not None else i)


def _tensors(weights: Weights) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.from_numpy(v.copy()) for k, v in weights.items()}


def _arrays(weights: dict[str, torch.Tensor]) -> Weights:
    return {k: v.numpy() for k, v in weights.items()}


def _by_member(taus: Mapping[int, MemberTau]) -> dict[str, float]:
    return {str(i): t.tau for i, t in taus.items()}
