"""Model families by name: a pydantic config class and the nn.Module built from it.

Each family module registers itself with `@register("name", ConfigClass)`; `build` and the
checkpoint loader look families up here, so adding a model never touches the trainers.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from torch import nn

_FAMILIES: dict[str, tuple[type[BaseModel], type[nn.Module]]] = {}

# Modules that define families; imported on first lookup so `models` stays cheap to import.
_FAMILY_MODULES = ("popvae.models.gsvae", "popvae.models.gmm_dae", "popvae.models.raven", "popvae.models.vae")


def register(name: str, config_cls: type[BaseModel]) -> Callable[[type[nn.Module]], type[nn.Module]]:
    def wrap(module_cls: type[nn.Module]) -> type[nn.Module]:
        _FAMILIES[name] = (config_cls, module_cls)
        module_cls.family = name
        return module_cls

    return wrap


def _load_all() -> None:
    for mod in _FAMILY_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as err:
            if err.name != mod:  # a real missing dependency, not a family still to be written
                raise


def families() -> dict[str, tuple[type[BaseModel], type[nn.Module]]]:
    _load_all()
    return dict(_FAMILIES)


def build(family: str, config: BaseModel | dict[str, Any]) -> nn.Module:
    known = families()
    if family not in known:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(sorted(known))}")
    config_cls, module_cls = known[family]
    if not isinstance(config, config_cls):
        config = config_cls.model_validate(config)
    return module_cls(config)
