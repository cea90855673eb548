"""The generation policy: what the population decides each generation, apart from how it is carried out.

Plain data in (every member's score, its tau and patience, the run mode, what happened to each pack), plain data out
(the best, every member's next tau and patience, who receives whose weights, who is reset, each member's event,
whether a pack that failed or ran late is retried or dropped). No torch, no Ray: the coordinator
(`population/coordinator.py`) executes these decisions (train, barrier, broadcast, restart) and the recorder
(`population/recorder.py`) persists them, so every rule here is checked by hand in tests/test_generation.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from popvae.population.config import RunConfig
from popvae.population.contract import MemberEvent, StopReason
from popvae.population.temperature import MemberTau, annealed_tau, next_taus, scheduled_tau, select_best

RunMode = Literal["population", "baseline", "solo", "grid"]
"""population: Algorithms 1-3; baseline: one member, tau annealed; solo: one member following another member's
schedule (`schedule_of`, the reproduction's "winning schedule alone"); grid: every member at its own fixed tau
(`fixed_taus`, the reproduction's fixed-tau grid)."""
PackFault = Literal["failed", "late"]
"""A pack's call raised (its process died), or it had not reported when the barrier's deadline passed."""
FaultAction = Literal["retry", "drop"]

TRIES_PER_GENERATION = 2  # a pack is trained at most twice in one generation: once, and once more after a restart


def run_mode(cfg: RunConfig) -> RunMode:
    if cfg.baseline:
        return "baseline"
    if cfg.fixed_taus is not None:
        return "grid"
    return "solo" if cfg.schedule_of is not None else "population"


def first_taus(cfg: RunConfig) -> dict[int, MemberTau]:
    """Every member's tau and patience before the first generation."""
    taus = cfg.fixed_taus or [cfg.temperature.tau0] * cfg.members
    return {i: MemberTau(tau, 0, False) for i, tau in enumerate(taus, start=1)}


@dataclass(frozen=True)
class Decision:
    """One generation's outcome, as the coordinator carries it out and the recorder books it."""

    best: int
    taus: dict[int, MemberTau]  # every member's tau and patience for the next generation
    receivers: dict[int, int]  # member -> the member whose weights it loads now
    reset: tuple[int, ...]  # members whose optimizer state is cleared as they load the best's weights (non-finite score)


def decide(epoch: int, scores: Mapping[int, float], taus: Mapping[int, MemberTau], cfg: RunConfig,
           reset: Iterable[int] = ()) -> Decision:
    """The best (minimum finite score, ties to the lower index), every next tau (by the run mode), and the receivers:
    every other member with the broadcast, otherwise only the `reset` ones. ValueError when no score is finite."""
    mode = run_mode(cfg)
    if not any_finite(scores):
        raise ValueError("no member has a finite score")
    if mode == "baseline":
        best, next_ = 1, {1: MemberTau(annealed_tau(epoch + 1, cfg.temperature), 0, False)}
    elif mode == "solo" and cfg.schedule_of is not None:
        best, next_ = 1, {1: MemberTau(scheduled_tau(taus[1].tau, cfg.schedule_of, cfg.temperature), 0, False)}
    elif mode == "grid":
        best, next_ = select_best(dict(scores)), {i: MemberTau(t.tau, 0, False) for i, t in taus.items()}
    else:
        best, next_ = next_taus({i: t.tau for i, t in taus.items()}, {i: t.patience for i, t in taus.items()},
                                dict(scores), cfg.temperature)
    resets = tuple(sorted(i for i in reset if i != best))
    others = [i for i in sorted(taus) if i != best] if cfg.broadcast else list(resets)
    return Decision(best, next_, {i: best for i in others}, resets)


def plateau_count(best_losses: Sequence[float | None], min_delta: float) -> int:
    """Generations in a row, up to the last of `best_losses` (each generation's best selection loss, in order), that
    did not improve the best so far by `min_delta` relative to it. A first finite loss is an improvement; a missing or
    non-finite one never is. Derived from the lineage alone, so the count survives a resume."""
    best, count = math.inf, 0
    for loss in best_losses:
        if loss is not None and math.isfinite(loss) and (best == math.inf or loss < best - min_delta * abs(best)):
            best, count = loss, 0
        else:
            count += 1
    return count


def stop_reason(epochs_done: int, best_losses: Sequence[float | None], cfg: RunConfig) -> StopReason | None:
    """Whether the run ends after `epochs_done` generations: `budget` when every epoch is trained, `plateau` when the
    stopper (`cfg.stop`) says the best has not improved in its window, else None (train on)."""
    if epochs_done >= cfg.epochs:
        return "budget"
    if cfg.stop is not None and plateau_count(best_losses, cfg.stop.min_delta) >= cfg.stop.plateau_generations:
        return "plateau"
    return None


def any_finite(scores: Mapping[int, float]) -> bool:
    return any(math.isfinite(v) for v in scores.values())


def after_fault(fault: PackFault, tries: int, finite_so_far: bool) -> FaultAction:
    """What to do with a pack that failed or ran late, after `tries` attempts in this generation (it is restarted
    either way). A failed pack is retried once. A late pack is retried once only when nothing finite has been
    reported (every member in one pack, or every pack stalled): a retry holds every other pack at the barrier for
    another timeout, but dropping the only packs there are would end the run."""
    if tries >= TRIES_PER_GENERATION:
        return "drop"
    if fault == "failed":
        return "retry"
    return "drop" if finite_so_far else "retry"


def member_events(members: Iterable[int], *, retried: Iterable[int] = (), dropped: Iterable[int] = (),
                  lost: Iterable[int] = (), non_finite: Iterable[int] = ()) -> dict[int, MemberEvent]:
    """Each member's event in one generation, from what happened to it: `retried` (its pack restarted before it
    reported), `dropped` (left out of the generation), `lost` (its pack restarted after it reported: its trained
    weights died), `non_finite` (it reported a score that is not finite). Dropped wins (a dropped pack's restart is
    part of its drop), then lost (a reported NaN died with its pack), then nan_reset (a retried member that reports
    NaN is reset from the best), then restarted. Members with no event are left out."""
    retried, dropped, lost, non_finite = set(retried), set(dropped), set(lost), set(non_finite)
    events: dict[int, MemberEvent] = {}
    for i in members:
        if i in dropped:
            events[i] = "dropped"
        elif i in lost or i in retried and i not in non_finite:
            events[i] = "restarted"
        elif i in non_finite:
            events[i] = "nan_reset"
    return events


def failure_message(epoch: int, timed_out: Iterable[int], timeout_s: float) -> str:
    """Why a generation left nothing to select from, in one line: the timeout when members ran past it."""
    late = sorted(timed_out)
    if late:
        return (f"generation {epoch}: members {late} did not finish within member_timeout_s = {timeout_s:g} s "
                f"(--timeout), again after their pack was restarted; no member produced a finite loss")
    return f"generation {epoch}: no member produced a finite loss and kept its weights"
