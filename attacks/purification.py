"""Adversarial purification (GS-VAE paper, Tables 2-3): a CNN classifies the autoencoder's reconstructions
of attacked images.

The paper attacked the CNN alone and then purified; that is reported as `non_adaptive`, because an
attacker who knows the purifier does better. `adaptive` attacks CNN(purify(x)) end to end, averaging
gradients over the purifier's noise (EOT) when it draws any; `worst_case` counts an image as correct
only if it survives both the non-adaptive and the adaptive attack of that kind at that eps, and
`worst_case_all` only if it survives every attack run at that eps. `cnn_alone` is the undefended baseline.
No family has a hard (non-differentiable) step, so BPDA is not needed; `adaptive_gradient_nonzero` (the
fraction of clean images whose end-to-end gradient is non-zero) would expose a purifier that masks it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from popvae.attacks.batches import map_batches
from popvae.attacks.metrics import accuracy_ci
from popvae.attacks.pgd import STEP_RULE, eot, fgsm, pgd
from popvae.models.protocol import AutoEncoder

# L-inf eps in [0,1] pixel units, up to the 0.3 customary on the 1-channel sets; pass eps_grid to change it.
EPS_GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
SETTINGS = ("cnn_alone", "non_adaptive", "adaptive", "worst_case")


def _gradient_nonzero(logits: Callable[[Tensor], Tensor], x: Tensor, y: Tensor) -> float:
    """Fraction of examples whose input gradient of the loss is finite and non-zero."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(F.cross_entropy(logits(x), y, reduction="sum"), x)
    ok = torch.isfinite(grad).flatten(1).all(1) & (grad.flatten(1).abs().amax(1) > 0)
    return float(ok.float().mean())


def purification(model: AutoEncoder, cnn: nn.Module, x: Tensor, y: Tensor, eps_grid: Sequence[float] = EPS_GRID,
                 attacks: Sequence[str] = ("fgsm", "pgd"), pgd_steps: int = 20, eot_samples: int = 4,
                 sample: bool | None = None, batch_size: int = 128, seed: int = 0,
                 tick: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Accuracy (with Wilson 95% CIs) of the CNN on clean, attacked and purified images, per attack and eps.

    `sample` says whether the purifier draws its noise (default: when `model.stochastic`); the adaptive
    attack then uses EOT over `eot_samples` draws. PGD: `pgd_steps` steps of `STEP_RULE`, random start.
    Returns plain data, plus `images`: a few clean / attacked / purified examples for the report's grids.
    """
    sample = model.stochastic if sample is None else sample
    k = eot_samples if sample else 1
    torch.manual_seed(seed)
    generator = torch.Generator(x.device).manual_seed(seed)

    def purify(xb: Tensor) -> Tensor:
        return model.reconstruct(xb, sample=sample)

    def correct(xb: Tensor, yb: Tensor, purified: bool) -> Tensor:
        with torch.no_grad():
            return cnn(purify(xb) if purified else xb).argmax(1) == yb

    def attack(name: str, eps: float, through_purifier: bool) -> Tensor:
        def one_batch(xb: Tensor, yb: Tensor) -> Tensor:
            logits = (lambda v: cnn(purify(v))) if through_purifier else cnn
            loss = lambda v: F.cross_entropy(logits(v), yb, reduction="none")
            loss = eot(loss, k) if through_purifier and k > 1 else loss
            if name == "fgsm":
                return fgsm(loss, xb, eps)
            return pgd(loss, xb, eps, pgd_steps, generator=generator)

        return map_batches(one_batch, x, y, batch_size=batch_size)

    check = lambda xs, purified: map_batches(lambda xb, yb: correct(xb, yb, purified), xs, y, batch_size=batch_size)
    out: dict[str, Any] = {
        "setting": {"norm": "linf", "eps_grid": list(eps_grid), "attacks": list(attacks), "pgd_steps": pgd_steps,
                    "pgd_step_size": STEP_RULE, "pgd_random_start": True, "purifier_noise": sample,
                    "eot_samples": k, "n": len(y), "loss": "cross-entropy"},
        "clean": {"cnn_alone": accuracy_ci(check(x, False)), "purified": accuracy_ci(check(x, True))},
    }
    out["setting"]["adaptive_gradient_nonzero"] = _gradient_nonzero(lambda v: cnn(purify(v)), x[:batch_size], y[:batch_size])
    with torch.no_grad():
        shown: dict[str, Tensor] = {"clean": x[:8].cpu(), "purified_clean": purify(x[:8]).cpu()}
    survivors: dict[float, Tensor] = {}
    for name in attacks:
        rows = []
        for eps in eps_grid:
            x_cnn, x_e2e = attack(name, eps, False), attack(name, eps, True)
            non_adaptive, adaptive = check(x_cnn, True), check(x_e2e, True)
            survivors[eps] = survivors.get(eps, torch.ones_like(adaptive)) & non_adaptive & adaptive
            rows.append({"eps": eps, "cnn_alone": accuracy_ci(check(x_cnn, False)), "non_adaptive": accuracy_ci(non_adaptive),
                         "adaptive": accuracy_ci(adaptive), "worst_case": accuracy_ci(non_adaptive & adaptive)})
            if tick is not None:
                tick(f"purification {name} eps={eps}")
        out[name] = rows
        shown[f"{name}_adaptive_eps{eps_grid[-1]}"] = x_e2e[:8].cpu()
        with torch.no_grad():
            shown[f"{name}_adaptive_purified_eps{eps_grid[-1]}"] = purify(x_e2e[:8]).cpu()
    out["worst_case_all"] = [{"eps": eps, "accuracy": accuracy_ci(ok)} for eps, ok in survivors.items()]
    out["images"] = shown
    return out
