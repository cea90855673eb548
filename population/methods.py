"""The robust-autoencoder methods by name: a model family plus config overrides, checked without torch
(`models.configs` holds the families' configs), so that a bad `--methods` is rejected at once."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from popvae.models.configs import FAMILY_CONFIGS

METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "gmm-dae": ("gmm-dae", {}),
    "gmm-dae-unimodal": ("gmm-dae", {"modes": 1}),
    "robust-gmm-dae": ("robust-gmm-dae", {}),
    "raven": ("raven", {}),
    "vae-kl": ("vae", {"regulariser": "kl"}),
    "vae-mmd": ("vae", {"regulariser": "mmd"}),
    "vae-swt": ("vae", {"regulariser": "swt"}),
    "dae-mmd": ("dae", {"regulariser": "mmd"}),
    "dae-swt": ("dae", {"regulariser": "swt"}),
    "vae-tc": ("vae", {"regulariser": "kl", "tc": True}),
    "vae-kl-lat": ("vae", {"regulariser": "kl", "latent_adv": True}),
    "dae-mmd-lat": ("dae", {"regulariser": "mmd", "latent_adv": True}),
    "vae-mmd-lat": ("vae", {"regulariser": "mmd", "latent_adv": True}),
    "vae-swt-lat": ("vae", {"regulariser": "swt", "latent_adv": True}),
    "dae-swt-lat": ("dae", {"regulariser": "swt", "latent_adv": True}),
}


def parse_methods(csv: str) -> list[str]:
    """Comma-separated method names, in order, without repeats; ValueError naming any unknown one."""
    names = list(dict.fromkeys(name.strip() for name in csv.split(",") if name.strip()))
    if not names:
        raise ValueError(f"no method given; choose from: {', '.join(METHODS)}")
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(METHODS)}")
    return names


def method_config(method: str, image_shape: tuple[int, ...],
                  overrides: dict[str, Any] | None = None) -> tuple[str, BaseModel]:
    """(family, validated config) for `method` on (C, H, W) images: raises (pydantic's ValidationError) before any training."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")
    family, base = METHODS[method]
    shape = {"in_channels": image_shape[0], "image_size": image_shape[1]}
    return family, FAMILY_CONFIGS[family].model_validate({**shape, **base, **(overrides or {})})
