"""The report's pictures: accuracy against eps, distortion curves, and sample grids (matplotlib's Figure
API, which renders with Agg and never needs a display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch import Tensor

from popvae.models.atomic import atomic_write


def write_figure(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """A PNG of `fig`, written atomically like every file of a run."""
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
    return path


def sample_grid(images: dict[str, Tensor], path: Path, title: str | None = None) -> Path | None:
    """One row per entry (same count and shape each), top to bottom in insertion order, each named above it
    ("clean", "fgsm adaptive purified eps 0.3", ...): a reader sees which row is the original, the attack, the
    purified image."""
    rows = {name: t for name, t in images.items() if t.numel() > 0}
    if not rows:
        return None
    from torchvision.utils import make_grid  # importing torchvision costs a second: only where a grid is drawn
    n = min(len(t) for t in rows.values())
    fig = Figure(figsize=(max(4.0, 0.75 * n), 1.0 * len(rows) + (0.3 if title else 0.0)), layout="constrained")
    for ax, (name, t) in zip(fig.subplots(len(rows), 1, squeeze=False)[:, 0], rows.items(), strict=True):
        grid = make_grid(t[:n].detach().float().cpu(), nrow=n, padding=2, pad_value=1.0)  # 3 x H x W, even for 1 channel
        ax.imshow(grid.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(_row_label(name), loc="left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return write_figure(fig, path, dpi=100)


def _row_label(name: str) -> str:
    """`fgsm_adaptive_purified_eps0.3` -> `fgsm adaptive purified eps 0.3`."""
    return name.replace("_", " ").replace("eps", "eps ").replace("  ", " ")


def purification_plot(result: dict[str, Any], path: Path) -> None:
    attacks = [a for a in result["setting"]["attacks"] if a in result]
    fig = Figure(figsize=(5 * len(attacks), 4), layout="constrained")
    for ax, attack in zip(fig.subplots(1, len(attacks), squeeze=False)[0], attacks):
        rows = result[attack]
        eps = [r["eps"] for r in rows]
        for setting in ("cnn_alone", "non_adaptive", "adaptive", "worst_case"):
            acc = [r[setting]["accuracy"] for r in rows]
            err = [[a - r[setting]["ci95"][0] for a, r in zip(acc, rows)], [r[setting]["ci95"][1] - a for a, r in zip(acc, rows)]]
            ax.errorbar(eps, acc, yerr=err, marker="o", capsize=3, label=setting.replace("_", " "))
        ax.axhline(result["clean"]["purified"]["accuracy"], color="grey", ls=":", label="clean, purified")
        ax.set(title=f"{attack.upper()} (L-inf)", xlabel="eps", ylabel="CNN accuracy", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    write_figure(fig, path)


def latent_pgd_plot(result: dict[str, Any], path: Path) -> None:
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_ssim, ax_psnr = fig.subplots(1, 2)
    for mode in ("untargeted", "targeted_black"):
        rows = result[mode]["rows"]
        eps = [r["eps"] for r in rows]
        ax_ssim.plot(eps, [r["ssim"] for r in rows], marker="o", label=f"{mode} (AADDC {result[mode]['aaddc_ssim']:.3f})")
        finite = [(e, r["psnr"]) for e, r in zip(eps, rows) if r["psnr"] != float("inf")]
        ax_psnr.plot(*zip(*finite), marker="o", label=mode)
    ax_ssim.axhline(result["setting"]["ssim_limit"], color="grey", ls="--", label="limit")
    ax_ssim.set(title="SSIM to clean reconstruction", xlabel="latent L2 eps", ylim=(0, 1.02))
    ax_psnr.set(title="PSNR to clean reconstruction (dB)", xlabel="latent L2 eps")
    ax_ssim.legend(fontsize=8)
    ax_psnr.legend(fontsize=8)
    write_figure(fig, path)


def latent_plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    """MS-SSIM mean +- std against the L2 budget, for the latent and maximum-damage attacks."""
    fig = Figure(figsize=(5 * len(results), 4), layout="constrained")
    for ax, (name, result) in zip(fig.subplots(1, len(results), squeeze=False)[0], results.items()):
        rows = result["rows"]
        budgets = [r["budget_l2"] for r in rows]
        for key in [k for k in rows[0] if k.startswith("ms_ssim_")]:
            ax.errorbar(budgets, [r[key]["mean"] for r in rows], yerr=[r[key]["std"] for r in rows], marker="o", capsize=3,
                        label=key.removeprefix("ms_ssim_").replace("_", " "))
        ax.set(title=name, xlabel="input L2 budget", ylabel="MS-SSIM", ylim=(0, 1.02))
        ax.legend(fontsize=8)
    write_figure(fig, path)
