"""The `popvae` command. Bad input exits with code 2 and one line on stderr, before anything is written."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

from popvae.models.data import DATASETS, DatasetError
from popvae.population.config import ConfigError, RunConfig, load_config_file, parse_config

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


def _run_failed(err: Exception, run_dir: Path) -> int:
    """A run that stopped on the cluster: its cause in one line (not Ray's wrapped traceback), exit 1."""
    cause = getattr(err, "cause", None)
    lines = [ln.strip() for ln in str(cause if isinstance(cause, Exception) else err).splitlines() if ln.strip()]
    raised = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception")) and ":" in ln]
    print(f"popvae: run failed: {(raised or lines or [type(err).__name__])[-1]}", file=sys.stderr)
    if (run_dir / "checkpoints" / "latest.pt").is_file():
        print(f"popvae: {run_dir} keeps what finished; continue with: popvae train --resume {run_dir}", file=sys.stderr)
    else:
        print(f"popvae: no epoch finished; remove {run_dir} to start again", file=sys.stderr)
    return 1


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a population of GS-VAEs (or the annealed baseline)")
    p.add_argument("--run-dir", type=Path, help="folder for this run (must be new or empty)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run at its next epoch")
    p.add_argument("--config", type=Path, help="JSON or YAML file of settings; flags override it")
    for flag, (_, typ, help_) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, help=help_)
    p.add_argument("--exclude-classes", type=_class_list, help="e.g. 0,5: train without them")
    p.add_argument("--baseline", action="store_true", help="train the standard GS-VAE: one member, tau annealed")
    p.add_argument("--no-reset-patience", action="store_true", help="keep counting patience after a feedback step")
    p.add_argument(
        "--compare-baseline",
        action="store_true",
        help="then train the baseline on the same budget into RUN_DIR-baseline and compare",
    )
    _cluster_flags(p)
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
    from popvae.population import run as runs

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
    import ray
    from ray.exceptions import RayError

    runs.ensure_ray(args.address, args.num_cpus)
    gpus = ray.cluster_resources().get("GPU", 0)
    if cfg.device == "cuda" and gpus < cfg.members:
        return _fail(f"device cuda needs a GPU per member: the Ray cluster has {gpus:g} GPUs for {cfg.members} members")
    results = []
    try:
        results.append(("population", _train_with_progress(cfg, run_dir, data, bool(args.resume), args.quiet)))
        if args.compare_baseline and not cfg.baseline:
            base_cfg = parse_config({**cfg.model_dump(mode="json"), "baseline": True, "members": 1})
            run_dir = run_dir.with_name(f"{run_dir.name}-baseline")
            results.append(("baseline", _train_with_progress(base_cfg, run_dir, data, False, args.quiet)))
    except RayError as err:
        return _run_failed(err, run_dir)
    _print_results(results)
    return 0


def _train_with_progress(cfg: RunConfig, run_dir: Path, data: Any, resume: bool, quiet: bool) -> dict[str, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from popvae.population.run import run_population

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
                f"{entry['best_loss']:.2f}  taus {taus}  {status['generation_seconds']:.1f}s{events}",
                soft_wrap=True,
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


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="join this Ray cluster instead of starting one (or RAY_ADDRESS)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a Ray started here (default: all)")


def _robust_parser(sub: Any) -> None:
    p = sub.add_parser("robust", help="train robust autoencoders as jobs on the worker pool")
    p.add_argument("--methods", required=True, help="comma-separated, e.g. gmm-dae,robust-gmm-dae,raven,vae-kl,dae-mmd")
    p.add_argument("--dataset", default="fashion-mnist", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps-per-epoch", type=int, help="cap the batches per epoch (default: a full pass)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, required=True, help="jobs go to RUN_DIR/jobs/<method>/")
    p.add_argument("--workers", type=int, help="jobs running at once (default: one per method, at most the CPUs)")
    _cluster_flags(p)


def cmd_robust(args: argparse.Namespace) -> int:
    from popvae.models.data import check_dataset_name, load_split
    from popvae.population import rundir
    from popvae.population.jobs import run_jobs
    from popvae.population.robust import method_config, parse_methods
    from popvae.population.run import ensure_ray

    try:
        methods = parse_methods(args.methods)
        for name, value in (
            ("epochs", args.epochs),
            ("batch-size", args.batch_size),
            ("steps-per-epoch", args.steps_per_epoch),
            ("workers", args.workers),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"--{name} must be >= 1, got {value}")
        check_dataset_name(args.dataset)
        if (blocker := rundir.file_in_the_way(args.run_dir)) is not None:
            raise ConfigError(f"--run-dir {args.run_dir}: {blocker} is a file, not a folder")
        if (args.run_dir / "history.parquet").exists():
            raise ConfigError(f"--run-dir {args.run_dir} holds a population run; give robust jobs their own folder")
        jobs_root = args.run_dir / "jobs"
        taken = [m for m in methods if (jobs_root / m).exists()]
        if taken:
            raise ConfigError(f"{jobs_root} already has jobs for {', '.join(taken)}; choose another --run-dir")
        train, test = (load_split(args.dataset, split, args.data_root) for split in ("train", "test"))
        for m in methods:
            method_config(m, train.images.shape[1:])
    except (ValueError, DatasetError) as err:  # ConfigError and pydantic's ValidationError are ValueErrors
        return _fail(str(err).splitlines()[0])
    run_config = args.run_dir / "config.json"
    if not run_config.exists():
        rundir.write_json(
            run_config,
            {
                "kind": "robust",
                "dataset": args.dataset,
                "data_root": args.data_root,
                "methods": methods,
                "epochs": args.epochs,
                "seed": args.seed,
            },
        )
    jobs = [
        {
            "id": m,
            "kind": "robust",
            "method": m,
            "dir": str(jobs_root / m),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "steps_per_epoch": args.steps_per_epoch,
            "seed": args.seed,
        }
        for m in methods
    ]
    ensure_ray(args.address, args.num_cpus)
    import ray

    workers = args.workers or max(1, min(len(jobs), int(ray.cluster_resources().get("CPU", 1))))
    print(f"{len(jobs)} jobs on {workers} workers; status in {jobs_root}/<method>/status.json", file=sys.stderr)
    results = run_jobs(jobs, train, test, workers, on_done=lambda job, r: print(f"{job['id']}: {r['state']}", file=sys.stderr))
    _print_job_table(results)
    return 0 if all(r["state"] == "done" for r in results.values()) else 1


def _print_job_table(results: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="robust autoencoders (test MSE per pixel on [0,1], deterministic reconstructions)")
    for col in ("method", "state", "test MSE", "train s", "error"):
        table.add_column(col)
    for method, r in results.items():
        m = r.get("metrics") or {}
        table.add_row(
            method,
            r["state"],
            f"{m['test_mse']:.5f}" if "test_mse" in m else "",
            f"{m['train_seconds']:.0f}" if "train_seconds" in m else "",
            r.get("error") or "",
        )
    Console(width=160).print(table)


def _evaluate_parser(sub: Any) -> None:
    from popvae.attacks.report import EXPERIMENTS

    p = sub.add_parser("evaluate", help="attack and evaluate a trained model (a run or job folder, or a checkpoint)")
    p.add_argument("target", type=Path, metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS), help=f"comma-separated from {', '.join(EXPERIMENTS)}")
    p.add_argument("--subset", type=int, help="evaluate on this many random test images (seeded) instead of all")
    p.add_argument("--dataset", help="default: the run's dataset, else fashion-mnist")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="reduced attack budgets for a CPU (stated in the report)")
    _cluster_flags(p)


def _run_config_near(checkpoint: Path) -> dict[str, Any]:
    """The config.json of the run that holds `checkpoint` (a run folder or RUN/jobs/<id>/)."""
    import json

    for folder in (checkpoint.parent, checkpoint.parent.parent.parent):
        path = folder / "config.json"
        if path.is_file():
            data = json.loads(path.read_text())
            if "dataset" in data:
                return data
    return {}


def cmd_evaluate(args: argparse.Namespace) -> int:
    import os
    import time

    from popvae.attacks.report import EXPERIMENTS, QUICK_SETTINGS, load_evaluable
    from popvae.models.data import check_dataset_name, load_split

    try:
        experiments = [e.strip() for e in args.experiments.split(",") if e.strip()]
        unknown = sorted(set(experiments) - set(EXPERIMENTS))
        if unknown or not experiments:
            raise ConfigError(f"unknown experiments {unknown}; choose from {', '.join(EXPERIMENTS)}")
        if args.subset is not None and args.subset < 1:
            raise ConfigError(f"--subset must be >= 1, got {args.subset}")
        _, meta = load_evaluable(args.target)
        checkpoint = Path(meta["checkpoint"])
        run_cfg = _run_config_near(checkpoint)
        dataset = check_dataset_name(args.dataset or run_cfg.get("dataset", "fashion-mnist"))
        root = args.data_root or run_cfg.get("data_root")
        train, test = (load_split(dataset, split, root) for split in ("train", "test"))
    except (ValueError, DatasetError, FileNotFoundError) as err:
        return _fail(str(err).splitlines()[0])
    run_dir = checkpoint.parent if checkpoint.name == "best.pt" else checkpoint.parent.parent.parent
    job_id = f"evaluation-{time.strftime('%Y%m%d-%H%M%S')}"
    job = {
        "id": job_id,
        "kind": "evaluation",
        "method": checkpoint.parent.name,
        "dir": str(run_dir / "jobs" / job_id),
        "checkpoint": str(checkpoint),
        "out_dir": str(checkpoint.parent),
        "experiments": experiments,
        "subset": args.subset,
        "seed": args.seed,
        "held_out": run_cfg.get("exclude_classes") or [],
        "settings": QUICK_SETTINGS if args.quick else None,
    }
    if args.address or os.environ.get("RAY_ADDRESS"):  # a cluster is there: run it on the worker pool
        from popvae.population.jobs import run_jobs
        from popvae.population.run import ensure_ray

        ensure_ray(args.address, args.num_cpus)
        result = run_jobs([job], train, test, 1)[job_id]
        if result["state"] != "done":
            print(f"popvae: evaluation failed: {result['error']}", file=sys.stderr)
            return 1
    else:
        from popvae.population.evaluation import run_evaluation_job

        run_evaluation_job(job, train, test, "cuda" if _cuda() else "cpu", progress=True)
    print(f"report: {checkpoint.parent / 'report.md'}")
    print((checkpoint.parent / "report.md").read_text())
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="the read-only REST status service")
    p.add_argument("--runs-root", type=Path, default=Path("runs"), help="folder whose subfolders are runs")
    p.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs $POPVAE_API_TOKEN)")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--address", help="Ray cluster to find live coordinators in (or RAY_ADDRESS)")


def cmd_serve(args: argparse.Namespace) -> int:
    from popvae.cluster.service import TOKEN_ENV, is_loopback, serve

    if not args.runs_root.is_dir():
        return _fail(f"--runs-root {args.runs_root} is not a folder")
    if not is_loopback(args.host) and not os.environ.get(TOKEN_ENV):
        return _fail(f"refusing to bind {args.host} without a bearer token: set {TOKEN_ENV}")
    try:  # uvicorn would report a busy port only after startup, with its own exit code
        socket.create_server((args.host, args.port)).close()
    except OSError as err:
        return _fail(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    serve(args.runs_root, args.host, args.port, args.address)
    return 0


def _status_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="print the population as a table, from the status service")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--run", help="run id (default: the most recently updated)")
    p.add_argument("--token", help="bearer token (default: $POPVAE_API_TOKEN)")


def cmd_status(args: argparse.Namespace) -> int:
    from popvae.cluster.status_table import print_status

    return print_status(args.url, args.run, args.token)


COMMANDS = {
    "train": (_train_parser, cmd_train),
    "robust": (_robust_parser, cmd_robust),
    "evaluate": (_evaluate_parser, cmd_evaluate),
    "serve": (_serve_parser, cmd_serve),
    "status": (_status_parser, cmd_status),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) rather than the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _class_list(text: str) -> list[int]:
    """`--exclude-classes 0,5`."""
    try:
        return [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class numbers separated by commas, got {text!r}") from None


def _port(text: str) -> int:
    port = int(text) if text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 1..65535, got {text!r}")
    return port


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="popvae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    args = parser.parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
