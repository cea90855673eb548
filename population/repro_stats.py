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
