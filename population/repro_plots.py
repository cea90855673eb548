"""The reproduction's plots: each figure of reproduction.md, drawn from the facts `repro_report.collect` gathered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from popvae.attacks.figures import write_figure
from popvae.population import paper_numbers as paper
from popvae.population.plots import member_lines
from popvae.population.reproduce import ABLATIONS, HEADLINE


def plots(facts: dict[str, Any], report_dir: Path) -> dict[str, str]:
    """Each plot that has data: {key: the markdown that shows it and says what it shows}."""
    shown = {}
    for key, draw in (("ablations", _plot_ablations), ("tau", _plot_tau), ("curves", _plot_curves), ("figure4", _plot_figure4),
                      ("purification", _plot_purification), ("patches", _plot_patches)):
        if (markdown := draw(facts, report_dir)) is not None:
            shown[key] = markdown
    return shown


def _errors(runs: list[dict[str, Any]]) -> np.ndarray:
    """matplotlib's yerr (2 x n) from each run's test MSE interval."""
    return np.array([[r["test_mse"] - r["test_mse_ci95"][0], r["test_mse_ci95"][1] - r["test_mse"]] for r in runs]).T


def _plot_ablations(facts: dict[str, Any], report_dir: Path) -> str | None:
    arms = {n: facts["arms"][n] for n in ABLATIONS if n in facts["arms"]}
    if not arms:
        return None
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    yerr = np.array([[a["mean"] - a["ci95"][0], a["ci95"][1] - a["mean"]] for a in arms.values()]).T
    ax.bar(range(len(arms)), [a["mean"] for a in arms.values()], yerr=yerr, capsize=4,
           color=["tab:blue" if a["interval"] == "seeds" else "tab:gray" for a in arms.values()])
    ax.set_xticks(range(len(arms)), [f"{n} ({a['seeds']} seed{'s' if a['seeds'] > 1 else ''})" for n, a in arms.items()],
                  rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("test MSE per pixel ([0,1] pixels)")
    ax.set_title(f"ablations on {facts['protocol']['dataset']}: mean, 95 % CI (blue: t over seeds; grey: within-seed)",
                 fontsize=9)
    write_figure(fig, report_dir / "ablations.png", dpi=100)
    return ("![test MSE of each arm with its 95 % interval](ablations.png)\n\n"
            "ablations.png: each arm's mean test MSE; blue bars carry a t-interval over seeds, grey bars (one seed) an "
            "interval over test images within that seed.")


def _plot_curves(facts: dict[str, Any], report_dir: Path) -> str | None:
    """Each arm's learning curve (its first seed's run): the generation's best member's MSE on the fixed validation
    subset against the steps one member took (left) and against all members' steps together (right, the compute)."""
    found = {n: facts["runs"][facts["arms"][n]["runs"][0]].get("curve", []) for n in ABLATIONS if n in facts["arms"]}
    found = {n: c for n, c in found.items() if any(p["mse"] is not None for p in c)}
    if not found:
        return None
    fig = Figure(figsize=(11, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    for k, (name, curve) in enumerate(found.items()):
        for key, style in (("mse", "-"), ("mse_hard", "--")):
            points = [p for p in curve if p[key] is not None]
            for ax, x in ((left, "steps_per_member"), (right, "member_steps_total")):
                ax.plot([p[x] for p in points], [p[key] for p in points], style, color=f"C{k % 10}", marker="o",
                        markersize=3, label=name if key == "mse" else None)
    left.set(xlabel="optimizer steps per member", ylabel="best member's MSE, validation subset ([0,1] pixels)")
    right.set(xlabel="optimizer steps of all members together (compute)")
    left.legend(fontsize=7)
    fig.suptitle("learning curves: solid relaxed codes, dashed hard codes (first seed of each arm)", fontsize=10)
    write_figure(fig, report_dir / "learning_curves.png", dpi=100)
    return ("![learning curves against member-steps and against total compute](learning_curves.png)\n\n"
            "learning_curves.png: each arm's best member per generation, scored on the run's fixed validation subset "
            "(never test): left against the steps one member took, right against every member's steps together, so "
            "who is ahead at which budget reads off one figure. Solid: relaxed codes; dashed: hard codes.")


def _plot_tau(facts: dict[str, Any], report_dir: Path) -> str | None:
    names = [n for n in (HEADLINE, "population-defaults") if facts["runs"].get(n, {}).get("tau_rows")]
    if not names:
        return None
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names, strict=True):
        member_lines(ax, facts["runs"][name]["tau_rows"], "tau")
        ax.set_title(f"{name}: tau per member (circle: best)", fontsize=10)
        ax.set_xlabel("epoch (generation)")
        ax.set_ylabel("tau used in the epoch")
        ax.legend(fontsize=6)
    write_figure(fig, report_dir / "tau.png", dpi=100)
    return ("![tau per member, the authors' dynamics against popvae's defaults](tau.png)\n\n"
            "tau.png: each member's temperature per generation; a circle marks the generation's best.")


def _plot_figure4(facts: dict[str, Any], report_dir: Path) -> str | None:
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


def _plot_purification(facts: dict[str, Any], report_dir: Path) -> str | None:
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


def _plot_patches(facts: dict[str, Any], report_dir: Path) -> str | None:
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
