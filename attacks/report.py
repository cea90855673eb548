"""`popvae evaluate`: load a trained autoencoder, run the chosen experiments, write report.json, report.md
and PNG plots into one folder.

Every experiment sees the same (optionally subsampled, seeded) test set and the same cached CNN; the
reconstruction section (MSE, SSIM, PSNR, MS-SSIM, the CNN-feature Fréchet distance) is always written.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchmetrics
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn

from popvae.attacks import figures, tables
from popvae.attacks.batches import map_batches
from popvae.attacks.classifier import LatentMLP, cached_cnn, fit
from popvae.attacks.encoder_attacks import latent_attack, max_damage
from popvae.attacks.experiments import EXPERIMENTS
from popvae.attacks.latent_space_pgd import latent_pgd
from popvae.attacks.metrics import (
    FRECHET_NAME,
    Unavailable,
    frechet_distance,
    inception_fid,
    lpips,
    ms_ssim,
    ms_ssim_settings,
    mse,
    psnr,
    ssim,
)
from popvae.attacks.patches import patch_detection
from popvae.attacks.purification import purification
from popvae.attacks.unseen import unseen_classes
from popvae.models.atomic import atomic_write
from popvae.models.checkpoint import load_model
from popvae.models.dataset_loading import ImageSet, cache_root, to_float, train_val_split
from popvae.models.protocol import AutoEncoder

LATENT_MLP_TRAIN_MAX, VAL_MAX = 10_000, 2_000


def default_cache_dir() -> Path:
    """Where the per-dataset CNNs are cached: $POPVAE_CACHE, else ~/.cache/popvae."""
    return cache_root() / "classifiers"


def load_autoencoder(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint file as (model in eval mode, meta with the checkpoint path as `checkpoint`); ValueError when the
    model is no AutoEncoder. A run or job folder is resolved to its checkpoint by `population.evaluation`."""
    path = Path(path)
    model, meta = load_model(path, map_location=map_location)
    if not isinstance(model, AutoEncoder):
        raise ValueError(f"{path} holds a {type(model).__name__}, which does not implement the AutoEncoder protocol")
    meta["checkpoint"] = str(path)
    return model, meta


def _jsonable(value: Any) -> Any:
    """Plain JSON: infinities and NaN become the strings "inf", "-inf", "nan" (json.dumps would write invalid JSON)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _rgb(x: Tensor) -> Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _reconstruction(model: AutoEncoder, cnn: nn.Module, x: Tensor, fid_weights: str | Path | None,
                    batch_size: int) -> dict[str, Any]:
    with torch.no_grad():
        rec = map_batches(lambda v: model.reconstruct(v, sample=False), x, batch_size=batch_size)
        fd = frechet_distance(cnn.features, cnn.num_features, x, rec)
        fid_metric = inception_fid(fid_weights)
        if isinstance(fid_metric, Unavailable):
            fid: float | dict[str, str] = {"unavailable": fid_metric.reason}
        else:
            fid_metric = fid_metric.to(x.device)
            for real, fake in zip(x.split(batch_size), rec.split(batch_size)):
                fid_metric.update(_rgb(real), real=True)
                fid_metric.update(_rgb(fake), real=False)
            fid = float(fid_metric.compute())
        return {
            "n": len(x), "reconstruction": "noise-free", "mse": float(mse(rec, x).mean()), "ssim": float(ssim(rec, x).mean()),
            "psnr": float(psnr(rec, x).mean()), "ms_ssim": float(ms_ssim(rec, x).mean()), "ms_ssim_settings": ms_ssim_settings(),
            "frechet_distance": {"name": FRECHET_NAME, "value": fd, "features": "penultimate layer of the basic CNN (train set)"},
            "fid": fid, "images": {"test": x[:8].cpu(), "reconstruction": rec[:8].cpu()},
            "mse_hard": _hard_mse(model, x, batch_size),
        }


def _hard_mse(model: AutoEncoder, x: Tensor, batch_size: int) -> float | None:
    """A GS-VAE's per-pixel MSE from hard codes (one-hot argmax): what its discrete code alone reconstructs, beside the
    relaxed code's `mse` (at high tau a continuous code); None for a model without discrete codes."""
    if not hasattr(model, "hard_codes"):
        return None
    rec = map_batches(lambda v: model.reconstruct(v, sample=False, hard=True), x, batch_size=batch_size)
    return float(mse(rec, x).mean())


def _latent_mlp(model: AutoEncoder, train: ImageSet, seed: int, device: str, batch_size: int) -> nn.Module:
    """The downstream classifier on the model's noise-free codes of (at most 10k) training images."""
    idx = np.sort(np.random.default_rng(seed).permutation(len(train))[:LATENT_MLP_TRAIN_MAX])
    with torch.no_grad():
        z = map_batches(model.encode, to_float(train.images[idx], device), batch_size=batch_size)
    labels = torch.as_tensor(train.labels[idx])
    return fit(LatentMLP(z.shape[1], len(train.classes)), z, labels, epochs=10, seed=seed, device=device)


def evaluate(model: nn.Module, train: ImageSet, test: ImageSet, experiments: list[str], subset: int | None, out_dir: Path,
             seed: int, device: str, progress: bool, *, held_out: Sequence[int] | None = None, cache_dir: Path | None = None,
             lpips_weights: str | Path | None = None, fid_weights: str | Path | None = None,
             settings: dict[str, dict[str, Any]] | None = None, batch_size: int = 250,
             about: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run `experiments` (names from EXPERIMENTS) on `model`; write report.json, report.md and PNGs into out_dir.

    `subset` draws that many test images at random (seeded) for every experiment; `held_out` names the
    classes the model never saw (for `unseen`); `settings` passes keyword arguments to an experiment's
    function, e.g. {"purification": {"pgd_steps": 40}}; `about` (the checkpoint, whether the budgets were the
    quick ones) goes into the report's meta. `progress` shows it on stderr, with the first fit of the purification
    CNN said and timed. Returns the report (as written to JSON).
    """
    unknown = sorted(set(experiments) - set(EXPERIMENTS))
    if unknown or not experiments:
        raise ValueError(f"unknown experiments {unknown}; choose from {', '.join(EXPERIMENTS)}")
    settings = settings or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = model.to(device).eval()
    if subset is not None and subset < len(test):
        test = test.subset(np.sort(np.random.default_rng(seed).choice(len(test), subset, replace=False)))
    x, y = to_float(test.images, device), torch.as_tensor(test.labels, device=device)

    report: dict[str, Any] = {"meta": {
        "family": getattr(model, "family", type(model).__name__), "stochastic": bool(model.stochastic),
        "tau": getattr(model, "tau", None), "experiments": list(experiments), "seed": seed, "device": device,
        "test_images": len(test), "test_subset": subset, "train_images": len(train),
        "versions": {"torch": torch.__version__, "torchmetrics": torchmetrics.__version__, "python": platform.python_version()},
        **(about or {}),
    }}
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task("the purification CNN", total=len(experiments) + 1)
        tick: Callable[[str], None] = lambda label: bar.update(task, description=label)
        fitting = (lambda path, epochs: cnn_fit_progress(bar, path, epochs, len(train))) if progress else None
        cnn = cached_cnn(train, cache_dir or default_cache_dir(), seed=seed, device=device, on_fit=fitting)
        tick("reconstruction")
        report["reconstruction"] = _reconstruction(model, cnn, x, fid_weights, batch_size)
        bar.advance(task)
        for name in experiments:
            tick(name)
            common = {"seed": seed, "tick": tick, "batch_size": batch_size, **settings.get(name, {})}
            if name == "purification":
                result = purification(model, cnn, x, y, **{"batch_size": min(batch_size, 128), **common})
            elif name == "latent":
                result = latent_attack(model, x, y, _latent_mlp(model, train, seed, device, batch_size), **common)
            elif name == "max-damage":
                result = max_damage(model, x, y, **common)
            elif name == "latent-pgd":
                result = latent_pgd(model, x, lpips=lpips(lpips_weights), **common)
            elif name == "patches":
                _, val_idx = train_val_split(len(train), 0.1, seed)
                result = patch_detection(model, to_float(train.images[val_idx[:VAL_MAX]], device), x, **common)
            else:
                result = unseen_classes(model, x, y, list(held_out or []), test.classes, batch_size=batch_size)
            report[name] = result
            bar.advance(task)
    return _write(report, out_dir)


def cnn_fit_progress(bar: Progress, path: Path, epochs: int, images: int) -> Callable[[int, int], None]:
    """Says that the purification CNN is fit once and where it is cached, then shows the fit's steps: a bar with
    its ETA on a terminal, a plain line every tenth in a log (a bar cannot redraw there)."""
    bar.console.print(f"fitting the purification CNN once ({epochs} epochs over {images} training images; minutes on a "
                      f"CPU), cached as {path}: later evaluations on this dataset load it", markup=False, highlight=False,
                      soft_wrap=True)
    started = time.monotonic()
    task = bar.add_task("fitting the purification CNN", total=None)
    said = [0]

    def on_step(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)
        tenth = 10 * done // total
        if not bar.console.is_terminal and tenth > said[0]:
            said[0] = tenth
            left = (time.monotonic() - started) / done * (total - done)
            bar.console.print(f"fitting the purification CNN: {done}/{total} steps, ETA {int(left // 60)}:{int(left % 60):02d}",
                              markup=False, highlight=False, soft_wrap=True)

    return on_step


def _provenance(meta: dict[str, Any]) -> list[str]:
    """Which checkpoint was attacked, and whether with the quick budgets (numbers not comparable to full ones)."""
    lines = [f"Checkpoint: `{meta['checkpoint']}`."] if meta.get("checkpoint") else []
    if "quick" in meta:
        lines.append("Attack budgets: quick (`--quick`, `quick=True`): reduced for a CPU, so not comparable with a full "
                     "evaluation's numbers." if meta["quick"] else "Attack budgets: full.")
    return [*lines, ""] if lines else []


def _model_label(meta: dict[str, Any]) -> str:
    tau = meta.get("tau")
    return f"{meta['family']}" + (f", tau {tau:.2f}" if isinstance(tau, int | float) else "") + \
        f", {meta['test_images']} test images, seed {meta['seed']}"


def _write(report: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    """Pictures from each section's `images`, then the JSON and Markdown without them."""
    for name, section in report.items():
        images = section.pop("images", None) if isinstance(section, dict) else None
        if images:
            figures.sample_grid(images, out_dir / f"samples_{name}.png", title=f"{name}: {_model_label(report['meta'])}")
            section["sample_grid"] = {"file": f"samples_{name}.png", "rows": list(images)}
    if "purification" in report:
        figures.purification_plot(report["purification"], out_dir / "purification_accuracy.png")
    if "latent-pgd" in report:
        figures.latent_pgd_plot(report["latent-pgd"], out_dir / "latent_pgd_distortion.png")
    latent_like = {k: report[k] for k in ("latent", "max-damage") if k in report}
    if latent_like:
        figures.latent_plot(latent_like, out_dir / "latent_ms_ssim.png")
    report = _jsonable(report)
    atomic_write(out_dir / "report.json", lambda fh: fh.write(json.dumps(report, indent=2, allow_nan=False).encode()))
    atomic_write(out_dir / "report.md", lambda fh: fh.write("\n".join(_markdown(report)).encode()))
    return report


def _markdown(report: dict[str, Any]) -> list[str]:
    m = report["meta"]
    lines = ["# popvae evaluation", "",
             f"Model family `{m['family']}` (stochastic: {m['stochastic']}, tau: {m['tau']}); {m['test_images']} test images"
             f"{' (random subset)' if m['test_subset'] else ''}; seed {m['seed']}; device {m['device']}.", "",
             *_provenance(m), *tables.reconstruction(report["reconstruction"])]
    render = {"purification": tables.purification, "latent": lambda r: tables.latent("Latent-space attack (eq. 12)", r),
              "max-damage": lambda r: tables.latent("Maximum damage attack (eq. 13)", r), "latent-pgd": tables.latent_pgd,
              "patches": tables.patches, "unseen": tables.unseen}
    for name in m["experiments"]:
        lines += render[name](report[name])
    return lines + _pictures(report)


# What each picture shows, for report.md (the grids' rows are named in the pictures themselves).
_PLOTS = {
    "purification": ("purification_accuracy.png", "CNN accuracy against eps for FGSM and PGD: the CNN alone, the paper's "
                     "non-adaptive setting, the adaptive attack through the purifier and the worst case, with Wilson 95 % "
                     "intervals; the dotted line is the clean accuracy through the purifier."),
    "latent-pgd": ("latent_pgd_distortion.png", "SSIM and PSNR of the attacked reconstruction to the clean one against the "
                   "latent L2 eps (untargeted and all-black targeted); the dashed line is the AADDC limit."),
    "latent": ("latent_ms_ssim.png", "MS-SSIM (mean ± std over images and trials) against the input L2 budget, for the "
               "latent and the maximum-damage attacks."),
}
_GRIDS = {
    "reconstruction": "test images and their reconstructions",
    "purification": "clean images, the attacked images and what the purifier makes of them, at the largest eps",
    "latent": "inputs, their adversarial versions, the targets and the adversarial reconstructions",
    "max-damage": "inputs, their adversarial versions and both reconstructions",
    "latent-pgd": "the clean reconstruction and the reconstructions after the untargeted and the targeted latent attacks",
    "patches": "test images with the largest patch of each shape",
    "unseen": "images of held-out and of seen classes with their reconstructions",
}


def _pictures(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Pictures", ""]
    plots = {"latent": "latent", "max-damage": "latent", "purification": "purification", "latent-pgd": "latent-pgd"}
    for key in dict.fromkeys(plots[name] for name in report["meta"]["experiments"] if name in plots):
        file, what = _PLOTS[key]
        lines.append(f"- [{file}]({file}): {what}")
    for name, section in report.items():
        if isinstance(section, dict) and "sample_grid" in section:
            file = section["sample_grid"]["file"]
            lines.append(f"- [{file}]({file}): {_GRIDS.get(name, name)}, one named row each.")
    return lines if len(lines) > 3 else []
