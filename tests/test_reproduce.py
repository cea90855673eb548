"""`popvae reproduce`: the protocol's steps, the report's statistics, bad input, and the smoke preset on real Ray,
interrupted in the middle of a run and continued without redoing what was finished."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from popvae.cluster.cli import main
from popvae.population import folder_io
from popvae.population.config import ConfigError, parse_config
from popvae.population.contract import LineageEntry
from popvae.population.repro_report import _markdown, _verdict
from popvae.population.repro_stats import mean_ci, over_seeds, t_interval
from popvae.population.reproduce import (
    ABLATIONS,
    PRESETS,
    again_command,
    carried_path,
    check_only,
    check_out_dir,
    planned,
    reproduce,
    run_dir,
    steps_of,
    winning_member,
    with_epochs,
    with_seeds,
)
from popvae.population.run_folder import RunFolder
from popvae.population.temperature import REFERENCE_DYNAMICS, strategy_for


def test_the_protocol_runs_the_headline_comparison_first_and_every_ablation():
    steps = steps_of(PRESETS["cpu"].model_copy(update={"seeds": 1}), steps_per_pass=843, winners={0: 2})
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
    assert "winning-schedule-alone" not in {s.name for s in steps_of(PRESETS["cpu"], 843, winners={})}
    paper = {s.name: s.config for s in steps_of(PRESETS["paper"], steps_per_pass=421, winners={})}
    assert paper["baseline-equal-compute"]["steps_per_epoch"] == 8 * 421  # full passes: n times a pass per epoch
    grid = runs["fixed-tau-grid"]
    assert grid["members"] == 8 and grid["broadcast"] is False and grid.get("select_on", "val") == "val"
    assert grid["fixed_taus"][0] == 0.25 and grid["fixed_taus"][-1] == pytest.approx(16.0)
    assert np.allclose(np.diff(np.log(grid["fixed_taus"])), np.log(64) / 7)  # geometric, n values


def test_every_core_arm_runs_once_per_seed_each_its_own_folder():
    cpu = {s.name: s.config for s in steps_of(PRESETS["cpu"], 843, winners={0: 2, 1: 3}) if s.kind == "run"}
    for arm in ("population-reference", "baseline", "population-defaults", "baseline-equal-compute", "fixed-tau-grid"):
        assert [cpu[n]["seed"] for n in (arm, f"{arm}-seed1", f"{arm}-seed2")] == [0, 1, 2]
    assert cpu["winning-schedule-alone-seed1"]["schedule_of"] == 3 and "winning-schedule-alone-seed2" not in cpu
    assert "no-broadcast-seed1" not in cpu and cpu["no-broadcast"]["seed"] == 0  # the extras: the first seed only
    assert planned(PRESETS["cpu"], 843) == len(steps_of(PRESETS["cpu"], 843, winners={0: 1, 1: 1, 2: 1}))
    order = [s.name for s in steps_of(PRESETS["cpu"], 843, winners={0: 2, 1: 3, 2: 1})]  # seeds before the extras
    assert max(order.index(f"{arm}-seed2") for arm in ("population-reference", "fixed-tau-grid")) < order.index("no-broadcast")
    long = steps_of(PRESETS["cpu-long"], 421, winners={0: 5})
    assert {s.kind for s in long} == {"run"}  # the core arms only
    assert sorted(s.name for s in long) == sorted(
        ["population-reference", "baseline", "population-defaults", "baseline-equal-compute", "fixed-tau-grid",
         "winning-schedule-alone", "population-reference-seed1", "baseline-seed1", "population-reference-seed2",
         "baseline-seed2"])
    assert all(s.config["epochs"] == 10 and s.config["batch_size"] == 128 and s.config["steps_per_epoch"] is None
               for s in long if s.name != "baseline-equal-compute")
    assert all(s.config["stop"] == {"plateau_generations": 3, "min_delta": 0.001} for s in long)  # the stopper on
    assert with_seeds(PRESETS["cpu-long"], 5).seeds_of("baseline-equal-compute") == [0]
    with pytest.raises(ConfigError, match="--seeds must be between 1 and 20"):
        with_seeds(PRESETS["cpu"], 0)


def test_winning_member_counts_generations_won(tmp_path):
    folder = RunFolder(run_dir(tmp_path, "run"))
    folder.write_lineage([LineageEntry(epoch=e, best=best, best_loss=1.0, received={}, tau_before={}, tau_after={})
                          for e, best in enumerate([3, 2, 3, 2])])
    assert winning_member(tmp_path, "run") is None  # not finished
    folder_io.write_json(folder.status_path, {"state": "done"})
    folder_io.write_json(folder.summary_path, {})
    assert winning_member(tmp_path, "run") == 2  # a tie goes to the lower index
    folder_io.write_json(carried_path(tmp_path, "runs", "kept"), {"wins": {"1": 2, "4": 3}})
    assert winning_member(tmp_path, "kept") == 4  # a run carried from an earlier report: its wins are in its facts


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
    with pytest.raises(ConfigError, match=r"holds the 'smoke' preset with other settings: seeds 2 \(now 3\)"):
        check_out_dir(used, with_seeds(PRESETS["smoke"], 3))


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
    unsure["baseline"]["interval"] = "seeds"  # a t-interval over seeds measures their spread, not the test set's
    assert _verdict(unsure, "baseline").startswith("no difference the seeds can resolve")
    assert _verdict({}, "baseline") == "not measured yet"
    tiny = {"baseline": {"minus_reference": -0.00001, "ci95": [-0.00002, -0.000001]}}  # prints as 0.0000 everywhere
    assert _verdict(tiny, "baseline").startswith("no difference at this precision")


def test_the_reading_ranks_the_arms_by_hard_codes_and_says_when_that_is_not_the_relaxed_order():
    from popvae.population.repro_report import _reading

    def arm(relaxed, hard):
        return {"mean": relaxed, "hard": None if hard is None else {"mean": hard, "low": None, "high": None}}

    arms = {"population-reference": arm(0.0075, 0.0653), "baseline": arm(0.0100, 0.0124),
            "population-defaults": arm(0.0079, 0.0265), "no-feedback": arm(0.0080, None)}
    lines = _reading(arms, {})
    assert lines[1] == ("- With hard codes (one-hot argmax of every categorical; the MSE above decodes softmax(logits / "
                        "tau)), best first, means over seeds: baseline 0.0124, population-defaults 0.0265, "
                        "population-reference 0.0653. Not the relaxed order: population-reference reconstructs best "
                        "with relaxed codes (0.0075) but 5.3x worse than baseline with hard ones.")
    assert lines[2].startswith("- Against the annealed baseline")
    same = _reading({"population-reference": arm(0.0075, 0.010), "baseline": arm(0.0100, 0.012)}, {})
    assert same[1].endswith("population-reference 0.0100, baseline 0.0120.")  # the relaxed order: nothing more to say
    assert not any("hard codes" in line for line in _reading({"population-reference": arm(0.0075, 0.06)}, {}))


def test_the_interval_over_seeds_is_students_t_as_by_hand():
    mean, low, high = t_interval([0.010, 0.012, 0.014])
    half = 4.302652729911275 * 0.002 / 3 ** 0.5  # t(0.975, 2 degrees of freedom) from a table; sd = 0.002
    assert mean == pytest.approx(0.012) and low == pytest.approx(0.012 - half) and high == pytest.approx(0.012 + half)
    two = over_seeds([0.5, 0.7], per_image=[9.0, 9.0, 9.0])
    assert two["interval"] == "seeds" and two["ci95"][1] - two["mean"] == pytest.approx(12.706204736174707 * 0.1)
    one = over_seeds([0.02], per_image=[0.01, 0.02, 0.03])  # one seed: the test images' interval, within-seed
    assert one["interval"] == "within-seed" and one["ci95"] == list(mean_ci([0.01, 0.02, 0.03])[1:])


def test_bad_reproduce_input_is_one_line_and_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["reproduce", "--preset", "huge"])
    assert stop.value.code == 2
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    assert main(["reproduce", "--preset", "smoke", "--out", str(tmp_path / "busy")]) == 2
    assert main(["reproduce", "--preset", "cpu", "--dataset", "imagenet", "--out", str(tmp_path / "new")]) == 2
    assert main(["reproduce", "--preset", "cpu-long", "--seeds", "0", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "not empty and holds no reproduction" in err[-3] and "unknown dataset 'imagenet'" in err[-2]
    assert err[-1].endswith(": --seeds must be between 1 and 20, got 0")
    assert not (tmp_path / "new").exists()
    assert main(["reproduce", "--preset", "smoke", "--carry", "--out", str(tmp_path / "new")]) == 2
    assert "give --report-dir" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_smoke_reproduction_interrupted_mid_run_then_continued(ray_session, tmp_path):
    out = tmp_path / "repro"
    stopped_at = []

    def stop_no_broadcast(step, entry):
        if step == "no-broadcast":
            stopped_at.append(entry["epoch"])
            return True
        return None

    said = []
    reproduce(PRESETS["smoke"], out, on_generation=stop_no_broadcast, say=said.append)
    assert stopped_at == [1]
    assert folder_io.read_json(out / "runs" / "no-broadcast" / "status.json")["state"] == "stopped"
    first = json.loads((out / "reproduction.json").read_text())
    assert first["steps_done"] < first["steps_total"] and "no-broadcast" not in first["runs"]
    assert {"population-reference", "baseline"} <= first["runs"].keys()
    partial = (out / "reproduction.md").read_text()  # written from the arms done so far, the others named
    assert re.search(r"\| no-broadcast \| \| \| not yet run \|", partial)
    kept = [*out.glob("runs/*/best.pt"), *out.glob("evaluations/*/report.json")]
    kept = {p: p.stat().st_mtime_ns for p in kept if "no-broadcast" not in str(p)}

    report = reproduce(PRESETS["smoke"], out, say=said.append)  # continues: the stopped run resumed, nothing redone
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    rows = folder_io.read_rows(out / "runs" / "no-broadcast" / "history.parquet")
    assert sorted(r["epoch"] for r in rows) == [1] * 4 + [2] * 4
    facts = json.loads((out / "reproduction.json").read_text())
    assert facts["steps_done"] == facts["steps_total"]
    assert set(ABLATIONS) | {"unseen-population", "unseen-baseline"} <= facts["runs"].keys()
    counters = [re.match(r"\[(\d+)/(\d+)\]", line) for line in said]
    counters = [(int(m[1]), int(m[2])) for m in counters if m]
    assert {total for _, total in counters} == {facts["steps_total"]} == {planned(PRESETS["smoke"], 115)}
    assert [i for i, _ in counters] == sorted(i for i, _ in counters)  # the stopped step is counted again when continued
    # seeds: the population and the baseline twice, each seed its own run; their difference paired by seed
    assert {"population-reference-seed1", "baseline-seed1"} <= facts["runs"].keys()
    assert facts["runs"]["baseline-seed1"]["seed"] == 1 and "population-defaults-seed1" not in facts["runs"]
    base = facts["arms"]["baseline"]
    assert base["interval"] == "seeds" and base["seeds"] == 2
    assert base["ci95"] == pytest.approx(list(t_interval(list(base["per_seed"].values()))[1:]))
    diff = facts["differences"]["baseline"]
    per_seed = [facts["runs"][b]["test_mse"] - facts["runs"][r]["test_mse"]
                for b, r in (("baseline", "population-reference"), ("baseline-seed1", "population-reference-seed1"))]
    assert diff["paired_seeds"] == [0, 1] and diff["minus_reference"] == pytest.approx(np.mean(per_seed), abs=1e-7)
    assert facts["differences"]["no-feedback"]["interval"] == "within-seed"
    # the fixed-tau grid: n members, each at its own tau all run long, the best picked on validation loss
    grid = folder_io.read_rows(out / "runs" / "fixed-tau-grid" / "history.parquet")
    taus = PRESETS["smoke"].grid_taus()
    assert sorted({(r["member"], round(r["tau"], 6)) for r in grid}) == [(i, round(t, 6)) for i, t in enumerate(taus, 1)]
    assert {r["strategy"] for r in grid} == {"fixed"}
    assert facts["runs"]["fixed-tau-grid"]["member_steps"] == 4 * 2 * 2  # n members x generations x steps: its compute
    assert {"robust-vae-kl", "robust-robust-gmm-dae", "unseen-population"} <= facts["evaluations"].keys()
    for name, run in facts["runs"].items():
        low, high = run["test_mse_ci95"]
        assert low <= run["test_mse"] <= high, name
    winner = winning_member(out, "population-reference")
    solo = folder_io.read_rows(out / "runs" / "winning-schedule-alone" / "history.parquet")
    assert {r["strategy"] for r in solo} == {strategy_for(winner)}
    text = report.read_text()
    for section in ("## Table 1", "## What the population adds", "## Figure 4", "## Tables 2-3", "## Figure 7",
                    "## Figure 9", "## Robust autoencoders"):
        assert section in text
    assert "not yet run" not in text and f"--out {out}" in text and "t over 2 seeds" in text and "within-seed" in text
    for table in ("### FGSM (Table 2)", "### PGD (Table 3)"):  # rows on the synthetic set too (no paper numbers)
        rows = text.split(table)[1].split("\n\n")[1].splitlines()[2:]
        assert [float(r.split("|")[1]) for r in rows] == [0.3, 0.1, 0.0], table
    precisions = {run["precision"] for run in facts["runs"].values()}  # each run's resolved precision, in the report
    assert precisions <= {"fp32", "bf16"} and f"precision {', '.join(sorted(precisions))}." in text
    pictures = re.findall(r"\]\(([^)]+\.png)\)", text)
    assert {"ablations.png", "tau.png", "learning_curves.png", "figure4.png", "purification.png", "patches.png"} <= \
        set(pictures)
    # the convergence instruments: every run had the stopper, each arm's curve and its hard-code MSE are reported
    assert all(RunFolder(out / "runs" / name).read_config().stop is not None for name in facts["runs"])
    assert all(len(run["curve"]) == run["epochs_trained"] and run["stop_reason"] in ("budget", "plateau")
               for run in facts["runs"].values())
    hard = facts["arms"]["baseline"]["hard"]
    assert hard["mean"] == pytest.approx(np.mean([facts["runs"][n]["test_mse_hard"] for n in ("baseline", "baseline-seed1")]))
    assert "hard codes, mean [95 % CI over seeds]" in text
    assert all((out / p).is_file() for p in pictures)

    before = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.is_file()}
    report.unlink()
    assert reproduce(PRESETS["smoke"], out, report_only=True).read_text() == text  # rewritten, nothing trained
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*") if p.is_file()} == before

    # The run folders lost (a new machine): a new --out given this report carries every finished step, runs nothing.
    (tmp_path / "report").mkdir()
    for name in ("reproduction.json", "scores"):
        (shutil.copytree if name == "scores" else shutil.copy)(out / name, tmp_path / "report" / name)
    said.clear()
    with pytest.raises(ConfigError, match="give --carry"):  # without it, the report would be rewritten without them
        reproduce(PRESETS["smoke"], tmp_path / "fresh", tmp_path / "report", report_only=True)
    assert not (tmp_path / "fresh").exists()
    again = reproduce(PRESETS["smoke"], tmp_path / "new", tmp_path / "report", say=said.append, carry=True).read_text()
    assert said[0].startswith("carried from") and not any(re.match(r"\[\d+/", line) for line in said)
    assert not (tmp_path / "new" / "runs").exists() and not (tmp_path / "new" / "robust").exists()
    kept = json.loads((tmp_path / "report" / "reproduction.json").read_text())
    assert kept["steps_done"] == facts["steps_total"] and kept["evaluations"] == facts["evaluations"]
    assert kept["step_seconds"] == facts["step_seconds"]  # the time every carried step took, in the wall time
    assert kept["wall_seconds"] == pytest.approx(sum(facts["step_seconds"].values()))
    assert all(kept["runs"][n] == r | {"carried": True} for n, r in facts["runs"].items())
    assert kept["arms"] == facts["arms"] and kept["differences"] == facts["differences"]  # per-image scores carried
    assert all(kept["robust"][m] == r | {"carried": True} for m, r in facts["robust"].items())
    assert "Carried from the earlier report" in again and again.split("## Table 1")[1] == text.split("## Table 1")[1]
    assert (tmp_path / "report" / "tau.png").stat().st_size > 0


def test_the_command_that_continues_names_every_setting_that_differs_from_the_preset(tmp_path):
    assert again_command(PRESETS["cpu"], tmp_path / "o", None) == \
        f"popvae reproduce --preset cpu --dataset fashion-mnist --out {tmp_path / 'o'}"
    assert again_command(with_seeds(PRESETS["cpu-long"], 5), tmp_path / "o", tmp_path / "r") == \
        f"popvae reproduce --preset cpu-long --dataset fashion-mnist --seeds 5 --out {tmp_path / 'o'} " \
        f"--report-dir {tmp_path / 'r'}"


def test_a_core_only_preset_reports_from_nothing_yet_naming_every_missing_arm():
    p = PRESETS["cpu-long"]
    facts = {"protocol": p.model_dump(mode="json"), "machine": {"cpus": 2, "device": "cpu", "torch": "x"},
             "wall_seconds": 0.0, "steps_done": 0, "steps_total": planned(p, 421), "command": "popvae reproduce ...",
             "runs": {}, "arms": {}, "differences": {}, "evaluations": {}, "robust": {}}
    text = "\n".join(_markdown(facts, {}))
    assert "Steps finished: 0 of 10; wall time so far" in text
    assert all(re.search(rf"\| {arm} \| \| \| not yet run \|", text) for arm in ABLATIONS)
    assert "## Tables 2-3" not in text and "core arms only" in text
    assert "or fewer where the plateau stopper ended a run (3 generations without a best 0.1 % better)" in text
    assert "training seeds 3 (0, 1, 2) for the population and the annealed baseline, 1 for the other arms" in text


def test_a_step_that_fails_still_leaves_the_report_of_what_finished(tmp_path, monkeypatch):
    """The report is drawn at most once a minute while steps run, so a failure must draw it on the way out."""
    import popvae.population.reproduce as module

    def fails(step, *args):
        raise RuntimeError(f"{step.name} broke")

    monkeypatch.setattr(module, "_execute", fails)
    with pytest.raises(RuntimeError, match="population-reference broke"):
        reproduce(PRESETS["smoke"], tmp_path / "repro")
    text = (tmp_path / "repro" / "reproduction.md").read_text()
    assert re.search(r"\| population-reference \| \| \| not yet run \|", text)
    assert "Steps finished: 0 of" in text


def test_a_report_whose_runs_cannot_be_carried_is_not_overwritten(tmp_path):
    report = tmp_path / "report"
    report.mkdir()
    facts = {"protocol": PRESETS["smoke"].model_dump(mode="json"), "runs": {"baseline": {"wins": {"1": 2}}}}
    (report / "reproduction.json").write_text(json.dumps(facts))  # a finished run, but no per-image scores beside it
    with pytest.raises(ConfigError, match="--carry cannot take them"):
        reproduce(PRESETS["smoke"], tmp_path / "out", report, report_only=True, carry=True)
    with pytest.raises(ConfigError, match="give --carry"):
        reproduce(PRESETS["smoke"], tmp_path / "other", report, report_only=True)
    assert json.loads((report / "reproduction.json").read_text()) == facts and not (tmp_path / "other").exists()


def test_only_the_table_1_steps_at_the_epochs_asked_and_the_report_names_the_rest(ray_session, tmp_path):
    """What a GPU's few minutes allow of the paper preset: `--only population-reference,baseline --epochs N`."""
    protocol = with_epochs(PRESETS["smoke"], 1)
    said: list[str] = []
    report = reproduce(protocol, tmp_path / "out", only=check_only(protocol, "population-reference, baseline"),
                       say=said.append)
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == ["baseline", "population-reference"]
    assert [line.split()[0] for line in said if line.startswith("[")] == ["[1/2]", "[2/2]"]
    facts = json.loads((tmp_path / "out" / "reproduction.json").read_text())
    assert {name: run["epochs_trained"] for name, run in facts["runs"].items()} == {"population-reference": 1, "baseline": 1}
    assert " --epochs 1 " in facts["command"] and facts["steps_done"] == 2 < facts["steps_total"]
    text = report.read_text()
    assert "Budget of every GS-VAE run: 1 generations (epochs)" in text and "| no-broadcast | | | not yet run |" in text
    said.clear()  # a winning schedule alone cannot run before its seed's population: said, nothing trained
    reproduce(protocol, tmp_path / "alone", only=check_only(protocol, "winning-schedule-alone"), say=said.append)
    assert said == ["not run: winning-schedule-alone: a winning schedule needs its seed's population-reference done "
                    "first"] and not (tmp_path / "alone" / "runs").exists()
    with pytest.raises(ConfigError, match=r"not one: 'table-1'; they are: population-reference, baseline, "):
        check_only(protocol, "population-reference,table-1")
    with pytest.raises(ConfigError, match="--epochs must be between 1 and"):
        with_epochs(protocol, 0)
