"""The reproduction's report: reproduction.json, reproduction.md and its plots, from whatever steps are finished.

Each number is read back from the run folders and evaluation reports `population.reproduce` left, printed beside
the paper's (`population.paper_numbers`, with its table) and with a 95 % interval (`population.repro_stats`): an arm
run with several seeds gives its mean over seeds with a t-interval, and its difference from the reference population
is paired by seed; an arm with one seed gives the interval over test images (paired per image for a difference),
labelled within-seed; Wilson for accuracies. A partial run writes the same report, the missing arms "not yet run".
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import numpy as np

from popvae.models.atomic import atomic_write
from popvae.population import folder_io
from popvae.population import paper_numbers as paper
from popvae.population.repro_plots import plots
from popvae.population.repro_stats import mean_ci, over_seeds, t_interval
from popvae.population.reproduce import (
    ABLATIONS,
    HEADLINE,
    Protocol,
    Step,
    again_command,
    carried,
    evaluation_dir,
    generation_wins,
    planned,
    robust_done,
    robust_job_dir,
    run_dir,
    run_done,
    seeded,
    step_done,
)
from popvae.population.run_folder import RunFolder


def per_image_scores(out: Path, name: str, test: Any) -> np.ndarray:
    """Each test image's MSE under a finished run's best model, cached in OUT/scores/ (each run is scored once)."""
    path = out / "scores" / f"{name}.npy"
    if path.is_file():
        return np.load(path)
    from popvae.population.training import per_image_mse, pick_device

    model, _ = RunFolder(run_dir(out, name)).read_best()
    scores = per_image_mse(model, test.images, pick_device("auto"))
    atomic_write(path, lambda fh: np.save(fh, scores))
    return scores


def _run_facts(out: Path, step: Step, test: Any, steps_per_pass: int) -> dict[str, Any]:
    folder = run_dir(out, step.name)
    run = RunFolder(folder)
    summary = run.read_summary()
    rows = run.read_history_rows()
    lineage = [g.model_dump() for g in run.read_lineage()]
    cfg = step.config
    steps = cfg.get("steps_per_epoch") or steps_per_pass
    mse, low, high = mean_ci(per_image_scores(out, step.name, test))
    wins = generation_wins(folder)
    return {
        "what": step.what, "seed": cfg["seed"], "members": cfg["members"], "epochs": cfg["epochs"],
        "epochs_trained": len(lineage), "steps_per_epoch": steps,
        # every member's optimizer steps together: the run's compute
        "member_steps": cfg["members"] * len(lineage) * steps,
        "test_mse": mse, "test_mse_ci95": [low, high], "test_images": summary.test_images,
        "best_member": summary.best_member, "best_tau": summary.best_tau,
        "max_tau": max(r["tau"] for r in rows), "wins": {str(k): v for k, v in sorted(wins.items())},
        "train_seconds": sum(_generation_seconds(g) for g in lineage),
        # the median generation: robust to a few generations slowed by other work on the machine
        "generation_seconds_median": float(np.median([_generation_seconds(g) for g in lineage])),
        "events": summary.events,
        "test_mse_hard": summary.test_mse_hard, "stop_reason": summary.stop_reason,
        # the learning curve: per generation, the best member's MSE on the fixed validation subset against compute
        "curve": [point.model_dump() for point in run.learning_curve()],
        "precision": summary.precision,
    } | ({"tau_rows": [{k: r[k] for k in TAU_COLUMNS} for r in rows]} if step.name in TAU_PLOTTED else {})


TAU_PLOTTED = (HEADLINE, "population-defaults")  # the runs whose members' taus tau.png draws
TAU_COLUMNS = ("epoch", "member", "strategy", "tau", "is_best")


def _generation_seconds(entry: dict[str, Any]) -> float:
    return entry["seconds"].get("train", 0.0) + entry["seconds"].get("coordination", 0.0)


def _arms(out: Path, protocol: Protocol, runs: dict[str, Any], test: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each ablation's mean over the seeds done (`repro_stats.over_seeds`), and its difference from the reference
    population paired by seed (the seeds both have done; per test image within that seed when there is one)."""
    arms, differences = {}, {}
    for arm in ABLATIONS:
        done = {s: seeded(arm, s, protocol) for s in protocol.seeds_of(arm) if seeded(arm, s, protocol) in runs}
        if not done:
            continue
        first = next(iter(done.values()))
        hard = [runs[n]["test_mse_hard"] for n in done.values()]
        arms[arm] = over_seeds([runs[n]["test_mse"] for n in done.values()], per_image_scores(out, first, test)) | {
            "runs": list(done.values()), "per_seed": {str(s): runs[n]["test_mse"] for s, n in done.items()},
            # hard codes: the summary's test MSE per seed; a t-interval over seeds (none with one seed)
            "hard": None if None in hard else dict(zip(("mean", "low", "high"), t_interval(hard), strict=True))}
        if arm == HEADLINE:
            continue
        paired = {s: (n, seeded(HEADLINE, s, protocol)) for s, n in done.items() if seeded(HEADLINE, s, protocol) in runs}
        if not paired:
            continue
        per_image = {s: per_image_scores(out, n, test) - per_image_scores(out, ref, test) for s, (n, ref) in paired.items()}
        stats = over_seeds([float(d.mean()) for d in per_image.values()], next(iter(per_image.values())))
        differences[arm] = {"minus_reference": stats.pop("mean"), **stats, "paired_seeds": sorted(paired)}
    return arms, differences


def collect(out: Path, protocol: Protocol, steps: list[Step], test: Any, steps_per_pass: int) -> dict[str, Any]:
    """Everything finished so far, as plain data (reproduction.json)."""
    from popvae.population.training import cpu_model

    progress = folder_io.read_json(out / "progress.json") if (out / "progress.json").is_file() else {"seconds": {}}
    cpu = cpu_model()
    runs = {}
    for step in steps:
        if step.kind == "run" and run_done(run_dir(out, step.name)):  # with the CPU its times were taken on
            runs[step.name] = _run_facts(out, step, test, steps_per_pass) | {"cpu": cpu}
        elif step.kind == "run" and (facts := carried(out, "runs", step.name)) is not None:
            runs[step.name] = facts | {"carried": True}
    arms, differences = _arms(out, protocol, runs, test)
    evaluations = {}
    for s in steps:
        if s.kind == "evaluation" and (evaluation_dir(out, s.name) / "report.json").is_file():
            evaluations[s.name] = folder_io.read_json(evaluation_dir(out, s.name) / "report.json")
    robust = {}
    for m in protocol.robust_methods:
        if robust_done(out, m):
            kept = carried(out, "robust", m)
            robust[m] = RunFolder(robust_job_dir(out, m)).read_job_status().metrics if kept is None else kept | {"carried": True}
    import torch

    return {
        "protocol": protocol.model_dump(mode="json"),
        "machine": {"cpus": _cpus(), "cpu": cpu, "platform": platform.machine(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"},
        "wall_seconds": progress.get("wall_seconds", 0.0), "step_seconds": progress["seconds"],
        "steps_done": sum(1 for s in steps if step_done(out, s)), "steps_total": planned(protocol, steps_per_pass),
        "runs": runs, "arms": arms, "differences": differences,
        "evaluations": evaluations, "robust": robust,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_report(out: Path, report_dir: Path, protocol: Protocol, steps: list[Step], test: Any,
                 steps_per_pass: int) -> dict[str, Any]:
    """reproduction.json, reproduction.md and the plots into `report_dir` (`test`: the test split the runs are scored
    on; `steps_per_pass`: a full pass's optimizer steps, the compute of a run without steps_per_epoch); returns the
    JSON's content."""
    facts = collect(out, protocol, steps, test, steps_per_pass)
    facts["command"] = again_command(protocol, out, report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    if report_dir != out:  # each run's per-image scores beside the report: what a new OUT carries its runs on with
        for name in facts["runs"]:
            data, kept = (out / "scores" / f"{name}.npy").read_bytes(), report_dir / "scores" / f"{name}.npy"
            if not kept.is_file() or kept.read_bytes() != data:  # written once: the report is rewritten every minute
                atomic_write(kept, lambda fh, data=data: fh.write(data))
    figures = plots(facts, report_dir)
    text = "\n".join(_markdown(facts, figures)) + "\n"
    atomic_write(report_dir / "reproduction.json", lambda fh: fh.write(_json(facts).encode()))
    atomic_write(report_dir / "reproduction.md", lambda fh: fh.write(text.encode()))
    return facts


def _json(facts: dict[str, Any]) -> str:
    import json

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(facts), indent=2, allow_nan=False)


# --- markdown ---
def _ci(mean: float, ci: list[float | None], digits: int = 4) -> str:
    if ci[0] is None or not math.isfinite(ci[0]):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _hard(arm: dict[str, Any]) -> str:
    """An arm's test MSE with hard codes (one-hot argmax), mean over seeds [t-interval when there are several]."""
    h = arm.get("hard")
    return "n/a" if h is None else _ci(h["mean"], [h["low"], h["high"]])


def _interval(stats: dict[str, Any]) -> str:
    """What an interval is over, for a reader."""
    return f"t over {stats['seeds']} seeds" if stats["interval"] == "seeds" else "within-seed (test images)"


def _acc(cell: dict[str, Any] | None) -> str:
    if not cell:
        return ""
    return f"{100 * cell['accuracy']:.1f} [{100 * cell['ci95'][0]:.1f}, {100 * cell['ci95'][1]:.1f}]"


def _markdown(f: dict[str, Any], figures: dict[str, str]) -> list[str]:
    p = f["protocol"]
    runs, diffs, evals = f["runs"], f["differences"], f["evaluations"]
    steps = f"{p['steps']} steps" if p["steps"] else "one pass over the training split"
    lines = [
        f"# Reproduction of the papers on {p['dataset']}, preset `{p['preset']}`", "",
        f"Command: `{f['command']}` (run it again to continue an interrupted or partial one). Measured on "
        f"{f['machine']['cpus']} CPU cores ({f['machine'].get('cpu', 'model not recorded')}), device "
        f"{f['machine']['device']}, torch "
        f"{f['machine']['torch']}. Steps finished: {f['steps_done']} of {f['steps_total']}; wall time"
        f"{'' if f['steps_done'] == f['steps_total'] else ' so far'} {f['wall_seconds'] / 60:.1f} min (start-up, training, "
        "scoring and attacks).", "",
        *_carried_note(runs, f["robust"]),
        f"Budget of every GS-VAE run: {p['generations']} generations (epochs) of {steps} per member at batch "
        f"{p['batch_size']}{_stopper(p)}; training seeds {_seeds(p)}; populations of n = {p['members']}; precision "
        f"{', '.join(sorted({r.get('precision', 'fp32') for r in runs.values()})) or 'not yet known'}. "
        "The paper trained 100+ full epochs: "
        "numbers from a smaller budget say how the methods compare early in training, not where they end.",
        "Test MSE: per pixel on [0,1] pixels, deterministic reconstructions, over the full test split. An arm trained "
        "with several seeds shows its mean over seeds with a 95 % t-interval over seeds; an arm with one seed shows "
        "a 95 % interval over test images, labelled within-seed (seed-to-seed spread is not in it).", "",
    ]
    lines += _table1(f, runs)
    lines += _ablations(runs, f["arms"], diffs, figures)
    if p["extras"]:
        lines += _figure4(p, runs, figures)
        lines += _purification(f, evals, figures)
        lines += _unseen(evals)
        lines += _patches(evals, figures)
        lines += _robust(f)
    lines += [
        "## Not reproduced", "",
        *([] if p["extras"] else ["- This preset runs the core arms only: Figures 4, 7 and 9, Tables 2-3, the ablations "
                                  "without broadcast or feedback and the robust autoencoders are in the `cpu` preset's "
                                  "report."]),
        "- LPIPS and Inception-FID need pretrained weights that cannot be downloaded here; the AADDC above uses SSIM only.",
        "- The papers' other datasets (CIFAR-10, CelebA-HD) and models (beta-TCVAE, Soft-Intro-VAE, smooth encoders).",
        f"- Seeds: {_seeds(p)}; the paper reports one run.", "",
    ]
    return lines


def _carried_note(runs: dict[str, Any], robust: dict[str, Any]) -> list[str]:
    names = [n for n, r in runs.items() if r.get("carried")] + [f"robust-{m}" for m, r in robust.items() if r.get("carried")]
    cpus = sorted({r.get("cpu", "CPU not recorded") for r in runs.values() if r.get("carried")})
    return [f"Carried from the earlier report in this folder (their run folders were lost, so they were not run again; "
            f"their time is in the wall time; runs measured on {', '.join(cpus) or 'the machine above'}): "
            f"{', '.join(names)}.", ""] if names else []


def _stopper(p: dict[str, Any]) -> str:
    stop = p.get("stop")
    return "" if not stop else (f", or fewer where the plateau stopper ended a run ({stop['plateau_generations']} "
                                f"generations without a best {100 * stop['min_delta']:g} % better)")


def _seeds(p: dict[str, Any]) -> str:
    first = p["seed"]
    most = f"{p['seeds']} ({', '.join(str(first + k) for k in range(p['seeds']))})"
    other = min(p["seeds"], p["other_seeds"] or p["seeds"])
    return f"{most} for every core arm" if other == p["seeds"] else \
        f"{most} for the population and the annealed baseline, {other} for the other arms"


def _table1(f: dict[str, Any], runs: dict[str, Any]) -> list[str]:
    pop_paper, base_paper = paper.TEST_MSE.get(f["protocol"]["dataset"], (None, None))
    lines = [f"## Table 1: test MSE ({paper.GSVAE}, Table 1)", "",
             "| model | paper | popvae, mean [95 % CI] | interval | hard codes, mean [95 % CI over seeds] | "
             "budget (member-steps per seed) |", "|---|---|---|---|---|---|"]
    n = f["protocol"]["members"]
    for name, label, number in ((HEADLINE, f"population, n = {n} (the paper's model{'' if n == 8 else ', n = 8'})", pop_paper),
                                ("baseline", "standard GS-VAE (annealed baseline)", base_paper)):
        a = f["arms"].get(name)
        cells = f"{_ci(a['mean'], a['ci95'])} | {_interval(a)} | {_hard(a)} | {runs[a['runs'][0]]['member_steps']}" \
            if a else "not yet run | | |"
        lines.append(f"| {label} | {number if number is not None else 'n/a'} | {cells} |")
    return lines + [""]


def _ablations(runs: dict[str, Any], arms: dict[str, Any], diffs: dict[str, Any], figures: dict[str, str]) -> list[str]:
    lines = ["## What the population adds: ablations (no paper ran these)", "",
             "Difference = this arm's test MSE minus the reference population's (negative: this arm reconstructs "
             "better), paired by seed: over the seeds both ran (t-interval), or per test image within the one seed. "
             "Compute: every member's optimizer steps together, per seed. Taus and times: the first seed's run.", "",
             "| arm | what | seeds | test MSE, mean [95 % CI] | minus reference population [95 % CI] | interval | "
             "hard codes, mean [95 % CI over seeds] | best member's tau | highest tau | compute (member-steps) | "
             "median generation s | ended by |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ABLATIONS:
        a = arms.get(name)
        if a is None:
            lines.append(f"| {name} | | | not yet run | | | | | | | | |")
            continue
        r, d = runs[a["runs"][0]], diffs.get(name)
        lines.append(f"| {name} | {r['what']} | {a['seeds']} | {_ci(a['mean'], a['ci95'])} | "
                     f"{_difference(d) if d else '(reference)' if name == HEADLINE else ''} | "
                     f"{_interval(d or a)} | {_hard(a)} | {r['best_tau']:.2f} | {r['max_tau']:.2f} | "
                     f"{r['member_steps']} | {r['generation_seconds_median']:.1f} | {r['stop_reason'] or ''} |")
    lines += ["", *_reading(arms, diffs), ""]
    for key in ("ablations", "tau", "curves"):
        if key in figures:
            lines += [figures[key], ""]
    return lines


def _verdict(diffs: dict[str, Any], name: str) -> str:
    d = diffs.get(name)
    if d is None:
        return "not measured yet"
    low, high = d["ci95"]
    if low is None or not math.isfinite(low):
        return f"{d['minus_reference']:+.4f}, no interval"
    if _unresolved(d):
        return "no difference at this precision (the difference and both bounds under 0.00005 in size)"
    if high < 0:
        return f"{name} is better than the reference population by {-d['minus_reference']:.4f} [{-high:.4f}, {-low:.4f}]"
    if low > 0:
        return f"the reference population is better than {name} by {d['minus_reference']:.4f} [{low:.4f}, {high:.4f}]"
    spread = "the seeds" if d.get("interval") == "seeds" else "the test set"  # which spread the interval measures
    return f"no difference {spread} can resolve ({d['minus_reference']:+.4f} [{low:+.4f}, {high:+.4f}])"


def _unresolved(d: dict[str, Any]) -> bool:
    """Every number of a difference prints as 0.0000."""
    return max(abs(d["minus_reference"]), *(abs(b) for b in d["ci95"] if b is not None)) < 5e-5


def _difference(d: dict[str, Any]) -> str:
    return "no difference at this precision" if _unresolved(d) else _ci(d["minus_reference"], d["ci95"])


def _reading(arms: dict[str, Any], diffs: dict[str, Any]) -> list[str]:
    """The honest reading, in numbers, generated from the table (so that it never disagrees with it)."""
    if HEADLINE not in arms:
        return ["Reading: the reference population has not finished yet."]
    out = ["Reading (each line from the paired differences above; the interval is named after each):"]
    for name, question in (
        ("baseline", "the annealed baseline on the same per-member budget (the paper's Table 1 comparison)"),
        ("baseline-equal-compute", "the baseline given the population's whole compute"),
        ("fixed-tau-grid", "the best of a fixed-tau grid at equal compute (random search)"),
        ("winning-schedule-alone", "high tau alone: the winning schedule without a population"),
        ("no-broadcast", "the broadcast: the same members trained independently"),
        ("no-feedback", "the feedback term: the same population with lr_tau = 0"),
        ("population-defaults", "popvae's defaults (tau clipped at 2) against the authors' dynamics"),
    ):
        d = diffs.get(name)
        out.append(f"- Against {question}: {_verdict(diffs, name)}{f'; interval: {_interval(d)}' if d else ''}.")
    return out[:1] + _discrete(arms) + out[1:]


def _discrete(arms: dict[str, Any]) -> list[str]:
    """The arms ranked by their test MSE with hard codes, the code a GS-VAE is for, and whether that ranking is the
    relaxed one: a high tau can win on relaxed codes by being a continuous autoencoder."""
    hard = {name: a["hard"]["mean"] for name, a in arms.items() if a.get("hard")}
    if len(hard) < 2:
        return []
    ranked = sorted(hard, key=hard.__getitem__)
    relaxed = min(hard, key=lambda name: arms[name]["mean"])
    line = (f"- With hard codes (one-hot argmax of every categorical; the MSE above decodes softmax(logits / tau)), best "
            f"first, means over seeds: {', '.join(f'{name} {hard[name]:.4f}' for name in ranked)}.")
    if ranked[0] != relaxed:
        line += (f" Not the relaxed order: {relaxed} reconstructs best with relaxed codes ({arms[relaxed]['mean']:.4f})"
                 f" but {hard[relaxed] / hard[ranked[0]]:.1f}x worse than {ranked[0]} with hard ones.")
    return [line]


def _figure4(p: dict[str, Any], runs: dict[str, Any], figures: dict[str, str]) -> list[str]:
    lines = [f"## Figure 4: test MSE and training time against n ({paper.GSVAE}, Figure 4: no numbers published)", "",
             "Time: the median generation's wall time (training and coordination; the median leaves out generations "
             "slowed by other work on the machine), and the sum over all generations.", "",
             "| n | test MSE [95 % CI] | median generation (s) | all generations (s) |", "|---|---|---|---|"]
    for n in p["sizes"]:
        r = runs.get(HEADLINE if n == p["members"] else f"population-n{n}")
        lines.append(f"| {n} | {_ci(r['test_mse'], r['test_mse_ci95'])} | {r['generation_seconds_median']:.1f} | "
                     f"{r['train_seconds']:.0f} |" if r else f"| {n} | not yet run | | |")
    return lines + (["", figures["figure4"]] if "figure4" in figures else []) + [""]


def _purification(f: dict[str, Any], evals: dict[str, Any], figures: dict[str, str]) -> list[str]:
    published = paper.PURIFICATION.get(f["protocol"]["dataset"], {})
    pop, base = (evals.get(k, {}).get("purification") for k in (HEADLINE, "baseline"))
    lines = [f"## Tables 2-3: accuracy (%) of the CNN on purified images ({paper.GSVAE}, Tables 2 and 3)", ""]
    if not pop and not base:
        return lines + ["Not run yet.", ""]
    setting = (pop or base)["setting"]
    lines += [f"{setting['n']} test images; non-adaptive = the paper's setting (attack the CNN alone, then purify); "
              f"adaptive = end to end through the purifier (EOT over {setting['eot_samples']} draws of its noise); "
              f"PGD {setting['pgd_steps']} steps. Wilson 95 % intervals.", ""]
    for attack, table in (("fgsm", "Table 2"), ("pgd", "Table 3")):
        lines += [f"### {attack.upper()} ({table})", "",
                  "| eps | CNN alone (no purifier) | paper: population | popvae population: non-adaptive | adaptive | "
                  "paper: baseline | popvae baseline: non-adaptive | adaptive |", "|---|---|---|---|---|---|---|---|"]
        ours = {r["eps"] for result in (pop, base) if result for r in result[attack]} | {0.0}
        paper_rows = published.get(attack, {})
        for eps in sorted(ours | set(paper_rows), reverse=True):  # every eps the paper reported or we measured
            pp, pb = paper_rows.get(eps, ("n/a", "n/a"))
            cells = [_cell(r, attack, eps) for r in (pop, base)]
            lines.append(f"| {eps:g} | {_alone(pop or base, attack, eps)} | {pp} | {cells[0][0]} | {cells[0][1]} | {pb} | "
                         f"{cells[1][0]} | {cells[1][1]} |")
        lines.append("")
    return lines + ([figures["purification"], ""] if "purification" in figures else [])


def _alone(result: dict[str, Any], attack: str, eps: float) -> str:
    """The CNN's own accuracy on the attacked images (the same CNN and images for both purifiers)."""
    if eps == 0.0:
        return _acc(result["clean"]["cnn_alone"])
    row = next((r for r in result[attack] if math.isclose(r["eps"], eps)), None)
    return _acc(row["cnn_alone"]) if row else ""


def _cell(result: dict[str, Any] | None, attack: str, eps: float) -> tuple[str, str]:
    if not result:
        return "not yet run", ""
    if eps == 0.0:
        return _acc(result["clean"]["purified"]), ""
    row = next((r for r in result[attack] if math.isclose(r["eps"], eps)), None)
    return (_acc(row["non_adaptive"]), _acc(row["adaptive"])) if row else ("not on the grid", "")


def _unseen(evals: dict[str, Any]) -> list[str]:
    lines = [f"## Figure 7: classes never seen in training ({paper.GSVAE}, Figure 7: no numbers published)", "",
             "| model | MSE held-out classes | MSE seen classes | SSIM held-out | SSIM seen |", "|---|---|---|---|---|"]
    for name in ("unseen-population", "unseen-baseline"):
        u = evals.get(name, {}).get("unseen")
        if not u:
            lines.append(f"| {name} | not yet run | | | |")
            continue
        held, seen = u["unseen"], u["seen"]
        classes = [k for k, v in u["per_class"].items() if v["held_out"]]
        lines.append(f"| {name} (held out: {', '.join(classes)}; {held['n']} / {seen['n']} images) | {_num(held['mse'])} | "
                     f"{_num(seen['mse'])} | {_num(held['ssim'])} ± {_num(held['ssim_std'])} | "
                     f"{_num(seen['ssim'])} ± {_num(seen['ssim_std'])} |")
    return lines + [""]


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _patches(evals: dict[str, Any], figures: dict[str, str]) -> list[str]:
    lines = [f"## Figure 9: patch anomaly detection, test ROC-AUC ({paper.GSVAE}, Figure 9: no numbers published)", ""]
    rows = {k: evals.get(k, {}).get("patches", {}).get("rows", []) for k in (HEADLINE, "baseline")}
    if not any(rows.values()):
        return lines + ["Not run yet.", ""]
    lines += ["Threshold chosen on validation images only; half of the test images patched.", "",
              "| shape | size (px) | population | baseline |", "|---|---|---|---|"]
    keys = sorted({(r["shape"], r["size"]) for rs in rows.values() for r in rs})
    for shape, size in keys:
        cells = [next((f"{r['test']['roc_auc']:.3f}" for r in rows[k] if (r["shape"], r["size"]) == (shape, size)), "")
                 for k in (HEADLINE, "baseline")]
        lines.append(f"| {shape} | {size} | {cells[0]} | {cells[1]} |")
    return lines + ([""] + ([figures["patches"]] if "patches" in figures else []) + [""])


def _robust(f: dict[str, Any]) -> list[str]:
    dataset = f["protocol"]["dataset"]
    evals, metrics = f["evaluations"], f["robust"]
    published = paper.ROBUST_TABLE.get(dataset, {})
    lines = [f"## Robust autoencoders ({paper.ROBUST_GMM}, Table 1; {paper.LU_CHEN}, Table 2; RAVEN)", "",
             f"Each trained {f['protocol']['robust_epochs']} epochs of "
             f"{f['protocol']['robust_steps'] or 'a full pass'} steps at batch {f['protocol']['robust_batch']}.", "",
             "### Latent and maximum-damage attacks, MS-SSIM at L2 budgets 1 / 3 / 5 (paper's number in brackets)", "",
             "Latent attack: MS-SSIM(target, adversarial reconstruction), lower = more robust; maximum damage: "
             "MS-SSIM(clean reconstruction, adversarial reconstruction), higher = more robust.", "",
             "| method | test MSE | latent: target vs adv. rec. | latent: input vs adv. input | damage: rec. vs adv. rec. | "
             "damage: input vs adv. input | latent MLP accuracy under attack (worst over trials) |",
             "|---|---|---|---|---|---|---|"]
    for m in f["protocol"]["robust_methods"]:
        rep = evals.get(f"robust-{m}")
        mse = metrics.get(m, {}).get("test_mse")
        if rep is None:
            lines.append(f"| {m} | {'' if mse is None else f'{mse:.4f}'} | not yet run | | | | |")
            continue
        lat, dmg = rep["latent"]["rows"], rep["max-damage"]["rows"]
        pub = published.get(m, (None,) * 4)
        cols = [_triple(lat, "ms_ssim_target_vs_adv_rec", pub[0]), _triple(lat, "ms_ssim_input_vs_adv_input", pub[1]),
                _triple(dmg, "ms_ssim_clean_rec_vs_adv_rec", pub[2]), _triple(dmg, "ms_ssim_input_vs_adv_input", pub[3])]
        accuracy = " / ".join(f"{100 * r['latent_mlp_accuracy_worst_case']['accuracy']:.0f} %" for r in lat)
        lines.append(f"| {m} | {mse:.4f} | {' | '.join(cols)} | {accuracy} |")
    lines += ["", "### AADDC under latent PGD, SSIM limit 0.4 (larger = more robust)", "",
              "| method | untargeted | all-black targeted | paper (all-black, Lu & Chen Table 2) |", "|---|---|---|---|"]
    aaddc = paper.AADDC_SSIM.get(dataset, {})
    for m in f["protocol"]["robust_methods"]:
        rep = evals.get(f"robust-{m}", {}).get("latent-pgd")
        if rep is None:
            continue
        kind, reg = m.split("-")[0], m.split("-")[1] if "-" in m else ""
        pub = aaddc.get(reg, (None, None))[0 if kind == "vae" else 1] if kind in ("vae", "dae") and not m.endswith("lat") \
            else None
        lines.append(f"| {m} | {rep['untargeted']['aaddc_ssim']:.3f} | {rep['targeted_black']['aaddc_ssim']:.3f} | "
                     f"{'' if pub is None else pub} |")
    lines += ["", "Our latent eps grid and step count differ from Lu & Chen's, so AADDC values compare methods within "
              "this table, not with the paper's column.", ""]
    return lines


def _triple(rows: list[dict[str, Any]], key: str, published: tuple[float, ...] | None) -> str:
    ours = " / ".join(f"{r[key]['mean']:.2f}" for r in rows)
    return ours if published is None else f"{ours} ({' / '.join(f'{v:.2f}' for v in published)})"
