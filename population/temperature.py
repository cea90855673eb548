"""Algorithms 2 and 3 of the parallel GS-VAE paper: each member's own tau schedule, the
loss-difference feedback with patience, and selection of the best member.

Pure Python over plain numbers (no torch, no Ray), so every rule is testable by hand.
Members are indexed from 1, as in the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Strategy = Literal["fixed", "linear_increase", "linear_decrease", "exp_increase", "exp_decrease", "anneal"]


# Rates left unset take these, per scale, so that members 2-5 move at +0.1, -0.1, x1.1 and /1.1 per epoch
# under either scale (under "paper" they are divided by s(i) = 1, 2, 3, 4).
SCALE_DEFAULTS = {
    "paper": {"l_dec": 0.05, "r_inc": 1.1 / 3, "r_dec": 1.1 / 4},
    "reference": {"l_dec": 0.1, "r_inc": 1.1, "r_dec": 1.1},
}
# The smallest s(i) that uses each exponential rate: member 4 (exp_increase) and member 5 (exp_decrease).
_FIRST_S = {"paper": {"r_inc": 3, "r_dec": 4}, "reference": {"r_inc": 1, "r_dec": 1}}


# The authors' code as their published training log shows it (docs/ALGORITHMS.md §3): every member at the same rate (s(i) = 1),
# +0.5, -0.002, x1.03 and x0.999 per epoch, feedback 0.01 x the loss gap after 5 epochs behind, and no effective upper
# clip (their linear-increase member reached tau 84). `popvae train --reference-dynamics`, `reproduce`'s protocol.
REFERENCE_DYNAMICS: dict[str, float | int | str | bool] = {
    "scale": "reference", "tau0": 1.0, "tau_min": 0.1, "tau_max": 1e6, "l_inc": 0.5, "l_dec": 0.002, "r_inc": 1.03,
    "r_dec": 1 / 0.999, "lr_tau": 0.01, "patience": 5, "reset_patience": True, "feedback_sign": 1,
}


class TemperatureConfig(BaseModel):
    """Every knob of Algorithms 2-3. Defaults: the paper's s(i) = i - 1 with rates chosen so that
    members 2-5 move at +0.1, -0.1, x1.1 and /1.1 per epoch (see the README)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    tau0: float = Field(1.0, gt=0)
    tau_min: float = Field(0.1, gt=0)
    tau_max: float = Field(2.0, gt=0)
    scale: Literal["paper", "reference"] = "paper"  # s(i) = i - 1, or s(i) = 1
    l_inc: float = Field(0.1, ge=0)
    l_dec: float = Field(SCALE_DEFAULTS["paper"]["l_dec"], ge=0)  # unset: SCALE_DEFAULTS[scale]
    r_inc: float = Field(SCALE_DEFAULTS["paper"]["r_inc"], gt=0)
    r_dec: float = Field(SCALE_DEFAULTS["paper"]["r_dec"], gt=0)
    lr_tau: float = Field(0.01, ge=0)
    patience: int = Field(2, ge=1)  # p_thresh
    reset_patience: bool = True  # reset the counter after an adjustment, as the reference code does
    feedback_sign: Literal[1, -1] = 1  # +1: the paper's tau += lr*(L - L_best); -1: a reference variant
    anneal_rate: float = Field(0.9, gt=0, le=1)  # baseline: tau_t = max(tau_min, tau0 * r^t)

    @model_validator(mode="before")
    @classmethod
    def _scale_defaults(cls, data: object) -> object:
        if isinstance(data, dict):
            defaults = SCALE_DEFAULTS.get(data.get("scale", "paper"), {})
            data = {**defaults, **{k: v for k, v in data.items() if v is not None}}
        return data

    @model_validator(mode="after")
    def _ordered(self) -> TemperatureConfig:
        for rate, strategy in (("r_inc", "exp_increase"), ("r_dec", "exp_decrease")):
            s = _FIRST_S[self.scale][rate]
            if s * getattr(self, rate) <= 1:
                raise ValueError(
                    f"{rate} = {getattr(self, rate):g} with scale {self.scale!r} makes {strategy} go the wrong way "
                    f"(s(i) * {rate} = {s * getattr(self, rate):g} must exceed 1)"
                )
        if self.tau_min > self.tau_max:
            raise ValueError(f"tau_min ({self.tau_min}) must not exceed tau_max ({self.tau_max})")
        if not self.tau_min <= self.tau0 <= self.tau_max:
            raise ValueError(f"tau0 ({self.tau0}) must lie in [tau_min, tau_max] = [{self.tau_min}, {self.tau_max}]")
        return self


def strategy_for(i: int) -> Strategy:
    """Algorithm 2's assignment of a strategy to member i (1-based)."""
    if i < 1:
        raise ValueError(f"member index must be >= 1, got {i}")
    if i == 1:
        return "fixed"
    return {2: "linear_increase", 3: "linear_decrease", 0: "exp_increase"}.get(i % 4, "exp_decrease")


def _clip(tau: float, cfg: TemperatureConfig) -> float:
    return min(cfg.tau_max, max(cfg.tau_min, tau))


def scheduled_tau(tau: float, i: int, cfg: TemperatureConfig) -> float:
    """One epoch of member i's own schedule, clipped to [tau_min, tau_max]."""
    s = (i - 1) if cfg.scale == "paper" else 1
    strategy = strategy_for(i)
    if strategy == "fixed":
        new = tau
    elif strategy == "linear_increase":
        new = tau + s * cfg.l_inc
    elif strategy == "linear_decrease":
        new = tau - s * cfg.l_dec
    elif strategy == "exp_increase":
        new = tau * s * cfg.r_inc
    else:
        new = tau / (s * cfg.r_dec)
    return _clip(new, cfg)


def annealed_tau(epoch: int, cfg: TemperatureConfig) -> float:
    """The standard GS-VAE baseline: tau_t = max(tau_min, tau0 * r^t), t counted from 0."""
    return max(cfg.tau_min, cfg.tau0 * cfg.anneal_rate**epoch)


def select_best(losses: dict[int, float]) -> int:
    """The member with the minimum loss; NaN and infinite losses never win. Ties go to the lower index."""
    finite = {i: v for i, v in losses.items() if math.isfinite(v)}
    if not finite:
        raise ValueError("no member has a finite loss")
    return min(sorted(finite), key=lambda i: finite[i])


@dataclass(frozen=True)
class MemberTau:
    """What the coordinator decides for one member in one generation."""

    tau: float
    patience: int
    feedback_applied: bool


def feedback(tau: float, patience: int, loss: float, best_loss: float, cfg: TemperatureConfig) -> MemberTau:
    """Algorithm 3: count epochs behind the best; past the threshold, nudge tau by the loss gap."""
    patience = patience + 1 if loss > best_loss else 0
    if patience < cfg.patience:
        return MemberTau(tau, patience, False)
    tau = _clip(tau + cfg.feedback_sign * cfg.lr_tau * (loss - best_loss), cfg)
    return MemberTau(tau, 0 if cfg.reset_patience else patience, True)


def next_taus(
    taus: dict[int, float], patience: dict[int, int], losses: dict[int, float], cfg: TemperatureConfig
) -> tuple[int, dict[int, MemberTau]]:
    """One generation: pick the best, advance every tau by its own schedule, then apply feedback.

    Members whose loss is not finite keep their counters and only follow their schedule (they are
    reset from the best member's weights by the coordinator).
    """
    best = select_best(losses)
    out: dict[int, MemberTau] = {}
    for i, tau in taus.items():
        scheduled = scheduled_tau(tau, i, cfg)
        if i == best or not math.isfinite(losses[i]):
            out[i] = MemberTau(scheduled, 0 if i == best else patience[i], False)
        else:
            out[i] = feedback(scheduled, patience[i], losses[i], losses[best], cfg)
    return best, out
