"""The reproduction's statistics: intervals over test images (within one seed) and over seeds, plain numbers in and out.

Pure functions over arrays (no files, no torch), so each is checked by hand in tests/test_reproduce.py.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def mean_ci(values: Any) -> tuple[float, float, float]:
    """(mean, low, high): a normal 95 % interval over the values (test images; n in the hundreds or more)."""
    v = np.asarray(values, dtype=float)
    half = 1.96 * float(v.std(ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else math.nan
    return float(v.mean()), float(v.mean()) - half, float(v.mean()) + half


def t_interval(values: Any) -> tuple[float, float, float]:
    """(mean, low, high): Student's t 95 % interval over a few values (training seeds); NaN bounds for one value."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), math.nan, math.nan
    half = float(stats.t.ppf(0.975, len(v) - 1)) * float(v.std(ddof=1)) / math.sqrt(len(v))
    return float(v.mean()), float(v.mean()) - half, float(v.mean()) + half


def over_seeds(per_seed: Any, per_image: Any) -> dict[str, Any]:
    """An arm's mean and 95 % interval: over its seeds (t) when it has two or more, else over the test images of its
    one seed (`per_image`, labelled within-seed: it says nothing of what another seed would move)."""
    seeds = len(per_seed)
    mean, low, high = t_interval(per_seed) if seeds >= 2 else mean_ci(per_image)
    return {"mean": mean, "ci95": [low, high], "interval": "seeds" if seeds >= 2 else "within-seed", "seeds": seeds}
