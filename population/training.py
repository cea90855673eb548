"""The one training loop, for population members and robust-AE jobs alike, and the scores a run reports.

Adversarial schemes enter through model hooks, because crafting needs attacks/, which models/ may
not import: a model with `adversarial_objective` (Robust GMM-DAE) trains on a batch crafted here in
input space, and a model whose config sets `latent_adv` (Lu & Chen Algorithm 1) gets M latent PGD
attacks and decoder-only updates after each regular step.

Seeding is a pure function of (seed, member, epoch), so a resumed run draws exactly the batches and
noise the uninterrupted run would have drawn.

`run_epoch` is the epoch every trainer shares (a robust job's one model, a looped pack's members one after another,
a vmap pack's k slots at once): it owns the per-slot accounting (a slot stops at its first non-finite loss, the
others go on), so the three cannot drift apart. `precision` is "fp32" or "bf16": under bf16 the step runs inside
`autocast` (convolutions and linears in bfloat16); weights, Adam, the Gumbel-softmax sampling, the KL and the BCE
stay float32, because the models cast to float before them; adversarial crafting (an attack) stays float32.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn

from popvae.attacks.pgd import fgsm, pgd
from popvae.models.dataset_loading import to_float

Precision = Literal["fp32", "bf16"]


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """`auto` -> bf16 where the device runs it fast: a CUDA device with bf16, or a CPU with AMX or AVX512-BF16
    (`cpu_runs_bf16_fast`; benchmarks/generation_speed.py measures a generation there 2.3x faster than fp32 under
    vmap); fp32 elsewhere. fp32 and bf16 are kept as asked."""
    if precision != "auto":
        return "bf16" if precision == "bf16" else "fp32"
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_runs_bf16_fast() else "fp32"


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return f.read()
    except OSError:
        return ""


def cpu_runs_bf16_fast(cpuinfo: str | None = None) -> bool:
    """Whether /proc/cpuinfo's flags (or the text given) include amx_bf16 or avx512_bf16."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    flags = {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[-1].split()}
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name from /proc/cpuinfo (or the text given), with whether it runs bf16 fast: timings are only
    comparable on the same model, so reports name it."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "unknown")
    return f"{name} ({'AMX or AVX512-BF16' if cpu_runs_bf16_fast(text) else 'no fast bf16'})"


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The context a step and a scoring pass run in: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def node_id() -> str:
    """The Ray node this process runs on ("local" without Ray): a member's result says where it trained."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def epoch_torch_seed(seed: int, member: int, epoch: int) -> int:
    """The seed of a member's torch stream (its Gumbel noise) for one epoch: the global stream unpacked, its own
    generator in a pack."""
    return (seed * 1_000_003 + member * 10_007 + epoch) % (2**63)


def reseed_epoch(seed: int, member: int, epoch: int) -> np.random.Generator:
    """Reseeds torch's global stream for the member's epoch (its Gumbel noise, unpacked) and returns the numpy
    generator of the epoch's batches: one call, both streams, so neither can drift from the other."""
    torch.manual_seed(epoch_torch_seed(seed, member, epoch))
    return np.random.default_rng([seed, member, epoch])


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Attacks run against the model in eval mode (BatchNorm statistics frozen); training mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def batch_indices(n: int, batch_size: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """`steps` index batches without replacement, reshuffling whenever the data runs out (never a short batch)."""
    size = min(batch_size, n)
    order = rng.permutation(n)
    pos = 0
    for _ in range(steps):
        if pos + size > n:
            order, pos = rng.permutation(n), 0
        yield np.sort(order[pos : pos + size])
        pos += size


def craft_adversarial(model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The Robust GMM-DAE's x_adv: FGSM with random start (or PGD) in L-inf maximising ||E(x+d) - E(x)||^2."""
    c = model.config
    with eval_mode(model):
        objective = model.adversarial_objective(x)
        if c.craft == "fgsm":
            return fgsm(objective, x, c.eps, random_start=True, step_size=c.step_scale * c.eps, generator=generator)
        return pgd(objective, x, c.eps, c.pgd_steps, generator=generator)


def _forward_in(precision: Precision, device: torch.device, fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """`fn` run under the precision's autocast; a gradient taken of its output is computed outside it."""
    def forward(z: Tensor) -> Tensor:
        with autocast(precision, device):
            return fn(z)
    return forward


def latent_adversarial_rounds(model: nn.Module, x: Tensor, generator: torch.Generator | None = None,
                              precision: Precision = "fp32") -> float:
    """Lu & Chen Algorithm 1's inner loop: M rounds of K-step latent L2 PGD from E(x), each followed by a decoder update.

    Forwards run in the step's precision, gradients outside autocast as in `train_step`: the decoder update is training,
    and an attack whose gradients come through bf16 forwards is as strong as in fp32 (benchmarks/attack_precision.py).
    Returns the mean adversarial reconstruction error the decoder was updated on.
    """
    c = model.config
    optimizer = model.decoder_optimizer()
    losses = []
    for _ in range(c.adv_rounds):
        with eval_mode(model):
            z0, objective = model.latent_attack_objective(x)
            z_adv = pgd(_forward_in(precision, x.device, objective), z0, c.adv_eps, c.adv_steps, norm="l2",
                        clamp=None, generator=generator)
        with autocast(precision, x.device):
            loss = model.adversarial_decoder_loss(x, z_adv)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor,
               generator: torch.Generator | None = None, precision: Precision = "fp32",
               noise: list[Tensor] | None = None) -> dict[str, float]:
    """One optimizer step on the model's loss (crafting x_adv first where the model trains adversarially); `noise`:
    the Gumbel draws a pack made from the member's own stream (default: the model draws its own).

    A non-finite loss is returned without a step: the caller decides (a member is reset, a job fails).
    """
    model.train()
    x_adv = craft_adversarial(model, x, generator) if hasattr(model, "adversarial_objective") else None  # attacks: fp32
    with autocast(precision, x.device):
        if x_adv is not None:
            parts = model.loss(x, x_adv)
        else:
            parts = model.loss(x) if noise is None else model.loss(x, noise=noise)
    out = {name: float(value.detach()) for name, value in parts.items()}
    if not math.isfinite(out["total"]):
        return out
    optimizer.zero_grad(set_to_none=True)
    parts["total"].backward()
    optimizer.step()
    if getattr(model.config, "latent_adv", False):
        out["adv_decoder"] = latent_adversarial_rounds(model, x, generator, precision)
    return out


SlotStep = Callable[[int, list[int]], dict[int, dict[str, float]]]


def run_epoch(step: SlotStep, steps: int, slots: int,
              on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """The epoch every trainer shares, over `slots` models: `step(t, live)` (t from 0) makes optimizer step t of the
    live slots and returns each one's loss parts; a slot stops at its first non-finite loss (the step must not have
    applied it) and the others go on. Returns each slot's mean parts over the `steps`, NaN parts for a stopped slot;
    `on_step(slot, t, parts)` hears each finite step (t from 1).
    """
    live, sums, names = list(range(slots)), [dict[str, float]() for _ in range(slots)], list[str]()
    for t in range(steps):
        rows = step(t, live)
        for s, parts in rows.items():
            names = names or list(parts)
            if not math.isfinite(parts["total"]):
                live.remove(s)
                continue
            for name, value in parts.items():
                sums[s][name] = sums[s].get(name, 0.0) + value
            if on_step is not None:
                on_step(s, t + 1, parts)
        if not live:
            break
    return [{name: sums[s][name] / steps if s in live else math.nan for name in names} for s in range(slots)]


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images: np.ndarray, batch_size: int, steps: int | None,
                rng: np.random.Generator, device: str | torch.device, generator: torch.Generator | None = None,
                on_step: Callable[[int, dict[str, float]], None] | None = None,
                precision: Precision = "fp32") -> dict[str, float]:
    """One model's epoch (`run_epoch` over one slot): mean of each loss part over `steps` batches (default one pass);
    `on_step(t, parts)` hears each finite step (t from 1). Stops at the first non-finite loss and returns NaN parts."""
    steps = steps or max(len(images) // batch_size, 1)
    batches = batch_indices(len(images), batch_size, steps, rng)

    def step(t: int, live: list[int]) -> dict[int, dict[str, float]]:
        return {0: train_step(model, optimizer, to_float(images[next(batches)], device), generator, precision)}

    hear = None if on_step is None else lambda s, t, parts: on_step(t, parts)
    return run_epoch(step, steps, 1, hear)[0]


@torch.no_grad()
def per_image_mse(model: nn.Module, images: np.ndarray, device: str | torch.device, batch_size: int = 500,
                  progress: Callable[[int], None] | None = None, hard: bool = False) -> np.ndarray:
    """Each image's per-pixel mean squared error of its deterministic reconstruction, on [0,1] pixels (the spread
    gives a test MSE its confidence interval); `hard`: reconstructed from a GS-VAE's hard codes (one-hot argmax).
    `progress(images_done)` is called after each batch."""
    out = []
    rebuild = (lambda x: model.reconstruct(x, sample=False, hard=True)) if hard else \
        (lambda x: model.reconstruct(x, sample=False))
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size], device)
            out.append((rebuild(x) - x).pow(2).flatten(1).mean(1).double().cpu().numpy())
            if progress is not None:
                progress(start + len(x))
    return np.concatenate(out)


def reconstruction_mse(model: nn.Module, images: np.ndarray, device: str | torch.device, batch_size: int = 500,
                       progress: Callable[[int], None] | None = None, hard: bool = False) -> float:
    """Per-pixel mean squared error of deterministic reconstructions on [0,1] pixels over every image (`hard`: from
    hard codes, see per_image_mse)."""
    return float(per_image_mse(model, images, device, batch_size, progress, hard).mean())


@torch.no_grad()
def evaluate(model: nn.Module, images: np.ndarray, batch_size: int, device: str | torch.device,
             progress: Callable[[int], None] | None = None, hard: bool = False) -> dict[str, float]:
    """Loss parts in eval mode (no Gumbel noise unless the model's config asks), averaged over every image (`hard`: a
    GS-VAE's loss with hard codes, what `select_on: val_hard` scores). `progress(images_done)` is called after each batch."""
    sums: dict[str, float] = {}
    with eval_mode(model):
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size], device)
            for k, v in (model.loss(x, hard=True) if hard else model.loss(x)).items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            if progress is not None:
                progress(start + len(x))
    return {k: v / len(images) for k, v in sums.items()}
