"""What the benchmarks share: a spread of repeated measurements, and the JSON they print (and write with --out)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any


def spread(xs: list[float]) -> dict[str, Any]:
    """Median, min, max and every run (None where nothing was measured)."""
    if not xs:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "runs": list(xs)}


def emit(result: dict[str, Any], out: Path | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")
