"""`popvae reproduce`: the protocol's steps, the report's statistics, bad input, and the smoke preset on real Ray,
interrupted in the middle of a run and continued without redoing what was finished."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from popvae.cluster.cli import main
from popvae.population import folder_io
from popvae.population.config import ConfigError, parse_config
from popvae.population.contract import LineageEntry
from popvae.population.reproduce import PRESETS, check_out_dir, reproduce, steps_of, winning_member
from popvae.population.reproduction import ABLATIONS, _verdict, mean_ci
from popvae.population.run_folder import RunFolder
from popvae.population.temperature import REFERENCE_DYNAMICS, strategy_for


def test_the_protocol_runs_the_headline_comparison_first_and_every_ablation():
    steps = steps_of(PRESETS["cpu"], steps_per_pass=843, winner=2)
    names = [(s.kind, s.name) for s in steps]
    assert names[:2] == [("run", "population-reference"), ("run", "baseline")]
    assert len(set(names)) == len(names)
    runs = {s.name: s.config for s in steps if s.kind == "run"}
    for config in runs.values():
        parse_config(config)  # every step is a valid run
    ref = runs["population-reference"]
    assert (ref["members"], ref["select_on"], ref["temperature"]) == (8, "train", REFERENCE_DYNAMICS)
    assert runs["no-feedback"]["temperature"] == REFERENCE_DYNAMICS | {"lr_tau": 0.0}
    assert runs["no-broadcast"]["broadcast"] is False and runs["no-broadcast"]["temperature"] == REFERENCE_DYNAMICS
    assert runs["baseline-equal-compute"]["steps_per_epoch"] == 8 * 30 and runs["baseline"]["steps_per_epoch"] == 30
    assert runs["winning-schedule-alone"]["schedule_of"] == 2 and runs["winning-schedule-alone"]["members"] == 1
    assert {f"population-n{n}" for n in (1, 2, 4)} <= runs.keys() and "population-n8" not in runs
    assert runs["unseen-population"]["exclude_classes"] == [2, 3] == runs["unseen-baseline"]["exclude_classes"]
    assert "winning-schedule-alone" not in {s.name for s in steps_of(PRESETS["cpu"], 843, winner=None)}
    paper = {s.name: s.config for s in steps_of(PRESETS["paper"], steps_per_pass=421, winner=None)}
    assert paper["baseline-equal-compute"]["steps_per_epoch"] == 8 * 421  # full passes: n times a pass per epoch


def test_winning_member_counts_generations_won(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.write_lineage([LineageEntry(epoch=e, best=best, best_loss=1.0, received={}, tau_before={}, tau_after={})
                          for e, best in enumerate([3, 2, 3, 2])])
    assert winning_member(folder.path) is None  # not finished
    folder_io.write_json(folder.status_path, {"state": "done"})
    folder_io.write_json(folder.summary_path, {})
    assert winning_member(folder.path) == 2  # a tie goes to the lower index


def test_a_folder_of_another_preset_or_with_other_files_is_refused(tmp_path):
    check_out_dir(tmp_path / "new", PRESETS["cpu"])
    used = tmp_path / "used"
    folder_io.write_json(used / "protocol.json", PRESETS["smoke"].model_dump(mode="json"))
    check_out_dir(used, PRESETS["smoke"])  # the same protocol: continued
    with pytest.raises(ConfigError, match="holds the 'smoke' preset on synthetic"):
        check_out_dir(used, PRESETS["cpu"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no reproduction"):
        check_out_dir(tmp_path / "other", PRESETS["cpu"])


def test_intervals_and_the_reading_they_give():
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 1.96 * np.std([1, 2, 3, 4], ddof=1) / 2
    assert mean == 2.5 and low == pytest.approx(2.5 - half) and high == pytest.approx(2.5 + half)
    better = {"baseline": {"minus_reference": -0.002, "ci95": [-0.003, -0.001]}}
    worse = {"baseline": {"minus_reference": 0.002, "ci95": [0.001, 0.003]}}
    unsure = {"baseline": {"minus_reference": 0.001, "ci95": [-0.001, 0.003]}}
    assert _verdict(better, "baseline").startswith("baseline is better than the reference population by 0.0020")
    assert _verdict(worse, "baseline").startswith("the reference population is better than baseline by 0.0020")
    assert _verdict(unsure, "baseline").startswith("no difference the test set can resolve")
    assert _verdict({}, "baseline") == "not measured yet"


def test_bad_reproduce_input_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "--preset", "huge"])
    assert stop.value.code == 2
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "busy")]) == 2
    assert main(["reproduce", "--preset", "cpu", "--dataset", "imagenet", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "not empty and holds no reproduction" in err[-2] and "unknown dataset 'imagenet'" in err[-1]
    assert not (tmp_path / "new").exists()


def test_smoke_reproduction_interrupted_mid_run_then_continued(ray_session, tmp_path):
    out = tmp_path / "repro"
    stopped_at = []

    def stop_no_broadcast(step, entry):
        if step == "no-broadcast":
            stopped_at.append(entry["epoch"])
            return True
        return None

    reproduce(PRESETS["smoke"], out, on_generation=stop_no_broadcast)
    assert stopped_at == [0]
    assert folder_io.read_json(out / "runs" / "no-broadcast" / "status.json")["state"] == "stopped"
    first = json.loads((out / "reproduction.json").read_text())
    assert first["steps_done"] < first["steps_total"] and "no-broadcast" not in first["runs"]
    assert {"population-reference", "baseline"} <= first["runs"].keys()
    kept = [*out.glob("runs/*/best.pt"), *out.glob("evaluations/*/report.json")]
    kept = {p: p.stat().st_mtime_ns for p in kept if "no-broadcast" not in str(p)}

    report = reproduce(PRESETS["smoke"], out)  # continues: the stopped run is resumed, nothing finished is redone
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    rows = folder_io.read_rows(out / "runs" / "no-broadcast" / "history.parquet")
    assert sorted(r["epoch"] for r in rows) == [0] * 4 + [1] * 4
    facts = json.loads((out / "reproduction.json").read_text())
    assert facts["steps_done"] == facts["steps_total"]
    assert set(ABLATIONS) | {"population-n1", "population-n2", "unseen-population", "unseen-baseline"} <= facts["runs"].keys()
    assert {"robust-vae-kl", "robust-robust-gmm-dae", "unseen-population"} <= facts["evaluations"].keys()
    for name, run in facts["runs"].items():
        low, high = run["test_mse_ci95"]
        assert low <= run["test_mse"] <= high, name
    winner = winning_member(out / "runs" / "population-reference")
    solo = folder_io.read_rows(out / "runs" / "winning-schedule-alone" / "history.parquet")
    assert {r["strategy"] for r in solo} == {strategy_for(winner)}
    text = report.read_text()
    for section in ("## Table 1", "## What the population adds", "## Figure 4", "## Tables 2-3", "## Figure 7",
                    "## Figure 9", "## Robust autoencoders"):
        assert section in text
    assert "not run yet" not in text
    precisions = {run["precision"] for run in facts["runs"].values()}  # each run's resolved precision, in the report
    assert precisions <= {"fp32", "bf16"} and f"precision {', '.join(sorted(precisions))}." in text
    pictures = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert {"ablations.png", "tau.png", "figure4.png", "purification.png", "patches.png"} <= set(pictures)
    assert all((out / p).is_file() for p in pictures)

    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.is_file()}
    report.unlink()
    assert reproduce(PRESETS["smoke"], out, report_only=True).read_text() == text  # rewritten, nothing trained
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.is_file()} == before
