"""Latent PGD (Lu & Chen, eqs. 4-6): perturb the code itself, as an attacker on the channel between encoder
and decoder would, and measure how the decoded image degrades as the L2 budget grows.

Untargeted: max ||D(z0 + d) - D(z0)||_2; targeted: min ||D(z0 + d) - black||_2, the all-black image.
Distortion is measured between D(z0 + d) and the clean reconstruction D(z0) (SSIM, PSNR, and LPIPS when
its weights are given), and summarised by AADDC against the limit lines SSIM 0.4 and LPIPS 0.15.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from popvae.attacks.batches import map_batches
from popvae.attacks.metrics import Unavailable, aaddc, mse, psnr, ssim
from popvae.attacks.pgd import STEP_RULE, pgd
from popvae.models.protocol import AutoEncoder

# L2 budgets in latent units (0 anchors the curve at the clean reconstruction).
EPS_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0)
SSIM_LIMIT, LPIPS_LIMIT = 0.4, 0.15


def _attack(model: AutoEncoder, z0: Tensor, clean: Tensor, targeted: bool, eps: float, steps: int,
            generator: torch.Generator, batch_size: int) -> Tensor:
    if eps == 0:
        return z0

    def one_batch(zb: Tensor, cb: Tensor) -> Tensor:
        if targeted:  # towards the all-black image
            loss = lambda z: model.decode(z).flatten(1).norm(dim=1)
        else:
            loss = lambda z: (model.decode(z) - cb).flatten(1).norm(dim=1)
        return pgd(loss, zb, eps, steps, norm="l2", maximize=not targeted, clamp=None, generator=generator)

    return map_batches(one_batch, z0, clean, batch_size=batch_size)


def latent_pgd(model: AutoEncoder, x: Tensor, eps_grid: Sequence[float] = EPS_GRID, steps: int = 30, seed: int = 0,
               batch_size: int = 250, lpips: Callable[[Tensor, Tensor], Tensor] | Unavailable | None = None,
               tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Untargeted and all-black-targeted distortion curves over `eps_grid`, with their AADDCs.

    Per eps: mean SSIM, PSNR (infinite at eps 0) and LPIPS between D(z_adv) and D(z0), and the mean
    squared distance of D(z_adv) to black (how far the targeted attack got).
    """
    generator = torch.Generator(x.device).manual_seed(seed)
    lpips = lpips if lpips is not None else Unavailable("no LPIPS weights given")
    with torch.no_grad():
        z0 = map_batches(model.encode, x, batch_size=batch_size)
        clean = map_batches(model.decode, z0, batch_size=batch_size)
    out: dict[str, Any] = {
        "setting": {"space": "latent", "norm": "l2", "eps_grid": list(eps_grid), "pgd_steps": steps,
                    "pgd_step_size": STEP_RULE, "n": len(x), "reference": "clean reconstruction D(E(x))",
                    "ssim_limit": SSIM_LIMIT, "lpips_limit": LPIPS_LIMIT},
        "lpips": None if callable(lpips) else {"unavailable": lpips.reason},
        "images": {"clean_reconstruction": clean[:8].cpu()},
    }
    for mode in ("untargeted", "targeted_black"):
        rows = []
        for eps in eps_grid:
            z_adv = _attack(model, z0, clean, mode == "targeted_black", eps, steps, generator, batch_size)
            with torch.no_grad():
                dec = map_batches(model.decode, z_adv, batch_size=batch_size)
                row = {"eps": eps, "ssim": float(ssim(dec, clean).mean()), "psnr": float(psnr(dec, clean).mean()),
                       "mse_to_black": float(mse(dec, torch.zeros_like(dec)).mean())}
                if callable(lpips):
                    row["lpips"] = float(map_batches(lpips, dec, clean, batch_size=batch_size).mean())
            rows.append(row)
            if tick is not None:
                tick(f"latent-pgd {mode} eps={eps}")
        curve: dict[str, Any] = {"rows": rows, "aaddc_ssim": aaddc(eps_grid, [r["ssim"] for r in rows], SSIM_LIMIT, True)}
        if callable(lpips):
            curve["aaddc_lpips"] = aaddc(eps_grid, [r["lpips"] for r in rows], LPIPS_LIMIT, False)
        out[mode] = curve
        out["images"][mode] = dec[:8].cpu()
    return out
