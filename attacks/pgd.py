"""One projected gradient method over a loss callable, so input-, latent- and output-space attacks share it.

Every attack in `attacks/` is this loop with a different `loss_fn`: the caller closes over the model
(in eval mode; this module never changes a model's mode) and returns a per-example loss. FGSM is one
step; `eot` and `bpda` wrap the loss or a hard forward so the same loop stays honest against
stochastic and non-differentiable defences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

Norm = Literal["linf", "l2"]
_TINY = 1e-12

# PGD's usual step rule, the default of `pgd`: enough to cross the eps-ball 2.5 times over the steps.
STEP_FACTOR = 2.5
STEP_RULE = f"{STEP_FACTOR:g} * eps / steps"  # as reports state it


def _flat_norm(t: Tensor) -> Tensor:
    """Per-example L2 norm, shaped to broadcast against `t`."""
    return t.flatten(1).norm(dim=1).clamp_min(_TINY).view(-1, *([1] * (t.dim() - 1)))


def _random_start(x: Tensor, eps: float, norm: Norm, generator: torch.Generator | None) -> Tensor:
    """A point drawn uniformly from the eps-ball around each example."""
    device = generator.device if generator is not None else x.device
    shape, dtype = x.shape, x.dtype
    if norm == "linf":
        delta = (torch.rand(shape, generator=generator, device=device, dtype=dtype) * 2 - 1) * eps
    else:  # uniform in the L2 ball: uniform direction, radius eps * U^(1/d)
        direction = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        direction = direction / _flat_norm(direction)
        d = x[0].numel()
        radius = eps * torch.rand(shape[0], generator=generator, device=device, dtype=dtype) ** (1.0 / d)
        delta = direction * radius.view(-1, *([1] * (x.dim() - 1)))
    return delta.to(x.device)


def _project(x_adv: Tensor, x: Tensor, eps: float, norm: Norm, clamp: tuple[float, float] | None) -> Tensor:
    """Back into the eps-ball around x, then into the clamp box (which, for x inside it, only shrinks the move)."""
    if norm == "linf":
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        x_adv = x + delta * (eps / _flat_norm(delta)).clamp(max=1.0)
    return x_adv if clamp is None else x_adv.clamp(*clamp)


def pgd(loss_fn: Callable[[Tensor], Tensor], x: Tensor, eps: float, steps: int, step_size: float | None = None,
        norm: Literal["linf", "l2"] = "linf", random_start: bool = True, maximize: bool = True,
        clamp: tuple[float, float] | None = (0.0, 1.0), generator: torch.Generator | None = None) -> Tensor:
    """Projected gradient ascent (or descent, `maximize=False`) of `loss_fn` in the `norm` eps-ball around `x`.

    `loss_fn(x_adv)` returns a per-example loss (B,); its sum is differentiated, so examples move
    independently. Each step moves by step_size * sign(grad) (linf) or step_size * grad / ||grad||_2
    (l2), projects to the ball around x and clamps to `clamp` (None for unbounded latents).
    `step_size` None takes STEP_RULE. Returns the last iterate, detached.
    """
    if step_size is None:
        step_size = STEP_FACTOR * eps / max(steps, 1)
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    x = x.detach()
    sign = 1.0 if maximize else -1.0
    x_adv = x.clone()
    if random_start and eps > 0:
        x_adv = _project(x + _random_start(x, eps, norm, generator), x, eps, norm, clamp)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(x_adv)
            (grad,) = torch.autograd.grad(loss.sum(), x_adv)
        step = grad.sign() if norm == "linf" else grad / _flat_norm(grad)
        x_adv = _project(x_adv.detach() + sign * step_size * step, x, eps, norm, clamp)
    return x_adv.detach()


def fgsm(loss_fn: Callable[[Tensor], Tensor], x: Tensor, eps: float, random_start: bool = False,
         step_size: float | None = None, norm: Literal["linf", "l2"] = "linf", maximize: bool = True,
         clamp: tuple[float, float] | None = (0.0, 1.0), generator: torch.Generator | None = None) -> Tensor:
    """The fast gradient sign method: `pgd` with one step of size `step_size` (eps by default)."""
    return pgd(loss_fn, x, eps, steps=1, step_size=eps if step_size is None else step_size, norm=norm,
               random_start=random_start, maximize=maximize, clamp=clamp, generator=generator)


def eot(fn: Callable[[Tensor], Tensor], k: int) -> Callable[[Tensor], Tensor]:
    """Expectation over transformation: the mean of k forwards of a stochastic loss, whose gradient is the EOT gradient."""
    if k < 1:
        raise ValueError(f"EOT needs k >= 1 samples, got {k}")
    return lambda x: torch.stack([fn(x) for _ in range(k)]).mean(0)


def bpda(forward: Callable[[Tensor], Tensor], surrogate: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """Backward pass differentiable approximation: the value of `forward` (e.g. a hard step), the gradient of `surrogate`."""

    def wrapped(x: Tensor) -> Tensor:
        soft = surrogate(x)
        return soft + (forward(x) - soft).detach()

    return wrapped
