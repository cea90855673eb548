"""The run config: everything a population run needs, validated before any work starts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from popvae.models.configs import GSVAEConfig
from popvae.models.datasets import DATASETS, IMAGE_SHAPE
from popvae.population.temperature import TemperatureConfig


class ConfigError(ValueError):
    """An invalid run config; the message is one line naming the field and the problem."""


MAX_MEMBERS = 1024  # a sane upper bound; what the cluster can place is checked when Ray is up
TAU_LIMIT = 1e6  # temperatures the schedules, the losses and the plots handle as finite numbers


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    members: int = Field(5, ge=1, le=MAX_MEMBERS)
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1)  # None: one full pass over the training split
    val_fraction: float = Field(0.1, gt=0, lt=1)
    val_size: int | None = Field(2000, ge=1)  # cap on the held-out images scored per epoch
    # `val` by default: every member is scored on the same held-out images without Gumbel noise,
    # so selection is not decided by the batches and noise a member happened to draw; `train`
    # (the epoch's mean training loss) is the paper's choice.
    select_on: Literal["train", "val"] = "val"
    exclude_classes: list[int] = []
    seed: int = Field(0, ge=0, lt=2**32)  # numpy's and torch's seed range
    baseline: bool = False  # the standard GS-VAE: one member, tau annealed, same code
    # Ablations (`popvae reproduce`): False = members train independently, the best is picked at the end;
    # k = one member following member k's schedule of Algorithm 2 (the winning schedule, without a population).
    broadcast: bool = True
    schedule_of: int | None = Field(None, ge=1, le=MAX_MEMBERS)
    model: GSVAEConfig = GSVAEConfig()
    temperature: TemperatureConfig = TemperatureConfig()
    member_timeout_s: float = Field(1800.0, gt=0)  # the generation barrier's limit per member
    placement_timeout_s: float = Field(300.0, gt=0)  # how long a (re)started member may wait for a slot on the cluster
    checkpoint_every: int = Field(1, ge=1)
    log_every_steps: int = Field(10, ge=1)  # TensorBoard's per-step training loss (loss/train_step): every N steps
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Members per worker process (docs/PACKING.md §4): "auto" = one pack per GPU (all the members it gets), or one per
    # CPU node with torch threads = the node's CPUs; K = at most K members per pack (1: one member per process).
    pack_size: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    synthetic_size: int = Field(512, ge=16)

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; choose one of: {', '.join(DATASETS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.baseline and self.members != 1:
            raise ValueError(f"the baseline is a single annealed model: members must be 1, got {self.members}")
        if self.schedule_of is not None and (self.members != 1 or self.baseline):
            raise ValueError(f"schedule_of trains member {self.schedule_of}'s schedule alone: members must be 1 and "
                             f"baseline false, got members {self.members}, baseline {str(self.baseline).lower()}")
        # The image shape comes from the dataset; a shape the user set must agree with it rather than be replaced.
        channels, side, _ = IMAGE_SHAPE[self.dataset]
        shape = {"in_channels": channels, "image_size": side}
        for name in sorted(self.model.model_fields_set & shape.keys()):
            if getattr(self.model, name) != shape[name]:
                raise ValueError(f"model.{name} = {getattr(self.model, name)} does not match {self.dataset} "
                                 f"({channels} channel(s), {side}x{side} images); leave it unset to take the dataset's")
        if (self.model.in_channels, self.model.image_size) != (channels, side):
            self.model = type(self.model).model_validate({**self.model.model_dump(exclude_unset=True), **shape})
        t = self.temperature
        if max(t.tau0, t.tau_min, t.tau_max) > TAU_LIMIT:
            raise ValueError(f"temperatures must be at most {TAU_LIMIT:g}; got tau0 {t.tau0:g}, tau_min {t.tau_min:g}, "
                             f"tau_max {t.tau_max:g}")
        if any(c < 0 for c in self.exclude_classes):
            raise ValueError(f"exclude_classes must be class indices >= 0, got {self.exclude_classes}")
        return self


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a config dict strictly, as JSON (no `"members": true`, no numbers written as strings); any problem
    becomes one ConfigError line."""
    try:
        text = json.dumps(data)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid config: {err}") from None
    try:
        return RunConfig.model_validate_json(text, strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own ValueError
        raise ConfigError(f"invalid config: {where}: {message}") from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML file as a dict (validated later, together with command-line overrides)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as err:
        kind = "YAML" if path.suffix in (".yaml", ".yml") else "JSON"
        raise ConfigError(f"config file {path} is not valid {kind}: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data
