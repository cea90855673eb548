"""The evaluation's experiment names and its reduced CPU budgets: plain data, no torch, so that the command
line can list and check them without importing the attacks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXPERIMENTS = ("purification", "latent", "max-damage", "latent-pgd", "patches", "unseen")
CHECKPOINT_NAMES = ("best.pt", "model.pt")  # a population run folder, a robust-AE job folder
# Reduced budgets for CPU: the defaults (PGD 20 steps x EOT 4 over 6 eps; 100 images x 10 trials) take
# about 10 minutes per 50 test images for a full-size GS-VAE on 2 CPU cores. Every report states what ran.
QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "purification": {"eps_grid": (0.1, 0.2, 0.3), "pgd_steps": 10, "eot_samples": 2},
    "latent": {"n_images": 20, "trials": 3, "steps": 20},
    "max-damage": {"n_images": 20, "trials": 3, "steps": 20},
    "latent-pgd": {"eps_grid": (0.0, 0.5, 1.0, 2.0, 3.0), "steps": 15},
}


def find_checkpoint(target: Path) -> Path:
    """A checkpoint file, or the one a run / job folder holds (best.pt, else model.pt); FileNotFoundError otherwise."""
    target = Path(target)
    if target.is_dir():
        found = [target / name for name in CHECKPOINT_NAMES if (target / name).is_file()]
        if not found:
            raise FileNotFoundError(f"no {' or '.join(CHECKPOINT_NAMES)} in {target}: not a finished run or job folder")
        return found[0]
    if not target.is_file():
        raise FileNotFoundError(f"{target} not found: give a run or job folder, or a checkpoint file")
    return target
