"""What the command line hands to the population layer, run for real on the session's Ray: the population then
the baseline on its budget (`--compare-baseline`), and a robust plan run under the folder's lock."""

from __future__ import annotations

import json

from popvae.models.dataset_loading import synthetic
from popvae.population import driver
from popvae.population.config import parse_config
from popvae.population.folder_lock import is_held
from popvae.population.jobs import run_robust
from popvae.population.plans import plan_robust

SMALL_MODEL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}


def test_train_with_baseline_trains_both_on_one_budget_and_draws_them_together(ray_session, tmp_path):
    cfg = parse_config({"dataset": "synthetic", "synthetic_size": 128, "members": 2, "epochs": 1, "batch_size": 16,
                        "steps_per_epoch": 2, "val_size": 16, "model": SMALL_MODEL})
    run = driver.new_run(cfg, tmp_path / "pop", compare_baseline=True)
    trained = []

    def train(one: driver.Run) -> dict:
        trained.append(one.run_dir.name)
        return driver.train_run(one)

    results = driver.train_with_baseline(run, train)
    assert [name for name, _ in results] == ["population", "baseline"] and trained == ["pop", "pop-baseline"]
    baseline_cfg = json.loads((tmp_path / "pop-baseline" / "config.json").read_text())
    assert baseline_cfg["baseline"] is True and baseline_cfg["members"] == 1
    population_cfg = json.loads((tmp_path / "pop" / "config.json").read_text())  # as resolved (precision, pack_mode)
    assert {k: v for k, v in baseline_cfg.items() if k not in ("baseline", "members")} == \
        {k: v for k, v in population_cfg.items() if k not in ("baseline", "members")}
    assert results[1][1]["baseline"] is True and (tmp_path / "pop" / "plots" / "tau.png").is_file()


def test_run_robust_writes_its_config_once_runs_no_more_workers_than_jobs_and_lets_the_folder_go(ray_session, tmp_path,
                                                                                                   monkeypatch):
    monkeypatch.setenv("POPVAE_CACHE", str(tmp_path / "cache"))
    plan = plan_robust("vae-kl", tmp_path / "r", dataset="synthetic", epochs=1, batch_size=16, steps_per_epoch=2, seed=1)
    said: list[str] = []
    results = run_robust(plan, synthetic(64, seed=0), synthetic(32, seed=1), workers=8, say=said.append)
    assert results["vae-kl"]["state"] == "done", results
    assert said == [f"1 jobs on 1 workers; status in {tmp_path / 'r' / 'jobs'}/<method>/status.json"]
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == plan["config"]
    assert is_held(tmp_path / "r") is False  # held while the jobs ran, let go after
