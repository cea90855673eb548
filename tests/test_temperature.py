"""Algorithms 2-3 against sequences computed by hand (no Ray, no torch)."""

from __future__ import annotations

import math

import pytest

from popvae.population.temperature import (
    TemperatureConfig,
    annealed_tau,
    feedback,
    next_taus,
    scheduled_tau,
    select_best,
    strategy_for,
)

CFG = TemperatureConfig()  # tau0 1, [0.1, 2], paper scale s(i) = i - 1


def run(i: int, epochs: int, cfg: TemperatureConfig = CFG) -> list[float]:
    taus = [cfg.tau0]
    for _ in range(epochs):
        taus.append(scheduled_tau(taus[-1], i, cfg))
    return taus


def test_strategy_assignment_follows_algorithm_2():
    assert [strategy_for(i) for i in range(1, 10)] == [
        "fixed", "linear_increase", "linear_decrease", "exp_increase", "exp_decrease",
        "linear_increase", "linear_decrease", "exp_increase", "exp_decrease",
    ]
    with pytest.raises(ValueError):
        strategy_for(0)


@pytest.mark.parametrize(
    "member, expected",
    [
        (1, [1.0, 1.0, 1.0]),
        (2, [1.0, 1.1, 1.2]),  # + 1 * 0.1
        (3, [1.0, 0.9, 0.8]),  # - 2 * 0.05
        (4, [1.0, 1.1, 1.21]),  # * 3 * (1.1 / 3)
        (5, [1.0, 1 / 1.1, 1 / 1.21]),  # / (4 * 1.1 / 4)
        (6, [1.0, 1.5, 2.0, 2.0]),  # + 5 * 0.1, clipped at tau_max
        (7, [1.0, 0.7, 0.4, 0.1, 0.1]),  # - 6 * 0.05, clipped at tau_min
        (8, [1.0, 2.0]),  # 7 * 1.1 / 3 = 2.567 -> clipped
        (9, [1.0, 1 / 2.2]),  # / (8 * 0.275)
    ],
)
def test_paper_scale_sequences(member, expected):
    assert run(member, len(expected) - 1) == pytest.approx(expected)


def test_reference_scale_moves_every_member_at_the_same_rate():
    cfg = TemperatureConfig(scale="reference")  # its own default rates, not the paper scale's
    assert (cfg.l_dec, cfg.r_inc, cfg.r_dec) == (0.1, 1.1, 1.1)
    assert run(3, 2, cfg) == pytest.approx([1.0, 0.9, 0.8])
    assert run(7, 2, cfg) == pytest.approx([1.0, 0.9, 0.8])
    assert run(4, 2, cfg) == pytest.approx([1.0, 1.1, 1.21])
    assert run(9, 1, cfg) == pytest.approx([1.0, 1 / 1.1])


@pytest.mark.parametrize("over", [
    {"scale": "reference", "r_inc": 1.1 / 3},  # the paper scale's rate: member 4 would shrink tau
    {"scale": "reference", "r_dec": 0.9},  # member 5 would grow tau
    {"r_inc": 0.3},  # paper scale: member 4 has s = 3, and 3 * 0.3 < 1
    {"r_dec": 0.25},  # paper scale: member 5 has s = 4, and 4 * 0.25 = 1 does not move
])
def test_rates_that_reverse_an_exponential_strategy_are_rejected(over):
    with pytest.raises(ValueError, match="go the wrong way"):
        TemperatureConfig(**over)


def test_annealing_baseline_is_floored():
    cfg = TemperatureConfig(anneal_rate=0.5, tau_min=0.2)
    assert [annealed_tau(t, cfg) for t in range(5)] == pytest.approx([1.0, 0.5, 0.25, 0.2, 0.2])


def test_feedback_waits_for_patience_then_moves_by_loss_gap_and_resets():
    cfg = TemperatureConfig(lr_tau=0.01, patience=2)
    a = feedback(1.0, 0, loss=10.0, best_loss=8.0, cfg=cfg)
    assert (a.tau, a.patience, a.feedback_applied) == (1.0, 1, False)
    b = feedback(a.tau, a.patience, loss=12.0, best_loss=8.0, cfg=cfg)
    assert (b.tau, b.patience, b.feedback_applied) == (pytest.approx(1.04), 0, True)
    c = feedback(b.tau, b.patience, loss=8.0, best_loss=8.0, cfg=cfg)  # not worse than best: counter back to 0
    assert (c.patience, c.feedback_applied) == (0, False)


def test_feedback_without_reset_keeps_adjusting_and_sign_option_subtracts():
    keep = TemperatureConfig(lr_tau=0.01, patience=2, reset_patience=False)
    taus, patience = [1.0], 1
    for _ in range(3):
        m = feedback(taus[-1], patience, loss=18.0, best_loss=8.0, cfg=keep)
        taus.append(m.tau)
        patience = m.patience
    assert taus == pytest.approx([1.0, 1.1, 1.2, 1.3]) and patience == 4
    minus = TemperatureConfig(lr_tau=0.01, patience=1, feedback_sign=-1)
    assert feedback(1.0, 0, loss=18.0, best_loss=8.0, cfg=minus).tau == pytest.approx(0.9)


def test_feedback_is_clipped():
    cfg = TemperatureConfig(lr_tau=1.0, patience=1)
    assert feedback(1.9, 0, loss=100.0, best_loss=0.0, cfg=cfg).tau == cfg.tau_max


def test_select_best_ignores_non_finite_and_breaks_ties_low():
    assert select_best({1: 5.0, 2: 3.0, 3: 3.0}) == 2
    assert select_best({1: math.nan, 2: math.inf, 3: 7.0}) == 3
    with pytest.raises(ValueError):
        select_best({1: math.nan})


def test_next_taus_schedules_everyone_and_feeds_back_only_the_lagging():
    cfg = TemperatureConfig(lr_tau=0.01, patience=1)
    taus = {1: 1.0, 2: 1.0, 3: 1.0}
    best, moves = next_taus(taus, {1: 0, 2: 0, 3: 3}, {1: 10.0, 2: 5.0, 3: math.nan}, cfg)
    assert best == 2
    assert moves[1].tau == pytest.approx(1.0 + 0.01 * 5.0) and moves[1].feedback_applied  # fixed schedule + feedback
    assert moves[2].tau == pytest.approx(1.1) and moves[2].patience == 0  # the best only follows its schedule
    assert moves[3].tau == pytest.approx(0.9) and moves[3].patience == 3  # NaN: schedule only, counter untouched


def test_invalid_temperature_configs_are_rejected():
    with pytest.raises(ValueError, match="tau_min"):
        TemperatureConfig(tau_min=2.0, tau_max=1.0)
    with pytest.raises(ValueError, match="tau0"):
        TemperatureConfig(tau0=5.0)
