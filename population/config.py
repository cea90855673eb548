"""The run config: everything a population run needs, validated before any work starts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from popvae.models.configs import GSVAEConfig
from popvae.models.dataset_names import DATASETS, IMAGE_SHAPE
from popvae.population.temperature import TemperatureConfig

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """An invalid run config; the message is one line naming the field and the problem. A message that tells the
    command's user what to type also has `api`: the same advice for a Python caller (`popvae.resume(...)`), which
    the notebook API raises instead."""

    def __init__(self, message: str, *, api: str | None = None) -> None:
        super().__init__(message)
        self.api = api


MAX_MEMBERS = 1024  # a sane upper bound; what the cluster can place is checked when Ray is up
PRECISIONS = ("auto", "fp32", "bf16")  # RunConfig.precision's values; robust jobs take the same
TAU_LIMIT = 1e6  # temperatures the schedules, the losses and the plots handle as finite numbers
# Every duration in seconds: Ray and the barrier turn them into integer milliseconds and deadlines, which a
# number like 1e308 overflows; 30 days is past any wait a run means.
MAX_DURATION_S = 30 * 24 * 3600.0
MAX_CONFIG_BYTES = 2**20  # a config file is a page of settings; a bigger one is a mistake, never parsed
Duration = Annotated[float, Field(gt=0, le=MAX_DURATION_S)]
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # numpy's and torch's seed range
Count = Annotated[int, Field(ge=1)]  # epochs, batches, steps


class StopConfig(BaseModel):
    """The plateau stopper: a run ends once its best selection loss has not improved by `min_delta` (relative) in
    `plateau_generations` generations (generation.plateau_count); `epochs` stays the upper bound."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    plateau_generations: Count
    min_delta: float = Field(0.0, ge=0, lt=1)


SELECT_ON = ("train", "val", "val_hard")  # RunConfig.select_on's values


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dataset: str = "fashion-mnist"
    data_root: str | None = None
    members: int = Field(5, ge=1, le=MAX_MEMBERS)
    epochs: Count = 5
    batch_size: Count = 64
    steps_per_epoch: Count | None = None  # None: one full pass over the training split
    val_fraction: float = Field(0.1, gt=0, lt=1)
    val_size: int | None = Field(2000, ge=1)  # cap on the held-out images scored per epoch
    # `val` by default: every member is scored on the same held-out images without Gumbel noise,
    # so selection is not decided by the batches and noise a member happened to draw; `train`
    # (the epoch's mean training loss) is the paper's choice.
    select_on: Literal["train", "val", "val_hard"] = "val"
    # `val_hard`: the held-out loss with hard codes (one-hot argmax, the tau -> 0 limit), which a high tau alone cannot win.
    stop: StopConfig | None = None  # None: train every epoch
    # The learning curve: each member's reconstruction MSE on the first `curve_subset` validation images, every generation.
    curve_subset: Count = 1000
    exclude_classes: list[int] = []
    seed: Seed = 0
    baseline: bool = False  # the standard GS-VAE: one member, tau annealed, same code
    # Ablations (`popvae reproduce`): False = members train independently, the best is picked at the end;
    # k = one member following member k's schedule of Algorithm 2 (the winning schedule, without a population).
    broadcast: bool = True
    schedule_of: int | None = Field(None, ge=1, le=MAX_MEMBERS)
    # The fixed-tau grid (the reproduction's random search at equal compute): member i trains at fixed_taus[i-1] for the
    # whole run, no schedule, no feedback, no broadcast; the best on the selection loss is kept.
    fixed_taus: list[Annotated[float, Field(gt=0)]] | None = None
    model: GSVAEConfig = GSVAEConfig()
    temperature: TemperatureConfig = TemperatureConfig()
    member_timeout_s: Duration = 1800.0  # the generation barrier's limit per member
    placement_timeout_s: Duration = 300.0  # how long a (re)started member may wait for a slot on the cluster
    checkpoint_every: int = Field(1, ge=1)
    log_every_steps: int = Field(10, ge=1)  # TensorBoard's per-step training loss (loss/train_step): every N steps
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Members per worker process (docs/PACKING.md §4): "auto" = one pack per GPU (all the members it gets); on CPUs
    # one looped pack per CPU (one torch thread each), or one vmap pack per CPU node (torch threads = the node's CPUs);
    # K = at most K members per pack (1: one member per process).
    pack_size: Literal["auto"] | Annotated[int, Field(ge=1)] = "auto"
    # How a pack steps its members: "vmap" (one stacked model, the GPU's way), "loop" (one after another, the CPU's way:
    # AMX runs plain convolutions, not vmap's grouped ones); "auto" = vmap on a GPU, loop on a CPU (pack.pack_mode_for).
    # A new run records the resolved value.
    pack_mode: Literal["auto", "vmap", "loop"] = "auto"
    # "bf16": convolutions and linears under bfloat16 autocast (weights, Adam, sampling, KL and BCE stay float32);
    # "auto" = bf16 on a CUDA device with bf16 or a CPU with AMX / AVX512-BF16, else fp32 (training.resolve_precision). A
    # new run records the resolved value; a run recorded before this option existed resumes in fp32, as it trained.
    precision: Literal["auto", "fp32", "bf16"] = "auto"
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
        if self.fixed_taus is not None and (len(self.fixed_taus) != self.members or self.broadcast or self.baseline
                                            or self.schedule_of is not None):
            raise ValueError(f"fixed_taus trains each member at its own fixed tau: give one tau per member ({self.members}) "
                             f"with broadcast false, baseline false and no schedule_of; got {len(self.fixed_taus)} taus")
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
        if max(t.tau0, t.tau_min, t.tau_max, *(self.fixed_taus or ())) > TAU_LIMIT:
            raise ValueError(f"temperatures must be at most {TAU_LIMIT:g}; got tau0 {t.tau0:g}, tau_min {t.tau_min:g}, "
                             f"tau_max {t.tau_max:g}")
        if any(c < 0 for c in self.exclude_classes):
            raise ValueError(f"exclude_classes must be class indices >= 0, got {self.exclude_classes}")
        return self


def parse_config(data: dict[str, Any]) -> RunConfig:
    """Validate a config dict strictly, as JSON (no `"members": true`, no numbers written as strings); any problem
    becomes one ConfigError line."""
    return validated(RunConfig, data)


def validated(model: type[M], data: dict[str, Any], flags: bool = False) -> M:
    """`data` as `model`, validated strictly as JSON: the one validator of every command's settings, so `train`,
    `robust` and `evaluate` bound the same numbers alike. Any problem is one ConfigError line naming the field
    (`flags`: as the command-line flag it came from, `--batch-size`)."""
    try:
        text = json.dumps(data)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid config: {err}") from None
    try:
        return model.model_validate_json(text, strict=True)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        message = first["msg"].removeprefix("Value error, ")  # pydantic's prefix for a validator's own ValueError
        if flags:
            raise ConfigError(f"--{where.replace('_', '-')}: {message}, got {first.get('input')!r}") from None
        raise ConfigError(f"invalid config: {where}: {message}") from None


_NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def read_small_file(path: Path, what: str, limit: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of `path` when it is a regular file of at most `limit` bytes; ConfigError naming it otherwise.
    Checked on the open descriptor, so nothing can be swapped in after the check (opened non-blocking: a FIFO does
    not block the open), and never more than `limit` + 1 bytes are read (/dev/zero, a file that grows)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = next((name for test, name in _NOT_REGULAR if test(st.st_mode)), "not a regular file")
            raise ConfigError(f"{what} {path} is {kind}, not a regular file")
        if st.st_size > limit:
            raise ConfigError(f"{what} {path} is {st.st_size} bytes; the limit is {limit}")
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise ConfigError(f"cannot read {what} {path}: {err.strerror}") from None
    finally:
        os.close(fd)
    if size > limit:
        raise ConfigError(f"{what} {path} grew past the limit of {limit} bytes while it was read")
    return b"".join(chunks)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML file as a dict (validated later, together with command-line overrides): a regular file of at
    most MAX_CONFIG_BYTES, YAML without aliases (an alias bomb expands a kilobyte into gigabytes)."""
    path = Path(path)
    raw = read_small_file(path, "config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {err.start})") from None
    yaml_file = path.suffix in (".yaml", ".yml")
    try:
        data = _load_yaml(text) if yaml_file else json.loads(text)
    except ConfigError as err:
        raise ConfigError(f"config file {path}: {err}") from None
    except Exception as err:  # each parser's own errors, and RecursionError for a deeply nested document
        raise ConfigError(f"config file {path} is not valid {'YAML' if yaml_file else 'JSON'}: {err}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    return data


def _load_yaml(text: str) -> Any:
    """Safe YAML with aliases refused, found in a first pass over the parser's events before anything is built:
    aliases are the only way a small document expands into a huge one."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            raise ConfigError(f"YAML aliases are not accepted (*{event.anchor} at line {event.start_mark.line + 1}); "
                              "write the values out")
    return yaml.load(text, Loader=loader)  # a safe loader (C or Python)
