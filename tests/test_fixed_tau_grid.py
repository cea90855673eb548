"""The fixed-tau grid run mode (`fixed_taus`, the reproduction's random search at equal compute), by hand: each member
keeps its own tau, nobody receives weights but a reset member, and the config refuses what the mode cannot mean."""

from __future__ import annotations

import math
import re

import pytest

from popvae.population.config import ConfigError, parse_config
from popvae.population.generation import decide, first_taus, run_mode
from popvae.population.temperature import MemberTau


def grid(**over):
    return parse_config({"dataset": "synthetic", "members": 3, "broadcast": False, "fixed_taus": [0.25, 2.0, 16.0],
                         "temperature": {"tau_max": 16.0}, **over})


def test_every_member_keeps_its_own_tau_and_the_best_is_the_lowest_score():
    cfg = grid()
    assert run_mode(cfg) == "grid"
    taus = first_taus(cfg)
    assert taus == {1: MemberTau(0.25, 0, False), 2: MemberTau(2.0, 0, False), 3: MemberTau(16.0, 0, False)}
    decision = decide(4, {1: 3.0, 2: 1.0, 3: math.nan}, taus, cfg, reset=[3])
    assert decision.best == 2 and decision.taus == taus  # no schedule, no feedback, at any epoch
    assert decision.receivers == {3: 2} and decision.reset == (3,)  # only the diverged member loads the best


@pytest.mark.parametrize("over, says", [
    ({"fixed_taus": [1.0, 2.0]}, "one tau per member (3)"),
    ({"broadcast": True}, "broadcast false"),
    ({"fixed_taus": [1.0, 2.0, 2e6]}, "temperatures must be at most"),
    ({"fixed_taus": [1.0, 0.0, 2.0]}, "greater than 0"),
])
def test_a_grid_the_mode_cannot_mean_is_refused(over, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        grid(**over)
