"""The robust section at the papers' budgets: the preset's settings reach the trainer, the plateau stopper, resuming a
job after an interruption, and the smoke preset end to end on the worker pool with its report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from popvae.cluster.cli import main
from popvae.models.dataset_loading import load_split
from popvae.models.registry import build
from popvae.population.folder_io import read_json, read_rows
from popvae.population.methods import method_config
from popvae.population.robust import make_trainer, train_job
from popvae.population.robust_converged import PRESETS, arms, queued, run_section, training_jobs
from popvae.population.robust_converged_report import compare, earlier_results, markdown, t_interval
from popvae.population.robust_presets import PAPER, PAPER_SEEDS, Schedule
from popvae.population.run_folder import RunFolder


def test_a_job_stops_on_a_validation_plateau(tmp_path) -> None:
    train, test = load_split("synthetic", "train", synthetic_size=64), load_split("synthetic", "test", synthetic_size=64)
    schedule = Schedule(batch_size=16, epochs=5, steps_per_epoch=1, stop_patience=1, min_delta=0.5)
    metrics = train_job("gmm-dae", train, test, tmp_path / "job", 5, 16, 1, 0, "cpu", overrides={"lr": 1e-9},
                        schedule=schedule)  # lr 1e-9: the validation loss cannot improve by half
    assert metrics["epochs_trained"] == 2 and metrics["stopped_on_plateau"] and metrics["best_epoch"] in (1, 2)
    assert [r["epoch"] for r in read_rows(tmp_path / "job" / "history.parquet")] == [1, 2]


def test_paper_preset_reaches_the_optimizer_and_scheduler_as_stated() -> None:
    section = PRESETS["paper"]
    job = {j["id"]: j for j in training_jobs(section, Path("/nonexistent"))}
    assert {j["method"] for j in job.values()} == set(section.methods)
    assert sorted(i for i in job if i.startswith("robust-gmm-dae")) == ["robust-gmm-dae-s0", "robust-gmm-dae-s1",
                                                                         "robust-gmm-dae-s2"]
    assert sum(1 for m, _ in arms(section) if m == "raven") == 1 and PAPER_SEEDS["vae-kl"] == 3
    order = [j["id"] for j in queued(section, list(job.values()))]  # the MLP-encoder methods first, -lat twins last
    assert order[:7] == [f"{m}-s{s}" for m in ("gmm-dae", "robust-gmm-dae") for s in range(3)] + ["vae-kl-s0"]
    assert all(i.endswith("-lat-s0") for i in order[-4:]) and len(order) == len(job)
    robust = job["robust-gmm-dae-s0"]
    assert (robust["batch_size"], robust["epochs"]) == (100, 100)
    family, config = method_config("robust-gmm-dae", (1, 32, 32), robust["overrides"])
    assert (config.coupling, config.latent_dim, config.modes, config.mode_scale, config.arch) == (0.95, 10, 10, 10.0, "mlp")
    optimizer, scheduler = make_trainer(build(family, config), Schedule.model_validate(robust["schedule"]))
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["lr"] == 0.002
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.factor, scheduler.patience, scheduler.mode) == (0.1, 5, "min")
    lu_chen = job["dae-swt-lat-s0"]
    family, config = method_config("dae-swt-lat", (1, 32, 32), lu_chen["overrides"])
    assert (lu_chen["batch_size"], config.latent_dim, config.latent_adv) == (64, 30, True)
    assert tuple(config.widths) == (32, 64, 128, 64)
    optimizer, scheduler = make_trainer(build(family, config), Schedule.model_validate(lu_chen["schedule"]))
    assert optimizer.param_groups[0]["lr"] == 1e-3 and scheduler is None
    family, config = method_config("raven", (1, 32, 32), job["raven-s0"]["overrides"])
    assert isinstance(make_trainer(build(family, config), PAPER["raven"][1])[0], torch.optim.RAdam)


@pytest.mark.parametrize("method", ["gmm-dae", "dae-mmd-lat"])  # -lat: its decoder's own Adam resumes too
def test_schedule_decays_the_lr_and_an_interrupted_job_resumes_as_if_uninterrupted(method: str, tmp_path) -> None:
    train, test = load_split("synthetic", "train", synthetic_size=64), load_split("synthetic", "test", synthetic_size=64)
    overrides = {**PAPER[method][0], "lr": 0.002}
    schedule = Schedule(batch_size=16, epochs=3, steps_per_epoch=2, lr_decay="plateau", decay_patience=0,
                        decay_factor=0.5, stop_patience=None, min_delta=0.0)
    args = dict(epochs=3, batch_size=16, steps_per_epoch=2, seed=3, device="cpu", overrides=overrides, schedule=schedule)
    whole = train_job(method, train, test, tmp_path / "whole", **args, precision="fp32")

    def stop_after_two(status: dict) -> None:
        if status["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_job(method, train, test, tmp_path / "cut", **args, on_epoch=stop_after_two, precision="fp32")
    assert [r["epoch"] for r in read_rows(tmp_path / "cut" / "history.parquet")] == [1, 2]
    resumed = train_job(method, train, test, tmp_path / "cut", **args, precision="auto")  # auto: as the job began
    assert resumed["test_mse"] == whole["test_mse"] and resumed["epochs_trained"] == 3
    assert read_json(tmp_path / "cut" / "config.json")["precision"] == "fp32"
    rows = read_rows(tmp_path / "whole" / "history.parquet")
    assert rows == [{**r, "seconds": rows[i]["seconds"]} for i, r in enumerate(read_rows(tmp_path / "cut" / "history.parquet"))]
    assert rows[0]["lr"] == 0.002 and all(math.isfinite(r["val_mse"]) for r in rows)
    best, lr = math.inf, 0.002  # ReduceLROnPlateau, patience 0: every epoch that does not improve halves the next lr
    for row in rows:
        assert row["lr"] == pytest.approx(lr)
        best, lr = (row["val_mse"], lr) if row["val_mse"] < best * (1 - 1e-4) else (best, lr * 0.5)
    config = read_json(tmp_path / "whole" / "config.json")
    assert config["batch_size"] == 16 and config["schedule"]["lr_decay"] == "plateau" and config["model"]["lr"] == 0.002


def test_t_interval_and_compare() -> None:
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 4.302653 / math.sqrt(3)) and high > 3
    assert math.isnan(t_interval([1.0])[1])
    assert compare([0.1, 0.11, 0.12], [0.5, 0.51, 0.52], higher_is_better=False).startswith("holds")
    assert compare([0.5, 0.51, 0.52], [0.1, 0.11, 0.12], higher_is_better=False).startswith("reversed")
    assert compare([0.1, 0.5, 0.3], [0.2, 0.4, 0.35], higher_is_better=True).startswith("not resolved")
    assert "one seed" in compare([0.1], [0.2], higher_is_better=False)


def test_smoke_section_runs_end_to_end_and_continues(ray_session, tmp_path) -> None:
    out, report_dir = tmp_path / "run", tmp_path / "report"
    report = run_section(PRESETS["smoke"], out, report_dir, num_cpus=2)
    text = report.read_text()
    assert "Complete." in text and "## Table 1" in text and "## Table 3" in text and "AADDC" in text
    assert "Fréchet distance (popvae CNN features)" in text and "RAVEN beats the VAE" in text
    assert "| vae-kl | 2 | 1 |" in text  # two seeds of the VAE in Table 1
    assert "Command: `popvae robust --preset smoke" in text
    assert (report_dir / "learning_curves.png").stat().st_size > 0
    facts = json.loads((report_dir / "robust-converged.json").read_text())
    assert facts["complete"] and len(facts["methods"]["vae-kl"]["seeds"]) == 2
    seconds = [s["metrics"]["train_seconds"] for s in facts["methods"]["vae-kl"]["seeds"].values()]
    assert f"| {'/'.join(f'{x / 3600:.2f}' for x in seconds)} |" in text  # each seed's training wall time
    on_fashion = "\n".join(markdown(facts | {"section": facts["section"] | {"dataset": "fashion-mnist"}}))
    assert " (0.22) |" in on_fashion  # the paper's Table 1 beside ours (Robust GMM-DAE, latent attack, L2 1)
    assert "| 64.89 |" in on_fashion and "80.65 / 59.15" in on_fashion  # its FID and Table 3
    done = RunFolder(out).job("robust-gmm-dae-s0")
    first = done.status_path.read_bytes()
    assert read_json(done.config_path)["model"]["coupling"] == 0.95
    # Run again: every job is done, nothing is retrained, the report is rewritten the same.
    assert main(["robust", "--preset", "smoke", "--run-dir", str(out), "--report-dir", str(report_dir)]) == 0
    assert done.status_path.read_bytes() == first
    # A missing arm makes the report PARTIAL and names it.
    (out / "evaluations" / "raven-s0" / "report.json").unlink()
    assert main(["robust", "--preset", "smoke", "--run-dir", str(out), "--report-dir", str(report_dir),
                 "--report-only"]) == 0
    assert "PARTIAL: missing raven-s0 (attacks)" in (report_dir / "robust-converged.md").read_text()
    # The run folder lost (a new machine): the report's finished jobs are carried, only raven-s0 is trained again.
    partial = json.loads((report_dir / "robust-converged.json").read_text())
    assert main(["robust", "--preset", "smoke", "--run-dir", str(tmp_path / "new"), "--report-dir", str(report_dir),
                 "--report-only"]) == 2  # without --carry the report would be rewritten without its finished jobs
    assert not (tmp_path / "new").exists()
    assert main(["robust", "--preset", "smoke", "--run-dir", str(tmp_path / "new"), "--report-dir", str(report_dir),
                 "--carry"]) == 0
    assert sorted(p.name for p in (tmp_path / "new" / "jobs").iterdir()) == ["evaluation-raven-s0", "raven-s0"]
    again = json.loads((report_dir / "robust-converged.json").read_text())
    assert again["complete"] and again["methods"]["vae-kl"]["seeds"] == {
        k: v | {"carried": True} for k, v in partial["methods"]["vae-kl"]["seeds"].items()}
    assert "carried" not in again["methods"]["raven"]["seeds"]["0"]
    text = (report_dir / "robust-converged.md").read_text()
    assert "Complete." in text and "not trained again): vae-kl-s0, vae-kl-s1, robust-gmm-dae-s0." in text
    assert earlier_results(PRESETS["smoke"], report_dir).keys() == {"vae-kl-s0", "vae-kl-s1", "robust-gmm-dae-s0", "raven-s0"}
    assert earlier_results(PRESETS["smoke"].model_copy(update={"precision": "fp32"}), report_dir) == {}  # other settings


def test_preset_rejects_flags_it_sets(tmp_path, capsys) -> None:
    assert main(["robust", "--preset", "paper", "--epochs", "3", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--epochs cannot go with --preset" in capsys.readouterr().err
    assert main(["robust", "--run-dir", str(tmp_path / "r")]) == 2
    assert "give --methods" in capsys.readouterr().err
    assert main(["robust", "--preset", "smoke", "--workers", "0", "--run-dir", str(tmp_path / "r")]) == 2
    assert "--workers" in capsys.readouterr().err
    assert main(["robust", "--preset", "smoke", "--carry", "--run-dir", str(tmp_path / "r")]) == 2
    assert "give --report-dir" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
