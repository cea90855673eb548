"""Latent-space and maximum-damage attacks (robust-AE paper, eqs. 12-13, Table 1), under L2 input budgets.

Latent attack: min ||E(x+d) - E(x_t)||_2 s.t. ||d||_2 <= lambda, x_t from another class: can a small
input change make the encoder report another image's code? Maximum damage: max ||D(E(x+d)) - D(E(x))||_2:
how far can the reconstruction be pushed? Each of n_images random test images is attacked in `trials`
independent trials (fresh target and random start); MS-SSIM triples are reported as mean and std.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from popvae.attacks.batches import map_batches
from popvae.attacks.metrics import accuracy_ci, ms_ssim, ms_ssim_settings
from popvae.attacks.pgd import STEP_RULE, pgd
from popvae.models.protocol import AutoEncoder

BUDGETS = (1.0, 3.0, 5.0)


def _draw(y: Tensor, n_images: int, trials: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (each of n_images repeated `trials` times) and, per trial, a target of another class."""
    rng = np.random.default_rng(seed)
    labels = y.cpu().numpy()
    if len(np.unique(labels)) < 2:
        raise ValueError("the latent attack needs test images of at least two classes")
    sources = np.repeat(rng.choice(len(labels), size=min(n_images, len(labels)), replace=False), trials)
    targets = np.array([rng.choice(np.flatnonzero(labels != labels[s])) for s in sources])
    return sources, targets


def _summary(values: Tensor) -> dict[str, float]:
    return {"mean": float(values.mean()), "std": float(values.std()) if values.numel() > 1 else 0.0}


def _run(model: AutoEncoder, x: Tensor, y: Tensor, budgets: Sequence[float], n_images: int, trials: int, steps: int,
         seed: int, batch_size: int, tick: Callable[[str], None] | None, targeted: bool,
         latent_mlp: nn.Module | None) -> dict[str, Any]:
    sources, targets = _draw(y, n_images, trials, seed)
    xs, xt, ys, yt = x[sources], x[targets], y[sources], y[targets]
    generator = torch.Generator(x.device).manual_seed(seed)
    recon = lambda v: model.decode(model.encode(v))
    with torch.no_grad():
        clean_rec = map_batches(recon, xs, batch_size=batch_size)
        z_target = map_batches(model.encode, xt, batch_size=batch_size)

    def attack(eps: float) -> Tensor:
        def one_batch(xb: Tensor, zt: Tensor, rb: Tensor) -> Tensor:
            if targeted:  # eq. 12: pull the code towards the target's
                loss = lambda v: (model.encode(v) - zt).flatten(1).norm(dim=1)
            else:  # eq. 13: push the reconstruction away from the clean one
                loss = lambda v: (recon(v) - rb).flatten(1).norm(dim=1)
            return pgd(loss, xb, eps, steps, norm="l2", maximize=not targeted, generator=generator)

        return map_batches(one_batch, xs, z_target, clean_rec, batch_size=batch_size)

    name = "latent" if targeted else "max_damage"
    rows = []
    for eps in budgets:
        x_adv = attack(eps)
        with torch.no_grad():
            z_adv = map_batches(model.encode, x_adv, batch_size=batch_size)
            adv_rec = map_batches(model.decode, z_adv, batch_size=batch_size)
        row: dict[str, Any] = {
            "budget_l2": eps,
            "ms_ssim_input_vs_adv_input": _summary(ms_ssim(xs, x_adv)),
            "ms_ssim_clean_rec_vs_adv_rec": _summary(ms_ssim(clean_rec, adv_rec)),
            "perturbation_l2": _summary((x_adv - xs).flatten(1).norm(dim=1)),
        }
        if targeted:
            row["ms_ssim_target_vs_adv_rec"] = _summary(ms_ssim(xt, adv_rec))
            row["latent_distance_to_target"] = _summary((z_adv - z_target).norm(dim=1))
        if latent_mlp is not None:  # trials of one image are not independent: the CI is over images
            with torch.no_grad():
                pred = latent_mlp(z_adv).argmax(1)
            correct = (pred == ys).view(-1, trials)
            row["latent_mlp_accuracy_worst_case"] = accuracy_ci(correct.all(1))
            row["latent_mlp_accuracy_per_trial"] = float(correct.float().mean())
            row["latent_mlp_target_hit_rate_per_trial"] = float((pred == yt).float().mean())
        rows.append(row)
        if tick is not None:
            tick(f"{name} lambda={eps}")
    out: dict[str, Any] = {
        "setting": {"norm": "l2", "budgets": list(budgets), "n_images": len(sources) // trials, "trials": trials,
                    "pgd_steps": steps, "pgd_step_size": STEP_RULE.replace("eps", "lambda"), "ms_ssim": ms_ssim_settings(),
                    "reconstruction": "decode(encode(x)), noise-free"},
        "rows": rows,
        "images": {"source": xs[:8].cpu(), "adversarial_input": x_adv[:8].cpu(), "clean_reconstruction": clean_rec[:8].cpu(),
                   "adversarial_reconstruction": adv_rec[:8].cpu(), **({"target": xt[:8].cpu()} if targeted else {})},
    }
    if latent_mlp is not None:
        with torch.no_grad():
            clean_codes = map_batches(model.encode, xs[::trials], batch_size=batch_size)
            out["latent_mlp_clean_accuracy"] = accuracy_ci(latent_mlp(clean_codes).argmax(1) == ys[::trials])
    return out


def latent_attack(model: AutoEncoder, x: Tensor, y: Tensor, latent_mlp: nn.Module | None = None,
                  budgets: Sequence[float] = BUDGETS, n_images: int = 100, trials: int = 10, steps: int = 30, seed: int = 0,
                  batch_size: int = 250, tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Eq. 12 per budget: MS-SSIM (target, adv. reconstruction), (input, adv. input), (clean rec., adv. rec.),
    and on the attacked codes the latent MLP's accuracy (an image counts as correct only if it survives all its
    trials, with a Wilson CI over images; also the per-trial mean) and its per-trial target hit rate."""
    return _run(model, x, y, budgets, n_images, trials, steps, seed, batch_size, tick, True, latent_mlp)


def max_damage(model: AutoEncoder, x: Tensor, y: Tensor, budgets: Sequence[float] = BUDGETS, n_images: int = 100,
               trials: int = 10, steps: int = 30, seed: int = 0, batch_size: int = 250,
               tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Eq. 13 per budget: MS-SSIM (input, adv. input) and (clean rec., adv. rec.)."""
    return _run(model, x, y, budgets, n_images, trials, steps, seed, batch_size, tick, False, None)
