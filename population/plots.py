"""Pictures of a run: tau and loss per member over epochs, and reconstruction grids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from popvae.attacks.figures import sample_grid, write_figure
from popvae.models.dataset_loading import to_float


def plot_history(rows: list[dict[str, Any]], out_dir: Path, run_id: str | None = None, select_on: str = "val",
                 baseline: list[dict[str, Any]] | None = None) -> list[Path]:
    """tau.png and loss.png: one line per member over 1-based epochs (as the console counts); the best member of
    each epoch is circled; `baseline` (the history of the annealed baseline trained on the same budget) is drawn
    over them as a dashed black line. The title names the run (default: the folder holding `out_dir`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = run_id or out_dir.resolve().parent.name
    split = "validation" if select_on == "val" else "training"
    written = []
    for column, label, title, name in (
        ("tau", "tau used in the epoch", "temperature per member", "tau.png"),
        ("score", f"{split} loss per image (summed BCE + KL)", f"selection loss per member ({split})", "loss.png"),
    ):
        fig = Figure(figsize=(7, 4), layout="constrained")  # the Figure API renders with Agg, no display needed
        ax = fig.subplots()
        member_lines(ax, rows, column)
        if baseline:
            mine = sorted(baseline, key=lambda r: r["epoch"])
            ax.plot([r["epoch"] + 1 for r in mine], [r[column] for r in mine], "k--", marker="x", label="baseline (annealed)")
        ax.set_title(f"run {run_id}: {title}", fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, title="member (circle: best)")
        written.append(write_figure(fig, out_dir / name, dpi=100))
    return written


def member_lines(ax: Any, rows: list[dict[str, Any]], column: str) -> None:
    """One line per member of `column` over 1-based epochs, labelled "index strategy"; each epoch's best circled."""
    for member in sorted({r["member"] for r in rows}):
        mine = sorted((r for r in rows if r["member"] == member), key=lambda r: r["epoch"])
        ax.plot([r["epoch"] + 1 for r in mine], [r[column] for r in mine], marker=".", label=f"{member} {mine[0]['strategy']}")
        best = [r for r in mine if r["is_best"]]
        ax.scatter([r["epoch"] + 1 for r in best], [r[column] for r in best], s=60, facecolors="none", edgecolors="k")


@torch.no_grad()
def save_reconstruction_grid(model: torch.nn.Module, images: np.ndarray, path: Path, n: int = 16,
                             title: str | None = None) -> Path:
    """Test images on the top row, their deterministic reconstructions (with the model's tau, if it has one) beneath."""
    model.eval()
    x = to_float(images[:n], next(model.parameters()).device)
    tau = getattr(model, "tau", None)
    below = "reconstruction" + (f" (tau {tau:.2f})" if isinstance(tau, int | float) else "")
    sample_grid({"test image": x.cpu(), below: model.reconstruct(x).cpu()}, path, title=title)
    return path
