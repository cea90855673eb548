"""Adam over a pack's stacked (k, ...) parameters, one independent Adam per slot (population/pack.py's vmap pack)."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor


def _per_slot(values: list[float], like: Tensor) -> Tensor:
    """One value per slot, shaped to broadcast over a stacked (k, ...) tensor."""
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, *([1] * (like.dim() - 1)))


class StackedAdam:
    """Adam over stacked (k, ...) parameters: exactly k independent torch.optim.Adam, one per slot, in one update.

    torch.optim.Adam over the stacked tensors is already elementwise (the moments are k Adams' moments), but not quite k
    Adams: its `step`, which sets the bias correction, is one count per tensor, shared by the k slots, so a slot reset
    (new weights for a NaN member: fresh moments, step 0) would be corrected as if it had taken every step; and it cannot
    leave a slot out, since a zero gradient still decays the moments and counts a step. So this is torch's Adam update
    written over the stacked tensors with one step count per slot: bias corrections are computed per slot in Python
    floats as torch's non-capturable Adam computes them, and broadcast over each slot; only the slots that step are
    updated, the others keep their weights, moments and count. lr, betas and eps are those of the model's own
    `make_optimizer()` (plain Adam only). A slot's state reads and writes as that torch.optim.Adam's state_dict, so an
    optimizer checkpoint moves between a pack slot and a ReferenceMember either way.
    """

    def __init__(self, params: dict[str, Tensor], template: torch.optim.Optimizer) -> None:
        group = template.param_groups[0]
        if not isinstance(template, torch.optim.Adam) or len(template.param_groups) != 1 or group["weight_decay"] \
                or group["amsgrad"] or group["maximize"] or isinstance(group["lr"], Tensor):
            raise ValueError("StackedAdam stands in for a plain torch.optim.Adam with one parameter group only")
        self.lr, (self.beta1, self.beta2), self.eps = float(group["lr"]), group["betas"], float(group["eps"])
        self.param_groups = copy.deepcopy(template.state_dict()["param_groups"])
        self.names = list(params)
        self.slots = next(iter(params.values())).shape[0]
        self.exp_avg = {n: torch.zeros_like(p) for n, p in params.items()}
        self.exp_avg_sq = {n: torch.zeros_like(p) for n, p in params.items()}
        self.steps = [0] * self.slots

    def step(self, params: dict[str, Tensor], grads: dict[str, Tensor], slots: list[int]) -> None:
        """One Adam step of the given slots, in place; every other slot is left exactly as it was."""
        if not slots:
            return
        for s in slots:
            self.steps[s] += 1
        bc1 = [1 - self.beta1 ** self.steps[s] for s in slots]
        bc2_sqrt = [(1 - self.beta2 ** self.steps[s]) ** 0.5 for s in slots]
        neg_step = [-self.lr / b for b in bc1]
        every = len(slots) == self.slots
        sel = None if every else torch.tensor(slots, device=next(iter(params.values())).device)
        with torch.no_grad():
            for n in self.names:
                p, g, m, v = params[n], grads[n], self.exp_avg[n], self.exp_avg_sq[n]
                if not every:  # work on copies of the stepping slots, then write them back
                    p, g, m, v = p[sel], g[sel], m[sel], v[sel]
                m.lerp_(g, 1 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
                denom = v.sqrt().div_(_per_slot(bc2_sqrt, v)).add_(self.eps)
                p.addcdiv_(m * _per_slot(neg_step, m), denom)
                if not every:
                    for full, part in ((params[n], p), (self.exp_avg[n], m), (self.exp_avg_sq[n], v)):
                        full.index_copy_(0, sel, part)

    def reset(self, slot: int) -> None:
        for n in self.names:
            self.exp_avg[n][slot].zero_()
            self.exp_avg_sq[n][slot].zero_()
        self.steps[slot] = 0

    def state_dict(self, slot: int) -> dict[str, Any]:
        """The slot's state as torch.optim.Adam.state_dict() of one member (CPU tensors; no state before its first step)."""
        state = {} if self.steps[slot] == 0 else {
            i: {"step": torch.tensor(float(self.steps[slot])), "exp_avg": self.exp_avg[n][slot].detach().cpu().clone(),
                "exp_avg_sq": self.exp_avg_sq[n][slot].detach().cpu().clone()}
            for i, n in enumerate(self.names)
        }
        return {"state": state, "param_groups": copy.deepcopy(self.param_groups)}

    def load_state_dict(self, slot: int, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.names):
            raise ValueError(f"optimizer state for {len(self.names)} parameters in one group expected")
        theirs = (float(groups[0]["lr"]), tuple(groups[0]["betas"]), float(groups[0]["eps"]))
        if theirs != (self.lr, tuple(self.betas), self.eps):
            raise ValueError(f"optimizer state has lr, betas, eps = {theirs}; this pack's are {(self.lr, self.betas, self.eps)}")
        state = state_dict["state"]
        if not state:
            self.reset(slot)
            return
        for i, n in enumerate(self.names):
            self.exp_avg[n][slot].copy_(state[i]["exp_avg"])
            self.exp_avg_sq[n][slot].copy_(state[i]["exp_avg_sq"])
        self.steps[slot] = int(float(state[0]["step"]))

    @property
    def betas(self) -> tuple[float, float]:
        return (self.beta1, self.beta2)
