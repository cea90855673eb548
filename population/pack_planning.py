"""Which members share a worker (a pack): one pack per GPU, per CPU (looped packs) or per CPU node (vmap packs), or at
most K members per pack (docs/PACKING.md). Pure: plain numbers in, lists of member indices out."""

from __future__ import annotations

import math

import numpy as np


def plan_packs(members: list[int], pack_size: str | int, gpus: float, cpu_nodes: int, device: str = "auto",
               cpus: int = 1, pack_mode: str = "auto") -> list[list[int]]:
    """Which members share a worker: "auto" = one pack per GPU when the cluster has GPUs (and device allows them);
    otherwise one per CPU for looped packs (a member's step runs faster on one thread than k members' on k threads:
    benchmarks/generation_speed.py), one per CPU node for vmap packs (one stacked step amortises its launch over the
    node's threads); K = at most K per pack. Packs are contiguous runs of members, sizes within one."""
    if pack_size == "auto":
        if device != "cpu" and gpus >= 1:
            count = int(gpus)
        else:
            count = max(cpu_nodes, 1) if pack_mode == "vmap" else max(cpus, 1)
    else:
        count = math.ceil(len(members) / int(pack_size))
    count = max(1, min(count, len(members)))
    return [[int(i) for i in chunk] for chunk in np.array_split(np.asarray(members), count)]
