"""The generation policy by hand (no Ray, no torch): the best, the next taus by run mode, the receivers and resets,
each member's event, and what happens to a pack that failed or ran late."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from popvae.population.config import parse_config
from popvae.population.generation import (
    after_fault,
    decide,
    failure_message,
    first_taus,
    member_events,
    run_mode,
)
from popvae.population.temperature import MemberTau, next_taus

NAN = math.nan


def config(**over):
    return parse_config({"dataset": "synthetic", "members": 4, **over})


def test_the_module_imports_neither_torch_nor_ray():
    code = "import sys, popvae.population.generation; print(sorted(m for m in ('torch', 'ray') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_run_mode_follows_the_config():
    assert run_mode(config()) == "population"
    assert run_mode(config(members=1, baseline=True)) == "baseline"
    assert run_mode(config(members=1, schedule_of=2)) == "solo"


def test_population_decision_is_algorithms_2_3_with_the_broadcast_to_every_other_member():
    cfg = config()
    taus = {1: MemberTau(1.0, 0, False), 2: MemberTau(1.0, 1, False), 3: MemberTau(1.0, 0, False),
            4: MemberTau(1.0, 0, False)}
    scores = {1: 5.0, 2: 3.0, 3: 4.0, 4: 3.0}
    decision = decide(0, scores, taus, cfg)
    assert decision.best == 2  # a tie goes to the lower index
    assert decision.taus == next_taus({i: 1.0 for i in taus}, {i: t.patience for i, t in taus.items()}, scores,
                                      cfg.temperature)[1]
    assert decision.receivers == {1: 2, 3: 2, 4: 2} and decision.reset == ()


def test_non_finite_members_are_reset_and_never_win():
    decision = decide(0, {1: NAN, 2: 2.0, 3: math.inf, 4: 1.0}, first_taus(config()), config(), reset=[1, 3])
    assert decision.best == 4 and decision.reset == (1, 3)
    assert decision.taus[1].patience == 0 and not decision.taus[1].feedback_applied  # schedule only, counter kept


def test_without_the_broadcast_only_the_reset_members_receive_the_best():
    decision = decide(0, {1: NAN, 2: 2.0, 3: 3.0, 4: 1.0}, first_taus(config()), config(broadcast=False), reset=[1])
    assert decision.receivers == {1: 4} and decision.reset == (1,)


def test_baseline_anneals_and_solo_follows_the_named_schedule():
    base = config(members=1, baseline=True, temperature={"anneal_rate": 0.5})
    decision = decide(2, {1: 7.0}, first_taus(base), base)
    assert decision.best == 1 and decision.taus == {1: MemberTau(0.125, 0, False)} and decision.receivers == {}
    solo = config(members=1, schedule_of=2)  # member 2's schedule: linear increase, +0.1 per epoch (paper scale)
    assert decide(0, {1: 7.0}, {1: MemberTau(1.5, 0, False)}, solo).taus[1].tau == pytest.approx(1.6)


def test_no_finite_score_is_refused():
    with pytest.raises(ValueError, match="no member has a finite score"):
        decide(0, {1: NAN, 2: math.inf}, first_taus(config(members=2)), config(members=2))


def test_a_failed_pack_is_retried_once_then_dropped():
    assert after_fault("failed", 1, finite_so_far=True) == "retry"
    assert after_fault("failed", 2, finite_so_far=False) == "drop"


def test_a_late_pack_is_retried_only_when_nothing_finite_came_in():
    assert after_fault("late", 1, finite_so_far=True) == "drop"  # the others go on: no second wait at the barrier
    assert after_fault("late", 1, finite_so_far=False) == "retry"  # one pack (or every pack) stalled
    assert after_fault("late", 2, finite_so_far=False) == "drop"


def test_member_events_take_the_strongest_fact():
    events = member_events(range(1, 8), retried=[1, 2, 3, 7], dropped=[3], lost=[4, 5], non_finite=[2, 5, 6])
    assert events == {1: "restarted", 2: "nan_reset", 3: "dropped", 4: "restarted", 5: "restarted", 6: "nan_reset",
                      7: "restarted"}
    assert member_events([1, 2]) == {}


def test_the_failure_names_the_timeout_when_members_ran_past_it():
    assert failure_message(3, [2, 1], 5.0) == (
        "generation 3: members [1, 2] did not finish within member_timeout_s = 5 s (--timeout), again after their "
        "pack was restarted; no member produced a finite loss")
    assert failure_message(3, [], 5.0) == "generation 3: no member produced a finite loss and kept its weights"
