"""The reproduction's report: reproduction.json, reproduction.md and its plots, from whatever steps are finished.

Each number is read back from the run folders and evaluation reports `population.reproduce` left, printed beside
the paper's (`population.paper_numbers`, with its table) and with a 95 % interval: over test images for MSE
(paired per image for a difference between two models), Wilson for accuracies. One training seed per run: the
intervals say how sure a number is about the test set, not how much another seed would move it.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from popvae.attacks.figures import write_figure
from popvae.models.atomic import atomic_write
from popvae.population import folder_io
from popvae.population import paper_numbers as paper
from popvae.population.plots import member_lines
from popvae.population.reproduce import (
    Protocol,
    Step,
    evaluation_dir,
    generation_wins,
    robust_done,
    robust_job_dir,
    run_dir,
    run_done,
    step_done,
)
from popvae.population.run_folder import RunFolder

HEADLINE = "population-reference"
ABLATIONS = ("population-reference", "population-defaults", "winning-schedule-alone", "no-broadcast", "no-feedback",
             "baseline", "baseline-equal-compute")


def mean_ci(values: Any) -> tuple[float, float, float]:
    """(mean, low, high): a normal 95 % interval over the values (test images; n in the hundreds or more)."""
    v = np.asarray(values, dtype=float)
    half = 1.96 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return float(v.mean()), float(v.mean()) - half, float(v.mean()) + half


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


def _run_facts(out: Path, step: Step, test: Any) -> dict[str, Any]:
    folder = run_dir(out, step.name)
    run = RunFolder(folder)
    summary = run.read_summary()
    rows = run.read_history_rows()
    lineage = [g.model_dump() for g in run.read_lineage()]
    cfg = step.config
    steps = cfg.get("steps_per_epoch") or 0
    mse, low, high = mean_ci(per_image_scores(out, step.name, test))
    wins = generation_wins(folder)
    return {
        "what": step.what, "members": cfg["members"], "epochs": cfg["epochs"], "steps_per_epoch": steps or None,
        "member_steps": cfg["members"] * cfg["epochs"] * steps if steps else None,
        "test_mse": mse, "test_mse_ci95": [low, high], "test_images": summary.test_images,
        "best_member": summary.best_member, "best_tau": summary.best_tau,
        "max_tau": max(r["tau"] for r in rows), "wins": {str(k): v for k, v in sorted(wins.items())},
        "train_seconds": sum(_generation_seconds(g) for g in lineage),
        # the median generation: robust to a few generations slowed by other work on the machine
        "generation_seconds_median": float(np.median([_generation_seconds(g) for g in lineage])),
        "events": summary.events,
        "precision": summary.precision,
    }


def _generation_seconds(entry: dict[str, Any]) -> float:
    return entry["seconds"].get("train", 0.0) + entry["seconds"].get("coordination", 0.0)


def collect(out: Path, protocol: Protocol, steps: list[Step], test: Any) -> dict[str, Any]:
    """Everything finished so far, as plain data (reproduction.json)."""
    progress = folder_io.read_json(out / "progress.json") if (out / "progress.json").is_file() else {"seconds": {}}
    done_runs = {s.name: s for s in steps if s.kind == "run" and run_done(run_dir(out, s.name))}
    runs = {name: _run_facts(out, s, test) for name, s in done_runs.items()}
    differences = {}
    if HEADLINE in runs:
        base = per_image_scores(out, HEADLINE, test)
        for name in runs:
            if name != HEADLINE and not name.startswith("unseen"):
                d, low, high = mean_ci(per_image_scores(out, name, test) - base)
                differences[name] = {"minus_reference": d, "ci95": [low, high]}
    evaluations = {}
    for s in steps:
        if s.kind == "evaluation" and (evaluation_dir(out, s.name) / "report.json").is_file():
            evaluations[s.name] = folder_io.read_json(evaluation_dir(out, s.name) / "report.json")
    robust = {}
    for m in protocol.robust_methods:
        if robust_done(out, m):
            robust[m] = RunFolder(robust_job_dir(out, m)).read_job_status().metrics
    import torch

    return {
        "protocol": protocol.model_dump(mode="json"),
        "machine": {"cpus": _cpus(), "platform": platform.machine(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"},
        "wall_seconds": progress.get("wall_seconds", 0.0), "step_seconds": progress["seconds"],
        "steps_done": sum(1 for s in steps if step_done(out, s)), "steps_total": len(steps),
        "runs": runs, "differences": differences, "evaluations": evaluations, "robust": robust,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_report(out: Path, report_dir: Path, protocol: Protocol, steps: list[Step], test: Any) -> dict[str, Any]:
    """reproduction.json, reproduction.md and the plots into `report_dir` (`test`: the test split the runs are scored
    on); returns the JSON's content."""
    facts = collect(out, protocol, steps, test)
    report_dir.mkdir(parents=True, exist_ok=True)
    figures = _plots(out, facts, report_dir)
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
def _ci(mean: float, ci: list[float], digits: int = 4) -> str:
    return f"{mean:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


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
        f"Command: `popvae reproduce --preset {p['preset']} --dataset {p['dataset']}` (run again to continue an "
        f"interrupted one). Measured on {f['machine']['cpus']} CPU cores, device {f['machine']['device']}, torch "
        f"{f['machine']['torch']}. Steps finished: {f['steps_done']} of {f['steps_total']}; wall time"
        f"{'' if f['steps_done'] == f['steps_total'] else ' so far'} {f['wall_seconds'] / 60:.1f} min (start-up, training, "
        "scoring and attacks).", "",
        f"Budget of every GS-VAE run: {p['generations']} generations (epochs) of {steps} per member at batch "
        f"{p['batch_size']}, seed {p['seed']}; populations of n = {p['members']}; precision "
        f"{', '.join(sorted({r.get('precision', 'fp32') for r in runs.values()})) or 'not yet known'}. "
        "The paper trained 100+ full epochs: "
        "numbers from a smaller budget say how the methods compare early in training, not where they end.",
        "Test MSE: per pixel on [0,1] pixels, deterministic reconstructions, over the full test split, with a 95 % "
        "interval over test images (one training seed: seed-to-seed spread is not in the interval).", "",
    ]
    lines += _table1(f, runs)
    lines += _ablations(runs, diffs, figures)
    lines += _figure4(p, runs, figures)
    lines += _purification(f, evals, figures)
    lines += _unseen(evals)
    lines += _patches(evals, figures)
    lines += _robust(f)
    lines += [
        "## Not reproduced", "",
        "- LPIPS and Inception-FID need pretrained weights that cannot be downloaded here; the AADDC above uses SSIM only.",
        "- The papers' other datasets (CIFAR-10, CelebA-HD) and models (beta-TCVAE, Soft-Intro-VAE, smooth encoders).",
        "- Seeds: one per run; the paper reports one run too.", "",
    ]
    return lines


def _table1(f: dict[str, Any], runs: dict[str, Any]) -> list[str]:
    pop_paper, base_paper = paper.TEST_MSE.get(f["protocol"]["dataset"], (None, None))
    lines = [f"## Table 1: test MSE ({paper.GSVAE}, Table 1)", "", "| model | paper | popvae [95 % CI] | budget (member-steps) |",
             "|---|---|---|---|"]
    n = f["protocol"]["members"]
    for name, label, number in ((HEADLINE, f"population, n = {n} (the paper's model{'' if n == 8 else ', n = 8'})", pop_paper),
                                ("baseline", "standard GS-VAE (annealed baseline)", base_paper)):
        r = runs.get(name)
        lines.append(f"| {label} | {number if number is not None else 'n/a'} | "
                     f"{_ci(r['test_mse'], r['test_mse_ci95']) if r else 'not run yet'} | {r['member_steps'] if r else ''} |")
    return lines + [""]


def _ablations(runs: dict[str, Any], diffs: dict[str, Any], figures: dict[str, str]) -> list[str]:
    lines = ["## What the population adds: ablations (no paper ran these)", "",
             "Difference = this run's test MSE minus the reference population's, paired per test image (negative: "
             "this run reconstructs better).", "",
             "| run | what | test MSE [95 % CI] | minus reference population [95 % CI] | best member's tau | highest tau | "
             "member-steps | median generation s |", "|---|---|---|---|---|---|---|---|"]
    for name in ABLATIONS:
        r = runs.get(name)
        if r is None:
            lines.append(f"| {name} | | not run yet | | | | | |")
            continue
        d = diffs.get(name)
        lines.append(f"| {name} | {r['what']} | {_ci(r['test_mse'], r['test_mse_ci95'])} | "
                     f"{_ci(d['minus_reference'], d['ci95']) if d else '(reference)'} | {r['best_tau']:.2f} | "
                     f"{r['max_tau']:.2f} | {r['member_steps']} | {r['generation_seconds_median']:.1f} |")
    lines += ["", *_reading(runs, diffs), ""]
    for key in ("ablations", "tau"):
        if key in figures:
            lines += [figures[key], ""]
    return lines


def _verdict(diffs: dict[str, Any], name: str) -> str:
    d = diffs.get(name)
    if d is None:
        return "not measured yet"
    low, high = d["ci95"]
    if high < 0:
        return f"{name} is better than the reference population by {-d['minus_reference']:.4f} [{-high:.4f}, {-low:.4f}]"
    if low > 0:
        return f"the reference population is better than {name} by {d['minus_reference']:.4f} [{low:.4f}, {high:.4f}]"
    return f"no difference the test set can resolve ({d['minus_reference']:+.4f} [{low:+.4f}, {high:+.4f}])"


def _reading(runs: dict[str, Any], diffs: dict[str, Any]) -> list[str]:
    """The honest reading, in numbers, generated from the table (so that it never disagrees with it)."""
    if HEADLINE not in runs:
        return ["Reading: the reference population has not finished yet."]
    out = ["Reading (each line from the paired differences above):"]
    for name, question in (
        ("baseline", "the annealed baseline on the same per-member budget (the paper's Table 1 comparison)"),
        ("baseline-equal-compute", "the baseline given the population's whole compute"),
        ("winning-schedule-alone", "high tau alone: the winning schedule without a population"),
        ("no-broadcast", "the broadcast: the same members trained independently"),
        ("no-feedback", "the feedback term: the same population with lr_tau = 0"),
        ("population-defaults", "popvae's defaults (tau clipped at 2) against the authors' dynamics"),
    ):
        out.append(f"- Against {question}: {_verdict(diffs, name)}.")
    return out


def _figure4(p: dict[str, Any], runs: dict[str, Any], figures: dict[str, str]) -> list[str]:
    lines = [f"## Figure 4: test MSE and training time against n ({paper.GSVAE}, Figure 4: no numbers published)", "",
             "Time: the median generation's wall time (training and coordination; the median leaves out generations "
             "slowed by other work on the machine), and the sum over all generations.", "",
             "| n | test MSE [95 % CI] | median generation (s) | all generations (s) |", "|---|---|---|---|"]
    for n in p["sizes"]:
        r = runs.get(HEADLINE if n == p["members"] else f"population-n{n}")
        lines.append(f"| {n} | {_ci(r['test_mse'], r['test_mse_ci95'])} | {r['generation_seconds_median']:.1f} | "
                     f"{r['train_seconds']:.0f} |" if r else f"| {n} | not run yet | | |")
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
        for eps, (pp, pb) in sorted(published.get(attack, {}).items(), reverse=True):
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
        return "not run yet", ""
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
            lines.append(f"| {name} | not run yet | | | |")
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
            lines.append(f"| {m} | {'' if mse is None else f'{mse:.4f}'} | not run yet | | | | |")
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


# --- plots ---
def _plots(out: Path, facts: dict[str, Any], report_dir: Path) -> dict[str, str]:
    """Each plot that has data: {key: the markdown that shows it and says what it shows}."""
    shown = {}
    for key, draw in (("ablations", _plot_ablations), ("tau", _plot_tau), ("figure4", _plot_figure4),
                      ("purification", _plot_purification), ("patches", _plot_patches)):
        if (markdown := draw(out, facts, report_dir)) is not None:
            shown[key] = markdown
    return shown


def _errors(runs: list[dict[str, Any]]) -> np.ndarray:
    """matplotlib's yerr (2 x n) from each run's test MSE interval."""
    return np.array([[r["test_mse"] - r["test_mse_ci95"][0], r["test_mse_ci95"][1] - r["test_mse"]] for r in runs]).T


def _plot_ablations(out: Path, facts: dict[str, Any], report_dir: Path) -> str | None:
    done = [n for n in ABLATIONS if n in facts["runs"]]
    if not done:
        return None
    runs = [facts["runs"][n] for n in done]
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    ax.bar(range(len(done)), [r["test_mse"] for r in runs], yerr=_errors(runs), capsize=4, color="tab:blue")
    ax.set_xticks(range(len(done)), done, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test MSE per pixel ([0,1] pixels)")
    ax.set_title(f"ablations on {facts['protocol']['dataset']} (95 % CI over test images)", fontsize=10)
    write_figure(fig, report_dir / "ablations.png", dpi=100)
    return "![test MSE of each ablation with its 95 % interval](ablations.png)"


def _plot_tau(out: Path, facts: dict[str, Any], report_dir: Path) -> str | None:
    names = [n for n in (HEADLINE, "population-defaults") if n in facts["runs"]]
    if not names:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        member_lines(ax, RunFolder(run_dir(out, name)).read_history_rows(), "tau")
        ax.set_title(f"{name}: tau per member (circle: best)", fontsize=10)
        ax.set_xlabel("epoch (generation)")
        ax.set_ylabel("tau used in the epoch")
        ax.legend(fontsize=6)
    write_figure(fig, report_dir / "tau.png", dpi=100)
    return ("![tau per member, the authors' dynamics against popvae's defaults](tau.png)\n\n"
            "tau.png: each member's temperature per generation; a circle marks the generation's best.")


def _plot_figure4(out: Path, facts: dict[str, Any], report_dir: Path) -> str | None:
    p = facts["protocol"]
    sizes = [(n, facts["runs"].get(HEADLINE if n == p["members"] else f"population-n{n}")) for n in p["sizes"]]
    sizes = [(n, r) for n, r in sizes if r]
    if not sizes:
        return None
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    ns, runs = [n for n, _ in sizes], [r for _, r in sizes]
    left.errorbar(ns, [r["test_mse"] for r in runs], yerr=_errors(runs), marker="o", capsize=4)
    left.set(xlabel="members n", ylabel="test MSE per pixel")
    right.plot(ns, [r["generation_seconds_median"] for r in runs], marker="o")
    right.set(xlabel="members n", ylabel="median generation wall time (s)")
    fig.suptitle("Figure 4: the reference population against n", fontsize=10)
    write_figure(fig, report_dir / "figure4.png", dpi=100)
    return "![Figure 4: test MSE and training time against n](figure4.png)"


def _plot_purification(out: Path, facts: dict[str, Any], report_dir: Path) -> str | None:
    results = {k: facts["evaluations"].get(k, {}).get("purification") for k in (HEADLINE, "baseline")}
    if not any(results.values()):
        return None
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    for ax, attack in zip(fig.subplots(1, 2), ("fgsm", "pgd"), strict=True):
        for (name, result), color in zip(results.items(), ("tab:blue", "tab:orange"), strict=True):
            if not result:
                continue
            label = "population" if name == HEADLINE else name
            rows = result[attack]
            ax.plot([0.0] + [r["eps"] for r in rows],
                    [100 * result["clean"]["purified"]["accuracy"]] + [100 * r["non_adaptive"]["accuracy"] for r in rows],
                    marker="o", color=color, label=f"{label}: non-adaptive")
            ax.plot([r["eps"] for r in rows], [100 * r["adaptive"]["accuracy"] for r in rows], marker="x", linestyle="--",
                    color=color, label=f"{label}: adaptive")
        published = paper.PURIFICATION.get(facts["protocol"]["dataset"], {}).get(attack, {})
        for column, label, color in ((0, "paper: population", "tab:blue"), (1, "paper: baseline", "tab:orange")):
            eps = sorted(published)
            if eps:
                ax.plot(eps, [published[e][column] for e in eps], ":", color=color, marker="s", label=label)
        ax.set(title=f"{attack.upper()} (L-inf)", xlabel="eps", ylabel="accuracy on purified images (%)")
        ax.legend(fontsize=6)
    write_figure(fig, report_dir / "purification.png", dpi=100)
    return ("![accuracy under FGSM and PGD, ours against the paper's](purification.png)\n\n"
            "purification.png: solid, popvae non-adaptive; dashed, popvae adaptive; dotted squares, the paper's "
            "(non-adaptive) numbers.")


def _plot_patches(out: Path, facts: dict[str, Any], report_dir: Path) -> str | None:
    rows = {k: facts["evaluations"].get(k, {}).get("patches", {}).get("rows", []) for k in (HEADLINE, "baseline")}
    if not any(rows.values()):
        return None
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    for name, found in rows.items():
        for shape in sorted({r["shape"] for r in found}):
            mine = sorted((r for r in found if r["shape"] == shape), key=lambda r: r["size"])
            ax.plot([r["size"] for r in mine], [r["test"]["roc_auc"] for r in mine], marker="o", label=f"{name}: {shape}")
    ax.set(xlabel="patch size (px)", ylabel="test ROC-AUC", title="Figure 9: patch detection by reconstruction error")
    ax.legend(fontsize=6)
    write_figure(fig, report_dir / "patches.png", dpi=100)
    return "![Figure 9: patch detection ROC-AUC against patch size](patches.png)"
