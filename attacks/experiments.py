"""The evaluation's experiment names and its reduced CPU budgets: plain data, no torch, so that the command
line can list and check them without importing the attacks."""

from __future__ import annotations

from typing import Any

EXPERIMENTS = ("purification", "latent", "max-damage", "latent-pgd", "patches", "unseen")
# Reduced budgets for CPU: the defaults (PGD 20 steps x EOT 4 over 6 eps; 100 images x 10 trials) take
# about 10 minutes per 50 test images for a full-size GS-VAE on 2 CPU cores. Every report states what ran.
QUICK_SETTINGS: dict[str, dict[str, Any]] = {
    "purification": {"eps_grid": (0.1, 0.2, 0.3), "pgd_steps": 10, "eot_samples": 2},
    "latent": {"n_images": 20, "trials": 3, "steps": 20},
    "max-damage": {"n_images": 20, "trials": 3, "steps": 20},
    "latent-pgd": {"eps_grid": (0.0, 0.5, 1.0, 2.0, 3.0), "steps": 15},
}

