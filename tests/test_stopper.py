"""The plateau stopper (config `stop`, `--stop-plateau`): the pure decision (population/generation.py), and real runs
on Ray that end at a plateau, record why they ended, keep the counter across a resume, and stop the
`--compare-baseline` baseline alike; the learning curve they leave (`RunFolder.learning_curve`)."""

from __future__ import annotations

import math

import pytest

from popvae.population import generation, preflight
from popvae.population.config import ConfigError, parse_config
from popvae.population.flags import train_config
from popvae.population.run_folder import RunFolder

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}
# min_delta 0.99: only a loss below 1% of the best so far counts as an improvement, which these runs never reach, so
# the run ends exactly `plateau_generations` generations after its first.
NEVER = 0.99


def small(**over):
    base = {"dataset": "synthetic", "synthetic_size": 256, "members": 2, "epochs": 10, "batch_size": 16,
            "steps_per_epoch": 4, "model": SMALL_MODEL, "seed": 5, "curve_subset": 40,
            "stop": {"plateau_generations": 2, "min_delta": NEVER}}
    return parse_config({**base, **over})


@pytest.mark.parametrize("losses, min_delta, count", [
    ([], 0.0, 0),
    ([5.0], 0.0, 0),                      # a first finite loss is an improvement
    ([5.0, 4.0, 4.5, 4.2], 0.0, 2),       # 4.5 and 4.2 do not beat 4.0
    ([5.0, 4.0, 3.99, 3.5], 0.01, 0),     # 3.99 is 0.25% better than 4.0 (not 1%); 3.5 is
    ([5.0, 4.0, 3.99, 3.97], 0.01, 2),    # small steps count against the last improvement's best (4.0), not each other
    ([5.0, None, math.nan, math.inf], 0.0, 3),  # a missing or non-finite best never improves
    ([None, 5.0, 5.0], 0.0, 1),
    ([-2.0, -2.01, -2.1], 0.01, 0),       # relative to |best|: -2.1 beats -2.0 by 5%
])
def test_plateau_count_is_generations_since_the_last_relative_improvement(losses, min_delta, count):
    assert generation.plateau_count(losses, min_delta) == count


def test_stop_reason_budget_first_then_plateau_then_none():
    cfg = small(epochs=4, stop={"plateau_generations": 2, "min_delta": 0.0})
    assert generation.stop_reason(1, [3.0], cfg) is None
    assert generation.stop_reason(3, [3.0, 3.0, 3.1], cfg) == "plateau"
    assert generation.stop_reason(3, [3.0, 3.0, 2.9], cfg) is None
    assert generation.stop_reason(4, [3.0, 2.0, 1.0, 0.5], cfg) == "budget"
    assert generation.stop_reason(3, [3.0, 3.0, 3.1], small(epochs=4, stop=None)) is None  # off by default


def test_flags_set_the_stopper_and_the_baseline_keeps_it():
    cfg = parse_config(train_config({"dataset": "synthetic", "stop_plateau": 3, "stop_min_delta": 0.01}))
    assert cfg.stop is not None and (cfg.stop.plateau_generations, cfg.stop.min_delta) == (3, 0.01)
    assert parse_config(train_config({"stop_plateau": 3})).stop.min_delta == 0.0
    assert parse_config(train_config({})).stop is None
    assert preflight.baseline_config(cfg).stop == cfg.stop
    with pytest.raises(ConfigError, match="--stop-min-delta needs --stop-plateau"):
        train_config({"stop_min_delta": 0.01})


def test_a_run_ends_at_its_plateau_says_why_and_leaves_its_learning_curve(ray_session, tmp_path):
    from popvae.population.driver import load_run_data, run_population

    cfg = small(select_on="val_hard")
    summary = run_population(cfg, tmp_path / "run", load_run_data(cfg))
    folder = RunFolder(tmp_path / "run")
    status = folder.read_status()
    assert (status.state, status.epoch, status.stop_reason, status.since_improvement) == ("done", 3, "plateau", 2)
    assert (summary["stop_reason"], summary["epochs_done"]) == ("plateau", 3)
    assert folder.read_summary().stop_reason == "plateau" and summary["test_mse_hard"] > 0
    # select_on val_hard: the score is the validation loss with hard codes, and the best is its minimum
    rows = folder.read_history()
    for g in folder.read_lineage():
        mine = [r for r in rows if r.epoch == g.epoch]
        assert all(r.score == r.val_loss for r in mine)
        assert g.best == min(mine, key=lambda r: (r.score, r.member)).member
    # the curve: one point per generation, the best member's, against the steps spent so far
    curve = folder.learning_curve()
    assert [p.generation for p in curve] == [1, 2, 3]
    assert [p.steps_per_member for p in curve] == [4, 8, 12] and [p.member_steps_total for p in curve] == [8, 16, 24]
    for p in curve:
        best = next(r for r in rows if r.epoch == p.generation - 1 and r.is_best)
        assert (p.member, p.mse, p.mse_hard) == (best.member, best.curve_mse, best.curve_mse_hard)
        assert 0 < p.mse < 1 and 0 < p.mse_hard < 1
    with pytest.raises(ConfigError, match="ended on a plateau"):  # --epochs stays the bound; the stopper ended it
        preflight.resume_config(tmp_path / "run", 20)


def test_the_plateau_counter_survives_a_stop_and_a_resume(ray_session, tmp_path):
    from popvae.population.driver import load_run_data, run_population

    cfg = small()
    data = load_run_data(cfg)
    stop_after_two = lambda entry, status: entry["epoch"] == 1  # noqa: E731  (a stop asked for, after generation 2)
    stopped = run_population(cfg, tmp_path / "split", data, on_generation=stop_after_two)
    folder = RunFolder(tmp_path / "split")
    status = folder.read_status()
    assert (status.state, status.stop_reason, status.since_improvement) == ("stopped", "user", 1)
    assert stopped["stop_reason"] == "user" and stopped["epochs_done"] == 2
    resumed = run_population(cfg, tmp_path / "split", data, resume=True)
    # the count went on from 1: the plateau comes one generation after the resume, as in an uninterrupted run
    status = folder.read_status()
    assert (status.state, status.epoch, status.stop_reason, status.since_improvement) == ("done", 3, "plateau", 2)
    assert resumed["stop_reason"] == "plateau" and resumed["epochs_done"] == 3


def test_the_compare_baseline_baseline_stops_on_its_plateau_too(ray_session, tmp_path):
    from popvae.population import driver as runs

    cfg = small(members=2, stop={"plateau_generations": 1, "min_delta": NEVER})
    run = runs.new_run(cfg, tmp_path / "pop", compare_baseline=True)
    results = dict(runs.train_with_baseline(run, lambda r: runs.run_population(r.cfg, r.run_dir, r.data)))
    for name in ("population", "baseline"):
        assert (results[name]["stop_reason"], results[name]["epochs_done"]) == ("plateau", 2), name
    assert RunFolder(tmp_path / "pop-baseline").read_status().stop_reason == "plateau"
