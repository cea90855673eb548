"""The `popvae` command. Bad input exits with code 2 and one line on stderr, before anything is written."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from models.data import DATASETS, DatasetError
from population.config import ConfigError, RunConfig, load_config_file, parse_config

EXIT_BAD_INPUT = 2

# flag -> (config path, type, help); None means "leave the config's value"
TRAIN_FLAGS: dict[str, tuple[tuple[str, ...], Any, str]] = {
    "--dataset": (("dataset",), str, f"one of {', '.join(DATASETS)} (default fashion-mnist)"),
    "--data-root": (("data_root",), str, "folder holding the dataset files"),
    "--members": (("members",), int, "population size n (default 5)"),
    "--epochs": (("epochs",), int, "epochs = generations (default 5)"),
    "--batch-size": (("batch_size",), int, "default 64"),
    "--steps-per-epoch": (("steps_per_epoch",), int, "cap the batches per epoch (default: a full pass)"),
    "--seed": (("seed",), int, "default 0"),
    "--select-on": (("select_on",), str, "train | val (default val: same held-out images, no noise)"),
    "--device": (("device",), str, "auto | cpu | cuda"),
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


def _fail(message: str) -> int:
    print(f"popvae: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a population of GS-VAEs (or the annealed baseline)")
    p.add_argument("--run-dir", type=Path, help="folder for this run (must be new or empty)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run at its next epoch")
    p.add_argument("--config", type=Path, help="JSON or YAML file of settings; flags override it")
    for flag, (_, typ, help_) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, help=help_)
    p.add_argument("--exclude-classes", type=lambda s: [int(c) for c in s.split(",") if c], help="e.g. 0,5: train without them")
    p.add_argument("--baseline", action="store_true", help="train the standard GS-VAE: one member, tau annealed")
    p.add_argument("--no-reset-patience", action="store_true", help="keep counting patience after a feedback step")
    p.add_argument("--compare-baseline", action="store_true", help="then train the baseline on the same budget and compare")
    p.add_argument("--address", help="join this Ray cluster instead of starting one (or RAY_ADDRESS)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a Ray started here (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def train_config(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = load_config_file(args.config) if args.config else {}
    for flag, (path, _, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
    if args.exclude_classes is not None:
        data["exclude_classes"] = args.exclude_classes
    if args.no_reset_patience:
        data.setdefault("temperature", {})["reset_patience"] = False
    if args.baseline:
        data["baseline"], data["members"] = True, 1
    return data


def cmd_train(args: argparse.Namespace) -> int:
    from population import run as runs

    if (args.run_dir is None) == (args.resume is None):
        return _fail("give exactly one of --run-dir (a new run) or --resume RUN_DIR")
    try:
        if args.resume:
            cfg = runs.prepare_run_dir(args.resume, True, None)
            if args.epochs is not None:  # continuing may extend the budget, nothing else
                cfg = parse_config({**cfg.model_dump(mode="json"), "epochs": args.epochs})
            run_dir = args.resume
        else:
            run_dir = args.run_dir
            cfg = runs.prepare_run_dir(run_dir, False, parse_config(train_config(args)))
        data = runs.load_run_data(cfg)
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    runs.ensure_ray(args.address, args.num_cpus)
    summary = _train_with_progress(cfg, run_dir, data, bool(args.resume), args.quiet)
    results = [("population", summary)]
    if args.compare_baseline and not cfg.baseline:
        base_cfg = parse_config({**cfg.model_dump(mode="json"), "baseline": True, "members": 1})
        results.append(("baseline", _train_with_progress(base_cfg, run_dir / "baseline", data, False, args.quiet)))
    _print_results(results)
    return 0


def _train_with_progress(cfg: RunConfig, run_dir: Path, data: Any, resume: bool, quiet: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from population.run import run_population

    console = Console(stderr=True, quiet=quiet)
    label = "baseline" if cfg.baseline else f"{cfg.members} members"
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(f"{run_dir.name} ({label})", total=cfg.epochs)

        def show(entry: dict[str, Any], status: dict[str, Any]) -> None:
            taus = " ".join(f"{m['index']}:{m['tau']:.2f}" for m in status["members"])
            events = f"  events {entry['events']}" if entry["events"] else ""
            progress.console.print(
                f"epoch {entry['epoch'] + 1}/{cfg.epochs}  best member {entry['best']}  {cfg.select_on} loss "
                f"{entry['best_loss']:.2f}  taus {taus}  {status['generation_seconds']:.1f}s{events}"
            )
            progress.update(task, completed=entry["epoch"] + 1)

        return run_population(cfg, run_dir, data, resume=resume, on_generation=show)


def _print_results(results: list[tuple[str, dict[str, Any]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="test set (deterministic reconstructions, MSE per pixel on [0,1])")
    for col in ("run", "best member", "tau", "test MSE", "test loss", "images"):
        table.add_column(col)
    for name, s in results:
        table.add_row(
            name,
            str(s["best_member"]),
            f"{s['best_tau']:.3f}",
            f"{s['test_mse']:.5f}",
            f"{s['test_loss']:.2f}",
            str(s["test_images"]),
        )
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="popvae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    args = parser.parse_args(argv)
    return {"train": cmd_train}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
