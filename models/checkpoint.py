"""Checkpoints: a plain dict of tensors and JSON strings, written to a temp file then renamed.

Loading uses `weights_only=True`, so a checkpoint can never execute code.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from popvae.models.atomic import ensure_space
from popvae.models.integrity import DamagedFile, checked_write, verify
from popvae.models.registry import build


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """`torch.save` through `checked_write`: a crash leaves the old file or the new one, each with its sha256.
    Serialised in memory first, so that its size is checked against the free space before a byte is written and a
    full disk fails as NoSpaceLeft naming the file (torch's own writer reports it as an unrelated zip error)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    ensure_space(path, data.nbytes)
    checked_write(path, lambda fh: fh.write(data))


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Save a registered model with its config (as JSON) and free-form JSON metadata."""
    atomic_torch_save(
        {
            "family": model.family,
            "config": model.config.model_dump_json(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "meta": json.dumps(meta or {}),
        },
        path,
    )


def nonfinite(tensors: dict[str, Any]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, else None."""
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            return name
    return None


def load_error(err: BaseException) -> str:
    """One line on why a file would not load. torch's own text for a file that is not a weights-only
    pickle suggests weights_only=False, which is the wrong advice for a damaged file."""
    if isinstance(err, DamagedFile):
        return err.reason
    if isinstance(err, pickle.UnpicklingError):
        return "damaged, or not a file written by torch.save"
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from `save_model`'s file; returns (model in eval mode, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        verify(path)  # before torch reads it: its zip reader can crash the interpreter on a damaged archive
        blob = torch.load(path, map_location=map_location, weights_only=True)
        config = json.loads(blob["config"])
        model = build(blob["family"], config)
        model.load_state_dict(blob["state_dict"])
        meta = json.loads(blob.get("meta", "{}"))
        # what the model takes, for `data.prepare`: every family's config has both
        meta["input_shape"] = [config["in_channels"], config["image_size"], config["image_size"]]
    except DamagedFile as err:
        raise ValueError(str(err)) from None
    except Exception as err:  # torch, json, pydantic and load_state_dict raise many types for a damaged file
        raise ValueError(f"checkpoint {path} is unreadable or not a popvae model: {load_error(err)}") from None
    if (bad := nonfinite(blob["state_dict"])) is not None:
        raise ValueError(f"checkpoint {path} holds non-finite weights (NaN or infinity in {bad})")
    model.eval()
    if "tau" in meta and hasattr(model, "tau"):  # the temperature lives outside the weights
        model.tau = float(meta["tau"])
    return model, meta
