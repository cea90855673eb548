"""`popvae train`'s flags as run-config settings: which flag sets which `RunConfig` field, how a config file, the
reference dynamics and the switches merge under them (flags win), and which flags a resume honours.

Plain data in (argparse's values by name, None where a flag was not given), a config dict out; the command line
only parses the values. No torch, no Ray: every refusal here is answered before anything heavy is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from popvae.models.dataset_names import DATASETS
from popvae.population.config import ConfigError, load_config_file

PACK_SIZE = "pack_size"  # the value type of --pack-size: `auto` or an integer >= 1

# flag -> (config path, value type, help)
TRAIN_FLAGS: dict[str, tuple[tuple[str, ...], Any, str]] = {
    "--dataset": (("dataset",), str, f"one of {', '.join(DATASETS)} (default fashion-mnist)"),
    "--data-root": (("data_root",), str, "folder holding the dataset files"),
    "--members": (("members",), int, "population size n (default 5)"),
    "--epochs": (("epochs",), int, "epochs = generations (default 5)"),
    "--batch-size": (("batch_size",), int, "default 64"),
    "--steps-per-epoch": (("steps_per_epoch",), int, "cap the batches per epoch (default: a full pass)"),
    "--seed": (("seed",), int, "default 0"),
    "--select-on": (("select_on",), str, "train | val | val_hard (default val: same held-out images, no noise; "
                    "val_hard: with hard codes)"),
    "--stop-plateau": (("stop", "plateau_generations"), int, "end the run when the best selection loss has not improved "
                       "in P generations (default: off; --epochs stays the upper bound)"),
    "--stop-min-delta": (("stop", "min_delta"), float, "with --stop-plateau: the relative improvement that counts "
                         "(default 0: any)"),
    "--device": (("device",), str, "auto | cpu | cuda"),
    "--pack-size": (("pack_size",), PACK_SIZE, "members per worker process: auto (one pack per GPU or CPU node) | K"),
    "--pack-mode": (("pack_mode",), str, "auto | vmap | loop: how a pack steps its members (auto: vmap on a GPU, loop on a CPU)"),
    "--precision": (("precision",), str, "auto | fp32 | bf16 (auto: bf16 on a GPU with it or a CPU with AMX or "
                    "AVX512-BF16, else fp32)"),
    "--timeout": (("member_timeout_s",), float, "seconds a member may take for one epoch before it is dropped"),
    "--tau0": (("temperature", "tau0"), float, "initial tau"),
    "--tau-min": (("temperature", "tau_min"), float, "lower clip of tau"),
    "--tau-max": (("temperature", "tau_max"), float, "upper clip of tau"),
    "--scale": (("temperature", "scale"), str, "paper (s(i)=i-1) | reference (s(i)=1)"),
    "--l-inc": (("temperature", "l_inc"), float, "linear increase rate"),
    "--l-dec": (("temperature", "l_dec"), float, "linear decrease rate"),
    "--r-inc": (("temperature", "r_inc"), float, "exponential increase rate"),
    "--r-dec": (("temperature", "r_dec"), float, "exponential decrease rate"),
    "--lr-tau": (("temperature", "lr_tau"), float, "feedback learning rate"),
    "--patience": (("temperature", "patience"), int, "feedback patience threshold"),
    "--feedback-sign": (("temperature", "feedback_sign"), int, "+1 (paper) or -1"),
    "--anneal-rate": (("temperature", "anneal_rate"), float, "baseline's tau decay per epoch"),
}
def flag_default(path: tuple[str, ...]) -> Any:
    """The value a run gets when neither the flag at config `path` nor a --config file sets it (for --help); None
    where there is none, e.g. inside an optional section that is off by default."""
    from popvae.population.config import RunConfig

    node: Any = RunConfig().model_dump(mode="json")
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


# Train flags (other than TRAIN_FLAGS) that set the config, and those a resume honours: every other one is an error there.
CONFIG_FLAGS = ("--config", "--exclude-classes", "--baseline", "--no-reset-patience", "--compare-baseline",
                "--reference-dynamics", "--no-broadcast")
RESUME_FLAGS = ("--epochs", "--quiet", "--verbose", "--address", "--num-cpus")


def dest(flag: str) -> str:
    """argparse's name for a flag's value: `--tau-min` -> `tau_min`."""
    return flag.lstrip("-").replace("-", "_")


def _given(values: Mapping[str, Any], flag: str) -> bool:
    value = values.get(dest(flag))
    return value is not None and value is not False


def train_config(values: Mapping[str, Any]) -> dict[str, Any]:
    """A new run's config dict, validated later as a whole (`parse_config`): the --config file, the authors' tau
    dynamics under its own temperature settings (--reference-dynamics), then every flag given over them."""
    data: dict[str, Any] = load_config_file(values["config"]) if values.get("config") else {}
    if values.get("reference_dynamics"):
        from popvae.population.temperature import REFERENCE_DYNAMICS

        data["temperature"] = {**REFERENCE_DYNAMICS, **(data.get("temperature") or {})}
    if values.get("no_broadcast"):
        data["broadcast"] = False
    for flag, (path, _, _) in TRAIN_FLAGS.items():
        if (value := values.get(dest(flag))) is not None:
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
    if values.get("stop_min_delta") is not None and values.get("stop_plateau") is None \
            and "plateau_generations" not in (data.get("stop") or {}):
        raise ConfigError("--stop-min-delta needs --stop-plateau P (the generations without improvement that end a run)")
    if values.get("exclude_classes") is not None:
        data["exclude_classes"] = values["exclude_classes"]
    if values.get("no_reset_patience"):
        data.setdefault("temperature", {})["reset_patience"] = False
    if values.get("baseline"):
        data["baseline"], data["members"] = True, 1
    return data


def check_resume_flags(values: Mapping[str, Any]) -> None:
    """A resumed run keeps its config: ConfigError naming the first flag given that would change it."""
    ignored = [f for f in (*TRAIN_FLAGS, *CONFIG_FLAGS) if f not in RESUME_FLAGS and _given(values, f)]
    if ignored:
        raise ConfigError(f"{ignored[0]} cannot be used with --resume: a resumed run keeps its config "
                          f"(only {', '.join(RESUME_FLAGS)} apply)")
