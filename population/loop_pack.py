"""The looped pack: k members in one process, one copy of the data, stepped one after another (the CPU's way).

Each member is a plain GS-VAE with its own torch.optim.Adam, trained by `population.training.train_step` (the step
robust jobs and ReferenceMember take) with its own batches, Gumbel stream and tau; `population.pack.Pack` supplies the
epoch, the batches, the noise and the results, so a looped pack and a vmap pack answer alike (tests/test_pack.py).
Under bf16 on a CPU the models and the batches are channels_last, which oneDNN's AMX convolutions run faster
(benchmarks/precision.py measures it).
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from popvae.population.config import RunConfig
from popvae.population.pack import Pack, curve_sums
from popvae.population.training import SlotStep, autocast, eval_mode, train_step


class LoopPack(Pack):
    """k members as k models stepped in turn (see the module docstring); the same interface as PackState."""

    mode = "loop"

    def __init__(self, indices: list[int], config: RunConfig, train_images: np.ndarray, val_images: np.ndarray,
                 threads: int) -> None:
        super().__init__(indices, config, train_images, val_images, threads)
        self.channels_last = self.precision == "bf16" and self.device.type == "cpu"
        self.models = self._initial_models()
        if self.channels_last:
            self.models = [m.to(memory_format=torch.channels_last) for m in self.models]
        self.optimizers = [m.make_optimizer() for m in self.models]
        self.shapes = self.models[0].shapes
        self.keys = list(self.models[0].state_dict())

    def _layout(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _stepper(self, batches: Tensor, generators: list[torch.Generator], tau: list[float]) -> SlotStep:
        for model, t in zip(self.models, tau):
            model.tau = t

        def step(t: int, live: list[int]) -> dict[int, dict[str, float]]:
            idx = batches[t]
            return {s: train_step(self.models[s], self.optimizers[s], self._layout(self.gather(idx[s])),
                                  precision=self.precision, noise=self.noise(generators[s], idx.shape[1]))
                    for s in live}

        return step

    @torch.no_grad()
    def _validate(self, generators: list[torch.Generator], tau: list[float], alive: list[bool]) -> list[float]:
        out = []
        for s, model in enumerate(self.models):
            if not alive[s]:
                out.append(math.nan)
                continue
            total = 0.0
            with eval_mode(model), autocast(self.precision, self.device):
                for x in self.val_batches():
                    if self.config.select_on == "val_hard":
                        parts = model.loss(self._layout(x), hard=True)
                    else:
                        noise = self.noise(generators[s], len(x)) if model.config.eval_noise else None
                        parts = model.loss(self._layout(x), noise=noise)
                    total += float(parts["total"]) * len(x)
            out.append(total / len(self.val_images))
        return out

    def _curve_sums(self, x: Tensor, tau: list[float]) -> Tensor:
        rows = []
        for model, t in zip(self.models, tau):
            with eval_mode(model), autocast(self.precision, self.device):
                rows.append(curve_sums(x, *model.reconstructions(self._layout(x), t)))
        return torch.stack(rows)

    def get_weights(self, index: int) -> dict[str, np.ndarray]:
        """The member's state_dict as contiguous CPU numpy arrays (copies: later training does not change them)."""
        model = self.models[self.slot[index]]
        return {k: v.detach().cpu().contiguous().numpy().copy() for k, v in model.state_dict().items()}

    def set_weights(self, index: int, weights: dict[str, np.ndarray], reset_optimizer: bool = False) -> None:
        """Load weights into the member (a broadcast); a reset also gives it a fresh Adam."""
        if set(weights) != set(self.keys):
            raise KeyError(f"weights must have exactly the model's keys; missing {sorted(set(self.keys) - set(weights))}, "
                           f"unexpected {sorted(set(weights) - set(self.keys))}")
        s = self.slot[index]
        with warnings.catch_warnings():  # object-store arrays are read-only; load_state_dict only copies from them
            warnings.simplefilter("ignore", UserWarning)
            self.models[s].load_state_dict({k: torch.as_tensor(v) for k, v in weights.items()})
        if reset_optimizer:  # a NaN loss may have poisoned the moment estimates
            self.optimizers[s] = self.models[s].make_optimizer()

    def copy_slot(self, source: int, targets: list[int], reset: list[int] = ()) -> None:  # type: ignore[assignment]
        """The broadcast inside the pack: member `source`'s weights copied into the `targets` (no host copy); the
        members in `reset` also get a fresh Adam."""
        state = self.models[self.slot[source]].state_dict()
        for t in targets:
            self.models[self.slot[t]].load_state_dict(state)
        for t in reset:
            self.optimizers[self.slot[t]] = self.models[self.slot[t]].make_optimizer()

    def get_optimizer_state(self, index: int) -> dict[str, Any]:
        """A torch.optim.Adam state_dict, with contiguous CPU moments (as a vmap pack's slot gives them)."""
        state = self.optimizers[self.slot[index]].state_dict()
        return {"state": {i: {k: v.detach().cpu().contiguous().clone() for k, v in st.items()}
                          for i, st in state["state"].items()}, "param_groups": state["param_groups"]}

    def set_optimizer_state(self, index: int, state: dict[str, Any]) -> None:
        """Load a copy (torch's Adam would otherwise keep the caller's moment tensors and step them in place), laid out
        as the member's parameters (channels_last under bf16), as the uninterrupted run's moments are: an elementwise
        update over mixed layouts may round differently, and a resume must be bit for bit."""
        optimizer = self.optimizers[self.slot[index]]
        optimizer.load_state_dict(copy.deepcopy(state))
        for p, st in optimizer.state.items():
            for name, value in st.items():
                if name != "step" and value.shape == p.shape:
                    st[name] = torch.empty_like(p).copy_(value)
