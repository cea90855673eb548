"""The robust section's report: robust-converged.json, robust-converged.md and learning_curves.png, from whatever
training and evaluation jobs are finished, beside the papers' numbers (`population.paper_numbers`).

A number over seeds is the mean of the per-seed values with a Student-t 95 % interval over seeds (none with one
seed); "std" is the spread over a seed's images and trials, averaged over seeds. Missing arms are named.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from popvae.attacks.figures import write_figure
from popvae.attacks.metrics import FRECHET_NAME
from popvae.models.atomic import atomic_write
from popvae.population import folder_io
from popvae.population import paper_numbers as paper
from popvae.population.robust_converged import Section, evaluated, evaluation_dir, job_id, trained
from popvae.population.robust_presets import source_of
from popvae.population.run_folder import RunFolder

REPORT_JSON = "robust-converged.json"

# (column, experiment, key in its rows, higher = more robust)
TABLE1 = (("latent: target vs adv. rec.", "latent", "ms_ssim_target_vs_adv_rec", False),
          ("latent: input vs adv. input", "latent", "ms_ssim_input_vs_adv_input", None),
          ("damage: rec. vs adv. rec.", "max-damage", "ms_ssim_clean_rec_vs_adv_rec", True),
          ("damage: input vs adv. input", "max-damage", "ms_ssim_input_vs_adv_input", None))


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): Student-t 95 % over the values (one per seed); NaN bounds with fewer than two."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()) if len(v) else math.nan, math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean()) - half, float(v.mean()) + half


def earlier_results(section: Section, report_dir: Path) -> dict[str, dict[str, Any]]:
    """{job id: its seed entry} for every seed that an earlier report of this same section in `report_dir` holds
    trained and attacked. The report is what survives when the run folder does not (a scratch disk lost, a new
    machine): such a job is carried into the new report instead of trained again. A report of other settings gives
    nothing."""
    path = Path(report_dir) / REPORT_JSON
    if not path.is_file():
        return {}
    try:
        facts = folder_io.read_json(path)
        same = Section.model_validate(facts["section"]).model_dump(mode="json") == section.model_dump(mode="json")
    except Exception:  # unreadable, or written by another version of the section: nothing to carry
        return {}
    if not same:
        return {}
    return {job_id(m, int(seed)): entry for m, method in facts["methods"].items() if m in section.methods
            for seed, entry in method["seeds"].items() if "evaluation" in entry}


def collect(section: Section, out: Path, jobs: list[dict[str, Any]],
            carried: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per method: its settings' source, and per finished seed the job's metrics, validation curve and attacks; a
    job in `carried` (seed entries of an earlier report, `earlier_results`) is taken from there, marked carried."""
    methods: dict[str, Any] = {m: {"source": source_of(m), "seeds": {}, "missing": []} for m in section.methods}
    carried = carried or {}
    for job in jobs:
        entry = methods[job["method"]]
        if job["id"] in carried:
            entry["seeds"][str(job["seed"])] = carried[job["id"]] | {"carried": True}
            continue
        if not trained(job):
            entry["missing"].append(f"{job['id']} (training)")
            continue
        folder = RunFolder(job["dir"])
        seed: dict[str, Any] = {"metrics": folder.read_job_status().metrics,
                                "val_mse": [r.get("val_mse") for r in folder.read_history_rows()],
                                "lr": [r.get("lr") for r in folder.read_history_rows()]}
        if evaluated(out, job["id"]):
            seed["evaluation"] = folder_io.read_json(evaluation_dir(out, job["id"]) / "report.json")
        else:
            entry["missing"].append(f"{job['id']} (attacks)")
        entry["seeds"][str(job["seed"])] = seed
    return {"section": section.model_dump(mode="json"), "methods": methods,
            "complete": not any(m["missing"] for m in methods.values())}


def _evals(entry: dict[str, Any]) -> list[dict[str, Any]]:
    return [s["evaluation"] for s in entry["seeds"].values() if "evaluation" in s]


def _fmt(values: list[float], digits: int = 2, scale: float = 1.0) -> str:
    if not values:
        return "missing"
    mean, low, high = t_interval([scale * v for v in values])
    ci = f" [{low:.{digits}f}, {high:.{digits}f}]" if math.isfinite(low) else ""
    return f"{mean:.{digits}f}{ci}"


def table1_cells(entry: dict[str, Any], experiment: str, key: str, budget_index: int) -> tuple[list[float], list[float]]:
    """(per-seed means, per-seed stds) of one Table 1 column at one budget."""
    rows = [e[experiment]["rows"][budget_index][key] for e in _evals(entry)]
    return [r["mean"] for r in rows], [r["std"] for r in rows]


def _table1(f: dict[str, Any], dataset: str) -> list[str]:
    published = paper.ROBUST_TABLE.get(dataset, {})
    lines = [f"## Table 1 ({paper.ROBUST_GMM}): latent and maximum-damage attacks, MS-SSIM", "",
             "Cells: mean over seeds [t 95 % over seeds] ± std over images and trials (seed average); the paper's "
             "number in brackets. Latent target vs adv. rec.: lower = more robust; damage rec. vs adv. rec.: higher = "
             "more robust.", "",
             "| method | seeds | L2 | " + " | ".join(c[0] for c in TABLE1) + " |", "|---|---|---|" + "---|" * len(TABLE1)]
    for m, entry in f["methods"].items():
        evals = _evals(entry)
        if not evals:
            lines.append(f"| {m} | 0 | | missing | | | |")
            continue
        for b, budget in enumerate(evals[0]["latent"]["setting"]["budgets"]):
            cells = []
            for c, (_, experiment, key, _) in enumerate(TABLE1):
                means, stds = table1_cells(entry, experiment, key, b)
                pub = published.get(m, (None,) * 4)[c]
                cells.append(f"{_fmt(means)} ± {np.mean(stds):.2f}" + (f" ({pub[b]:.2f})" if pub and b < len(pub) else ""))
            lines.append(f"| {m} | {len(evals)} | {budget:g} | " + " | ".join(cells) + " |")
    return lines + [""]


def _table3(f: dict[str, Any], dataset: str) -> list[str]:
    published = paper.LATENT_MLP.get(dataset, {})
    lines = [f"## Table 3 ({paper.ROBUST_GMM}): latent MLP accuracy (%), clean and under the latent attack at L2 1", "",
             "Under attack: per trial (worst over a source image's trials in the JSON). Mean over seeds [t 95 %].", "",
             "| method | clean | under attack, L2 1 | paper clean / attacked |", "|---|---|---|---|"]
    for m, entry in f["methods"].items():
        evals = _evals(entry)
        clean = [e["latent"]["latent_mlp_clean_accuracy"]["accuracy"] for e in evals]
        attacked = [e["latent"]["rows"][0]["latent_mlp_accuracy_per_trial"] for e in evals]
        pub = published.get(m)
        lines.append(f"| {m} | {_fmt(clean, 1, 100)} | {_fmt(attacked, 1, 100)} | "
                     f"{'' if pub is None else f'{pub[0]} / {pub[1]}'} |")
    return lines + [""]


def _quality(f: dict[str, Any], dataset: str) -> list[str]:
    fid = paper.FID.get(dataset, {})
    lines = [f"## Reconstructions: test MSE and {FRECHET_NAME}", "",
             f"The {FRECHET_NAME} is measured in the feature space of popvae's own CNN trained on this dataset, between "
             "test images and their reconstructions: it is not the paper's FID (Inception features, samples), which is "
             "printed beside it for reference only.", "",
             "| method | seeds | epochs trained | best epoch | training wall h | test MSE | Fréchet (popvae CNN) | "
             "paper FID |", "|---|---|---|---|---|---|---|---|"]
    for m, entry in f["methods"].items():
        seeds = list(entry["seeds"].values())
        mse = [s["metrics"]["test_mse"] for s in seeds]
        fd = [e["reconstruction"]["frechet_distance"]["value"] for e in _evals(entry)]
        epochs = "/".join(str(s["metrics"].get("epochs_trained", "")) for s in seeds)
        best = "/".join(str(s["metrics"].get("best_epoch", "")) for s in seeds)
        hours = "/".join(f"{s['metrics']['train_seconds'] / 3600:.2f}" for s in seeds)
        lines.append(f"| {m} | {len(seeds)} | {epochs} | {best} | {hours} | {_fmt(mse, 4)} | {_fmt(fd, 2)} | "
                     f"{fid.get(m, '')} |")
    return lines + [""]


def _aaddc(f: dict[str, Any], dataset: str) -> list[str]:
    published = paper.AADDC_SSIM.get(dataset, {})
    grid = next((e["latent-pgd"]["setting"]["eps_grid"] for entry in f["methods"].values() for e in _evals(entry)), None)
    lines = [f"## {paper.LU_CHEN} Table 2: AADDC under latent PGD, SSIM limit 0.4 (larger = more robust)", "",
             f"Our latent L2 eps grid: {grid}. Lu & Chen's own grid was not found in the sources available here, so "
             "the values rank methods within this table; the paper's column is printed for its direction (DAE above "
             "VAE), not for equality.", "",
             "| method | untargeted | all-black targeted | paper (all-black) |", "|---|---|---|---|"]
    for m, entry in f["methods"].items():
        evals = _evals(entry)
        kind, _, reg = m.partition("-")
        pub = published.get(reg, (None, None))[0 if kind == "vae" else 1] if kind in ("vae", "dae") and reg in published \
            else None
        lines.append(f"| {m} | {_fmt([e['latent-pgd']['untargeted']['aaddc_ssim'] for e in evals], 3)} | "
                     f"{_fmt([e['latent-pgd']['targeted_black']['aaddc_ssim'] for e in evals], 3)} | "
                     f"{'' if pub is None else pub} |")
    return lines + [""]


def _raven(f: dict[str, Any]) -> list[str]:
    lines = ["## RAVEN against the VAE: latent MLP accuracy (%) under the latent attack, and test MSE", "",
             "| method | test MSE | clean | L2 1 | L2 3 | L2 5 |", "|---|---|---|---|---|---|"]
    for m in ("vae-kl", "raven"):
        entry = f["methods"].get(m)
        if entry is None:
            continue
        evals = _evals(entry)
        mse = [s["metrics"]["test_mse"] for s in entry["seeds"].values()]
        clean = [e["latent"]["latent_mlp_clean_accuracy"]["accuracy"] for e in evals]
        per_budget = [_fmt([e["latent"]["rows"][b]["latent_mlp_accuracy_per_trial"] for e in evals], 1, 100)
                      for b in range(3)]
        lines.append(f"| {m} | {_fmt(mse, 4)} | {_fmt(clean, 1, 100)} | " + " | ".join(per_budget) + " |")
    return lines + [""]


def compare(a: list[float], b: list[float], higher_is_better: bool) -> str:
    """Whether arm a beats arm b: 'holds' when their t-intervals over seeds are apart in a's favour, 'reversed' when
    apart the other way, otherwise 'not resolved'; with one seed on either side only the direction is said."""
    if not a or not b:
        return "missing"
    (ma, la, ha), (mb, lb, hb) = t_interval(a), t_interval(b)
    better = ma > mb if higher_is_better else ma < mb
    if not all(math.isfinite(v) for v in (la, ha, lb, hb)):
        return f"{'better' if better else 'not better'} on one seed (no interval)"
    if (la > hb) if higher_is_better else (ha < lb):
        return "holds (intervals apart)"
    if (ha < lb) if higher_is_better else (la > hb):
        return "reversed (intervals apart)"
    return f"not resolved (intervals overlap; means {'agree' if better else 'disagree'})"


def _reading(f: dict[str, Any]) -> list[str]:
    methods = f["methods"]

    def col(m: str, experiment: str, key: str, b: int) -> list[float]:
        return table1_cells(methods[m], experiment, key, b)[0] if m in methods and _evals(methods[m]) else []

    lines = ["## The reading", ""]
    for other in ("gmm-dae", "vae-kl"):
        for b, budget in enumerate((1, 3, 5)):
            latent = compare(col("robust-gmm-dae", "latent", "ms_ssim_target_vs_adv_rec", b),
                             col(other, "latent", "ms_ssim_target_vs_adv_rec", b), False)
            damage = compare(col("robust-gmm-dae", "max-damage", "ms_ssim_clean_rec_vs_adv_rec", b),
                             col(other, "max-damage", "ms_ssim_clean_rec_vs_adv_rec", b), True)
            lines.append(f"- Robust GMM-DAE more robust than {other} at L2 {budget}: latent attack {latent}; "
                         f"maximum damage {damage}.")
    def seeds_of(m: str, pick: Any, evals: bool = True) -> list[float]:
        if m not in methods:
            return []
        return [pick(x) for x in (_evals(methods[m]) if evals else methods[m]["seeds"].values())]

    def aaddc(e: dict[str, Any]) -> float:
        return e["latent-pgd"]["targeted_black"]["aaddc_ssim"]

    for reg in ("mmd", "swt"):
        for lat in ("", "-lat"):
            dae, vae = f"dae-{reg}{lat}", f"vae-{reg}{lat}"
            lines.append(f"- {dae} more robust than {vae} (AADDC, all-black targeted): "
                         f"{compare(seeds_of(dae, aaddc), seeds_of(vae, aaddc), True)}.")

    def accuracy(e: dict[str, Any]) -> float:
        return e["latent"]["rows"][0]["latent_mlp_accuracy_per_trial"]

    def test_mse(seed: dict[str, Any]) -> float:
        return seed["metrics"]["test_mse"]

    lines.append(f"- RAVEN beats the VAE on latent MLP accuracy under the latent attack at L2 1: "
                 f"{compare(seeds_of('raven', accuracy), seeds_of('vae-kl', accuracy), True)}; its test MSE is no "
                 f"worse (lower): {compare(seeds_of('raven', test_mse, False), seeds_of('vae-kl', test_mse, False), False)}.")
    return lines + [""]


def _settings(f: dict[str, Any]) -> list[str]:
    s = f["section"]
    lines = ["## Settings (where each came from)", "", "| method | seeds | batch | epochs at most | lr decay | stopper | "
             "overrides | source |", "|---|---|---|---|---|---|---|---|"]
    for m, entry in f["methods"].items():
        over, sched = s["settings"][m]
        decay = "none" if sched["lr_decay"] == "none" else \
            f"x{sched['decay_factor']} after {sched['decay_patience']} epochs without val. improvement"
        stop = "none" if sched["stop_patience"] is None else \
            f"{sched['stop_patience']} epochs without a {sched['min_delta']:g} relative val. improvement"
        lines.append(f"| {m} | {s['seeds'].get(m, 1)} | {sched['batch_size']} | {sched['epochs']} | {decay} | {stop} | "
                     f"{json.dumps(over)} | {entry['source']} |")
    return lines + [""]


def _train_hours(f: dict[str, Any]) -> float:
    return sum(seed["metrics"]["train_seconds"] for entry in f["methods"].values()
               for seed in entry["seeds"].values()) / 3600


def _carried_note(f: dict[str, Any]) -> list[str]:
    carried = [f"{m}-s{seed}" for m, entry in f["methods"].items() for seed, s in entry["seeds"].items() if s.get("carried")]
    if not carried:
        return []
    return [f"Carried from the earlier report in this folder (their run folders were not in RUN when this was written, "
            f"so they were not trained again): {', '.join(carried)}.", ""]


def markdown(f: dict[str, Any]) -> list[str]:
    s = f["section"]
    missing = [x for entry in f["methods"].values() for x in entry["missing"]]
    lines = [f"# Robust autoencoders at their papers' budgets ({s['dataset']}, preset {s['preset']})", "",
             "Complete." if f["complete"] else f"PARTIAL: missing {', '.join(missing)}.", "",
             f"Command: `popvae robust --preset {s['preset']} --dataset {s['dataset']} --run-dir RUN --report-dir "
             "REPORT`; run again, it continues where it stopped; with `--report-only` it rewrites this report from the "
             f"finished jobs. Training so far: {_train_hours(f):.1f} h of worker wall time, summed over the trainings "
             "(which run side by side, one per worker; per seed in the reconstruction table).", "",
             *_carried_note(f),
             "Validation loss = reconstruction MSE per pixel on a held-out 10 % of the training split (at most 2,000 "
             "images): the learning-rate decay, the stopper and model.pt's epoch (the best on it) all read it.", ""]
    dataset = s["dataset"]
    return (lines + _table1(f, dataset) + _table3(f, dataset) + _quality(f, dataset) + _aaddc(f, dataset) + _raven(f)
            + _reading(f) + _settings(f) + ["![validation loss per epoch](learning_curves.png)", ""])


def plot_curves(f: dict[str, Any], path: Path) -> Path:
    """Each method's validation MSE per epoch, one line per seed."""
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    colors = {m: f"C{i % 10}" for i, m in enumerate(f["methods"])}
    for m, entry in f["methods"].items():
        for i, seed in enumerate(entry["seeds"].values()):
            vals = [v for v in seed["val_mse"] if v is not None]
            ax.plot(range(1, len(vals) + 1), vals, color=colors[m], label=m if i == 0 else None,
                    linestyle="-" if "lat" not in m else "--")
    ax.set(xlabel="epoch", ylabel="validation reconstruction MSE", yscale="log", title="learning curves")
    ax.legend(fontsize=7, ncol=2)
    return write_figure(fig, path)


def write_report(section: Section, out: Path, report_dir: Path, jobs: list[dict[str, Any]],
                 carried: dict[str, dict[str, Any]] | None = None) -> Path:
    """robust-converged.json, robust-converged.md and learning_curves.png into `report_dir`; returns the markdown."""
    facts = collect(section, Path(out), jobs, carried)
    report_dir = Path(report_dir)
    folder_io.write_json(report_dir / REPORT_JSON, facts)
    plot_curves(facts, report_dir / "learning_curves.png")
    path = report_dir / "robust-converged.md"
    atomic_write(path, lambda fh: fh.write("\n".join(markdown(facts)).encode()))
    return path
