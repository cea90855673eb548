"""A pack: k population members of one run hosted in one process (docs/PACKING.md §2), the packed counterpart of
ReferenceMember.

Plain Python, no Ray, so tests and a worker host it alike. Two ways to step the k members, one result:

- `PackState` (vmap, the GPU's way): the k models stacked (`torch.func.stack_module_state`) into (k, ...) tensors; one
  `functional_call` under `vmap` trains them all, Adam is StackedAdam (one update, a step count per slot).
- `LoopPack` (population/loop_pack.py, the CPU's way): k plain models and k torch.optim.Adam, stepped one after another
  through `population.training.train_step`. vmap turns each convolution into a grouped one, which oneDNN's AMX kernels
  do not cover; one member at a time runs the plain convolutions AMX does.

What both share (`Pack`), and what makes a packed member the same member as an unpacked one, step for step:

- Weights: each member is built exactly as ReferenceMember builds it (torch seed `seed * 7919 + index`).
- Batches: each member draws its epoch's index batches from `reseed_epoch(seed, index, epoch)` through `batch_indices`,
  as ReferenceMember does. The training images sit on the pack's device once, as uint8; a step is one index gather there.
- Gumbel noise: drawn per member from that member's own generator seeded with `epoch_torch_seed(seed, index,
  epoch)` (the seed ReferenceMember puts on torch's global stream), z1 then z2 at every step, through the same
  `gumbel_noise` the unpacked path uses: the draws are identical call for call. No random op runs inside vmap, so its
  `randomness="different"` only guards.
- The epoch: `population.training.run_epoch`, the one loop robust jobs and ReferenceMember run too: a non-finite loss in a
  slot stops that slot for the rest of the epoch (no step, weights and moments untouched) and its result is NaN parts;
  the other slots go on.
- Precision: the run's `precision` resolved on the pack's device (`training.resolve_precision`); under bf16 every
  step and the validation pass run inside `training.autocast`.

Numerics: the looped pack and ReferenceMember run the same ops (bit for bit in fp32 on one thread); the vmap pack agrees to
float rounding, not bit for bit (grouped convolutions).
"""

from __future__ import annotations

import copy
import functools
import math
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, stack_module_state, vmap

from popvae.models.gumbel import gumbel_noise
from popvae.models.registry import build
from popvae.population.config import RunConfig
from popvae.population.stacked_adam import StackedAdam
from popvae.population.training import (
    SlotStep,
    autocast,
    batch_indices,
    epoch_torch_seed,
    node_id,
    pick_device,
    reseed_epoch,
    resolve_precision,
    run_epoch,
)

EVAL_BATCH = 256  # ReferenceMember scores the validation split in batches of this size


def _to_device_uint8(images: np.ndarray, device: torch.device) -> Tensor:
    with warnings.catch_warnings():  # object-store arrays are read-only; they are only ever read
        warnings.simplefilter("ignore", UserWarning)
        return torch.as_tensor(images).to(device)


def pack_mode_for(pack_mode: str, device: torch.device) -> str:
    """`auto` -> vmap on a GPU (one kernel launch for k members), loop on a CPU (oneDNN's AMX kernels run plain
    convolutions, not vmap's grouped ones: benchmarks/precision.py and benchmarks/generation_speed.py); vmap and loop
    are kept as asked."""
    if pack_mode != "auto":
        return pack_mode
    return "vmap" if device.type == "cuda" else "loop"


def make_pack(indices: list[int], config: RunConfig, train_images: np.ndarray, val_images: np.ndarray,
              threads: int) -> Pack:
    """The pack the run's `pack_mode` asks for on this process's device."""
    from popvae.population.loop_pack import LoopPack  # it builds on Pack, below

    loop = pack_mode_for(config.pack_mode, pick_device(config.device)) == "loop"
    return (LoopPack if loop else PackState)(indices, config, train_images, val_images, threads)


class Pack:
    """What every pack shares: members addressed by their 1-based indices, their initial models, the images on the
    device, the epoch (batches, noise streams, `run_epoch`, validation) and the results; a subclass steps the slots."""

    mode = ""

    def __init__(self, indices: list[int], config: RunConfig, train_images: np.ndarray, val_images: np.ndarray,
                 threads: int) -> None:
        if not indices or len(set(indices)) != len(indices):
            raise ValueError(f"a pack hosts one or more distinct members, got {indices}")
        torch.set_num_threads(max(1, threads))
        self.indices, self.config = list(indices), config
        self.slot = {index: s for s, index in enumerate(self.indices)}
        self.device = pick_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.train_images = _to_device_uint8(train_images, self.device)  # once; batches are gathers on the device
        self.val_images = _to_device_uint8(val_images, self.device)

    def _initial_models(self) -> list[nn.Module]:
        models = []
        for index in self.indices:
            torch.manual_seed(self.config.seed * 7919 + index)  # the same initial weights as ReferenceMember's
            models.append(build("gsvae", self.config.model).to(self.device))
        return models

    def noise(self, generator: torch.Generator, batch: int) -> list[Tensor]:
        """One member's Gumbel draws for one forward pass, z1's then z2's, from its own stream, in the order its unpacked
        forward draws them."""
        return [gumbel_noise((batch, v, k), self.device, generator=generator) for v, k in self.shapes]

    def epoch_batches(self, epoch: int) -> Tensor:
        """(steps, k, batch) index batches on the device: each member's from its own epoch rng, as a ReferenceMember's."""
        c = self.config
        steps = c.steps_per_epoch or max(len(self.train_images) // c.batch_size, 1)
        per_member = [list(batch_indices(len(self.train_images), c.batch_size, steps, reseed_epoch(c.seed, index, epoch)))
                      for index in self.indices]
        return torch.from_numpy(np.stack(per_member, axis=1)).to(self.device)  # one small copy per epoch, not per step

    def gather(self, idx: Tensor) -> Tensor:
        """(k, batch) indices -> (k, batch, C, H, W) float [0,1] images on the device (as models.dataset_loading.to_float)."""
        return self.train_images[idx].float().div_(255.0)

    def train_epoch(self, epoch: int, taus: dict[int, float],
                    on_progress: Callable[[int, int], None] | None = None) -> dict[int, dict[str, Any]]:
        """One epoch of every member; {index: the result ReferenceMember.train_epoch returns}. `seconds` is the pack's
        epoch. `on_progress(t, steps)` hears each finite step of a slot (t from 1): a console shows how far it is."""
        if set(taus) != set(self.indices):
            raise ValueError(f"taus for members {sorted(taus)} given; this pack hosts {self.indices}")
        started = time.perf_counter()
        c = self.config
        tau = [float(taus[i]) for i in self.indices]
        generators = [torch.Generator(self.device).manual_seed(epoch_torch_seed(c.seed, i, epoch)) for i in self.indices]
        batches = self.epoch_batches(epoch)
        steps = len(batches)
        logged: list[list[tuple[int, float]]] = [[] for _ in self.indices]  # (optimizer step of the run, total loss)
        stepped = [0] * len(self.indices)  # each slot's optimizer steps this epoch

        def log(s: int, t: int, parts: dict[str, float]) -> None:
            stepped[s] += 1
            if on_progress is not None:
                on_progress(t, steps)
            if t % c.log_every_steps == 0:
                logged[s].append((epoch * steps + t, parts["total"]))

        losses = run_epoch(self._stepper(batches, generators, tau), steps, len(self.indices), log)
        alive = [math.isfinite(loss["total"]) for loss in losses]
        vals = self._validate(generators, tau, alive) if c.select_on != "train" else [math.nan] * len(self.indices)
        curve = self.learning_curve(tau, alive)
        seconds, node = time.perf_counter() - started, node_id()
        return {index: {"member": index, "epoch": epoch, "tau": taus[index], "loss": losses[s], "val_loss": vals[s],
                        "seconds": seconds, "node_id": node, "step_losses": logged[s] if alive[s] else [],
                        "steps": stepped[s], "curve_mse": curve[s][0], "curve_mse_hard": curve[s][1]}
                for s, index in enumerate(self.indices)}

    def learning_curve(self, tau: list[float], alive: list[bool]) -> list[tuple[float, float]]:
        """Each live member's reconstruction MSE on the first `curve_subset` validation images (never test): from its
        relaxed code at its epoch's tau and from its hard code, noise-free, eval mode, no gradients; NaN for a dead slot."""
        n = min(self.config.curve_subset, len(self.val_images))
        sums = torch.zeros(len(self.indices), 2, dtype=torch.float64)
        with torch.no_grad():
            for x in self.val_batches(n):
                sums += self._curve_sums(x, tau).double().cpu()
        return [(float(sums[s, 0]) / n, float(sums[s, 1]) / n) if alive[s] else (math.nan, math.nan)
                for s in range(len(self.indices))]

    def _curve_sums(self, x: Tensor, tau: list[float]) -> Tensor:
        """(k, 2): each slot's per-image MSEs summed over the batch `x`, relaxed then hard (`curve_sums`)."""
        raise NotImplementedError

    def _stepper(self, batches: Tensor, generators: list[torch.Generator], tau: list[float]) -> SlotStep:
        """The epoch's step function for `run_epoch`: step t of the live slots on batches[t]."""
        raise NotImplementedError

    def _validate(self, generators: list[torch.Generator], tau: list[float], alive: list[bool]) -> list[float]:
        """Each live member's mean loss on the validation split at its epoch's tau, as population.training.evaluate
        scores it (eval mode: Gumbel noise only if the model's config asks, then from the member's stream where the
        unpacked member's would continue); with `select_on: val_hard`, reconstructed from hard codes (no noise, no tau)."""
        raise NotImplementedError

    def val_batches(self, limit: int | None = None) -> Iterator[Tensor]:
        """The validation images (the first `limit` of them) in batches of EVAL_BATCH, float [0,1]."""
        images = self.val_images[:limit]
        for start in range(0, len(images), EVAL_BATCH):
            yield images[start : start + EVAL_BATCH].float().div_(255.0)


def curve_sums(x: Tensor, relaxed: Tensor, hard: Tensor) -> Tensor:
    """(2,): the per-image MSEs of the two reconstructions of `x`, each summed over the batch (float32)."""
    return torch.stack([(r.float() - x).pow(2).flatten(1).mean(1).sum() for r in (relaxed, hard)])


class _Loss(nn.Module):
    """functional_call runs a module's forward; this one's forward is the member's loss with the pack's noise and tau."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, noise: tuple[Tensor, ...] | None, tau: Tensor, hard: bool = False) -> dict[str, Tensor]:
        return self.model.loss(x, noise=noise, tau=tau, hard=hard)


class _Curve(nn.Module):
    """The learning curve's two errors as a forward (for functional_call): it shares _Loss's model, so the same state
    dict keys serve both."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor, tau: Tensor) -> Tensor:
        return curve_sums(x, *self.model.reconstructions(x, tau))


class PackState(Pack):
    """k members as one stacked model under vmap (see the module docstring)."""

    mode = "vmap"

    def __init__(self, indices: list[int], config: RunConfig, train_images: np.ndarray, val_images: np.ndarray,
                 threads: int) -> None:
        super().__init__(indices, config, train_images, val_images, threads)
        models = self._initial_models()
        params, buffers = stack_module_state(models)
        self.params = {k: v.detach() for k, v in params.items()}
        self.buffers = {k: v.detach() for k, v in buffers.items()}
        self.keys = list(models[0].state_dict())
        self.shapes = models[0].shapes
        self.optimizer = StackedAdam(self.params, models[0].make_optimizer())
        self._loss = _Loss(copy.deepcopy(models[0]).to("meta"))  # the stacked tensors stand in for its weights
        self._train_step = vmap(grad(self._slot_loss, has_aux=True), randomness="different")
        self._eval_loss = torch.no_grad()(vmap(self._slot_loss, in_dims=(0, 0, None, 0, 0), randomness="different"))
        self._eval_plain = torch.no_grad()(vmap(self._slot_loss, in_dims=(0, 0, None, None, 0), randomness="different"))
        self._eval_hard = torch.no_grad()(vmap(functools.partial(self._slot_loss, hard=True), in_dims=(0, 0, None, None, 0)))
        self._curve = _Curve(self._loss.model)
        self._eval_curve = torch.no_grad()(vmap(self._slot_curve, in_dims=(0, 0, None, 0)))

    def _slot_loss(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor,
                   noise: tuple[Tensor, ...] | None, tau: Tensor, hard: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        state = {f"model.{k}": v for k, v in (params | buffers).items()}
        with autocast(self.precision, self.device):
            parts = functional_call(self._loss, state, (x, noise, tau), {"hard": hard})
        return parts["total"], {k: v.detach() for k, v in parts.items()}

    def _slot_curve(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor, tau: Tensor) -> Tensor:
        with autocast(self.precision, self.device):
            return functional_call(self._curve, {f"model.{k}": v for k, v in (params | buffers).items()}, (x, tau))

    def _curve_sums(self, x: Tensor, tau: list[float]) -> Tensor:
        self._loss.eval()
        return self._eval_curve(self.params, self.buffers, x, torch.tensor(tau, device=self.device))

    def _stacked_noise(self, generators: list[torch.Generator], batch: int) -> tuple[Tensor, ...]:
        """Every member's draws for one forward pass, stacked per latent layer."""
        return tuple(torch.stack(layer) for layer in zip(*(self.noise(g, batch) for g in generators)))

    def _stepper(self, batches: Tensor, generators: list[torch.Generator], tau: list[float]) -> SlotStep:
        taus = torch.tensor(tau, device=self.device)
        self._loss.train()  # (GSVAE's own noise is off whenever noise is given; the mode matters for validation only)

        def step(t: int, live: list[int]) -> dict[int, dict[str, float]]:
            idx = batches[t]
            grads, parts = self._train_step(self.params, self.buffers, self.gather(idx),
                                            self._stacked_noise(generators, idx.shape[1]), taus)
            names = list(parts)
            rows = torch.stack([parts[n] for n in names], 1).tolist()  # one sync: the host decides which slots step
            out = {s: dict(zip(names, rows[s])) for s in live}
            self.optimizer.step(self.params, grads, [s for s in live if math.isfinite(out[s]["total"])])
            return out

        return step

    def _validate(self, generators: list[torch.Generator], tau: list[float], alive: list[bool]) -> list[float]:
        self._loss.eval()
        taus = torch.tensor(tau, device=self.device)
        sums = [0.0] * len(self.indices)
        for x in self.val_batches():
            if self.config.select_on == "val_hard":
                total, _ = self._eval_hard(self.params, self.buffers, x, None, taus)
            elif self._loss.model.config.eval_noise:
                total, _ = self._eval_loss(self.params, self.buffers, x, self._stacked_noise(generators, len(x)), taus)
            else:
                total, _ = self._eval_plain(self.params, self.buffers, x, None, taus)
            for s, value in enumerate(total.tolist()):
                sums[s] += value * len(x)
        return [sums[s] / len(self.val_images) if alive[s] else math.nan for s in range(len(self.indices))]
    def get_weights(self, index: int) -> dict[str, np.ndarray]:
        """The member's state_dict as CPU numpy arrays (copies: later training does not change them)."""
        s, tensors = self.slot[index], self.params | self.buffers
        return {k: tensors[k][s].detach().cpu().numpy().copy() for k in self.keys}

    def set_weights(self, index: int, weights: dict[str, np.ndarray], reset_optimizer: bool = False) -> None:
        """Copy weights into the member's slot (a broadcast inside the pack); a reset also clears its Adam moments and step."""
        if set(weights) != set(self.keys):
            raise KeyError(f"weights must have exactly the model's keys; missing {sorted(set(self.keys) - set(weights))}, "
                           f"unexpected {sorted(set(weights) - set(self.keys))}")
        s, tensors = self.slot[index], self.params | self.buffers
        with warnings.catch_warnings(), torch.no_grad():  # object-store arrays are read-only; they are only read
            warnings.simplefilter("ignore", UserWarning)
            for k in self.keys:
                tensors[k][s].copy_(torch.as_tensor(weights[k]))
        if reset_optimizer:  # a NaN loss may have poisoned the moment estimates
            self.optimizer.reset(s)

    def copy_slot(self, source: int, targets: list[int], reset: list[int] = ()) -> None:  # type: ignore[assignment]
        """The broadcast inside the pack: member `source`'s weights copied into the `targets`' slots (no host copy);
        the members in `reset` also lose their Adam state."""
        s, tensors = self.slot[source], self.params | self.buffers
        with torch.no_grad():
            for t in targets:
                for k in self.keys:
                    tensors[k][self.slot[t]].copy_(tensors[k][s])
        for t in reset:
            self.optimizer.reset(self.slot[t])

    def get_optimizer_state(self, index: int) -> dict[str, Any]:
        return self.optimizer.state_dict(self.slot[index])

    def set_optimizer_state(self, index: int, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(self.slot[index], state)
