"""The `popvae` command. Bad input exits with code 2 and one line on stderr, before anything is written.

Arguments are read before torch or Ray is imported: `--help` and input that needs no data are answered at once.
The work is done by `population` (run policies, job plans, runs) and `popvae.api`; this module parses and prints.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import sys
from pathlib import Path
from typing import Any, NoReturn

from popvae.models.datasets import DATASETS, DatasetError, check_dataset_name
from popvae.population.config import ConfigError, load_config_file, parse_config

EXIT_BAD_INPUT = 2
STOP_BUDGET_S = 8.0  # from a stop signal to the exit: population.run's clean-up (at most 4 s), then Ray's shutdown


def _int(text: str) -> int:
    """An integer in ASCII digits (int() would also take Unicode digits such as '٣')."""
    if not text.strip().lstrip("+-").isascii() or not text.strip().lstrip("+-").isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(text)


def _float(text: str) -> float:
    """A finite number in ASCII (float() would also take Unicode digits, 'nan' and 'inf')."""
    try:
        value = float(text) if text.isascii() else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _pack_size(text: str) -> str | int:
    """`auto` or a positive integer (members per worker process)."""
    if text == "auto":
        return text
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto or an integer >= 1, got {text!r}")
    return value


# flag -> (config path, type, help); None means "leave the config's value"
TRAIN_FLAGS: dict[str, tuple[tuple[str, ...], Any, str]] = {
    "--dataset": (("dataset",), str, f"one of {', '.join(DATASETS)} (default fashion-mnist)"),
    "--data-root": (("data_root",), str, "folder holding the dataset files"),
    "--members": (("members",), _int, "population size n (default 5)"),
    "--epochs": (("epochs",), _int, "epochs = generations (default 5)"),
    "--batch-size": (("batch_size",), _int, "default 64"),
    "--steps-per-epoch": (("steps_per_epoch",), _int, "cap the batches per epoch (default: a full pass)"),
    "--seed": (("seed",), _int, "default 0"),
    "--select-on": (("select_on",), str, "train | val (default val: same held-out images, no noise)"),
    "--device": (("device",), str, "auto | cpu | cuda"),
    "--pack-size": (("pack_size",), _pack_size, "members per worker process: auto (one pack per GPU or CPU node) | K"),
    "--timeout": (("member_timeout_s",), _float, "seconds a member may take for one epoch before it is dropped"),
    "--tau0": (("temperature", "tau0"), _float, "initial tau"),
    "--tau-min": (("temperature", "tau_min"), _float, "lower clip of tau"),
    "--tau-max": (("temperature", "tau_max"), _float, "upper clip of tau"),
    "--scale": (("temperature", "scale"), str, "paper (s(i)=i-1) | reference (s(i)=1)"),
    "--l-inc": (("temperature", "l_inc"), _float, "linear increase rate"),
    "--l-dec": (("temperature", "l_dec"), _float, "linear decrease rate"),
    "--r-inc": (("temperature", "r_inc"), _float, "exponential increase rate"),
    "--r-dec": (("temperature", "r_dec"), _float, "exponential decrease rate"),
    "--lr-tau": (("temperature", "lr_tau"), _float, "feedback learning rate"),
    "--patience": (("temperature", "patience"), _int, "feedback patience threshold"),
    "--feedback-sign": (("temperature", "feedback_sign"), _int, "+1 (paper) or -1"),
    "--anneal-rate": (("temperature", "anneal_rate"), _float, "baseline's tau decay per epoch"),
}
# Train flags (other than TRAIN_FLAGS) that set the config, and those a resume honours: every other one is an error there.
CONFIG_FLAGS = ("--config", "--exclude-classes", "--baseline", "--no-reset-patience", "--compare-baseline",
                "--reference-dynamics", "--no-broadcast")
RESUME_FLAGS = ("--epochs", "--quiet", "--verbose", "--address", "--num-cpus")


def _fail(message: str) -> int:
    print(f"popvae: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _cause(err: Exception) -> str:
    """The cause of a failure on the cluster in one line, not Ray's wrapped traceback."""
    cause = getattr(err, "cause", None)
    lines = [ln.strip() for ln in str(cause if isinstance(cause, Exception) else err).splitlines() if ln.strip()]
    raised = [ln for ln in lines if ln.split(":", 1)[0].endswith(("Error", "Exception")) and ":" in ln]
    return (raised or lines or [type(err).__name__])[-1]


def _stop_ray() -> bool:
    """Every Ray process this driver started is stopped (after a signal), by STOP_BUDGET_S after the signal (at least
    1 s); False when Ray's shutdown did not finish (its processes died with the process group, and it waits on them):
    the process must then end with `_exit_now`."""
    if "ray" not in sys.modules:
        return True
    import ray

    from popvae.population.deadline import within
    from popvae.population.runlock import stop_time_left

    return within(max(1.0, stop_time_left(STOP_BUDGET_S)), ray.shutdown)


def _exit_now(code: int) -> NoReturn:
    """End without Python's exit hooks: Ray's own would wait again on the processes its shutdown could not reach."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run_failed(err: Exception, run_dir: Path) -> int:
    """A run that stopped on the cluster: its cause in one line, exit 1."""
    print(f"popvae: run failed: {_cause(err)}", file=sys.stderr)
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
    p.add_argument("--reference-dynamics", action="store_true",
                   help="the authors' tau rates (s(i)=1, +0.5, -0.002, x1.03, x0.999, feedback 0.01 after 5, no upper clip); "
                        "the tau flags override single values")
    p.add_argument("--no-broadcast", action="store_true", help="ablation: members train independently, best picked at the end")
    p.add_argument(
        "--compare-baseline",
        action="store_true",
        help="then train the baseline on the same budget into RUN_DIR-baseline and compare",
    )
    _cluster_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--verbose", action="store_true", help="also show Ray's own start-up messages")


def train_config(args: argparse.Namespace) -> dict[str, Any]:
    data: dict[str, Any] = load_config_file(args.config) if args.config else {}
    if args.reference_dynamics:
        from popvae.population.temperature import REFERENCE_DYNAMICS

        data["temperature"] = {**REFERENCE_DYNAMICS, **(data.get("temperature") or {})}
    if args.no_broadcast:
        data["broadcast"] = False
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


def _flag_given(args: argparse.Namespace, flag: str) -> bool:
    value = getattr(args, flag.lstrip("-").replace("-", "_"))
    return value is not None and value is not False


def cmd_train(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.resume is None):
        return _fail("give exactly one of --run-dir (a new run) or --resume RUN_DIR")
    from popvae.population.runlock import as_interrupted, stop_on_signals

    stop_on_signals()
    try:
        return _train(args)
    except KeyboardInterrupt as stop:  # Interrupted, or what Ray's ray.get made of it
        return _interrupted(as_interrupted(stop), args.run_dir or args.resume)


def _interrupted(stop: Any, run_dir: Path) -> int:
    """One line: what the run kept and how to go on; every Ray process this driver started is stopped."""
    import json

    stopped = _stop_ray()
    try:
        done = json.loads((run_dir / "status.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        done = 0
    if done and (run_dir / "checkpoints" / "latest.pt").is_file():
        kept = f"{run_dir} keeps {done} epoch(s); continue with: popvae train --resume {run_dir}"
    else:
        kept = "no epoch finished; nothing to resume"
    print(f"popvae: interrupted by {stop}: {kept}", file=sys.stderr)
    if not stopped:
        _exit_now(stop.exit_code)
    return stop.exit_code


def _train(args: argparse.Namespace) -> int:
    try:
        from popvae.population.bounds import check_cluster_flags

        check_cluster_flags(args.address, args.num_cpus)
        if args.resume:
            ignored = [f for f in (*TRAIN_FLAGS, *CONFIG_FLAGS) if f not in RESUME_FLAGS and _flag_given(args, f)]
            if ignored:
                raise ConfigError(f"{ignored[0]} cannot be used with --resume: a resumed run keeps its config "
                                  f"(only {', '.join(RESUME_FLAGS)} apply)")
            from popvae.population import policy

            cfg, _ = policy.resume_config(args.resume, args.epochs)  # nothing left to train: said before Ray is imported
            from popvae.population import run as runs

            run = runs.Run(cfg, args.resume, runs.load_run_data(cfg), resume=True)
        else:
            from popvae.population import policy

            cfg = parse_config(train_config(args))
            policy.check_new_run_dir(args.run_dir)
            if args.compare_baseline:
                if cfg.baseline:
                    raise ConfigError("--compare-baseline trains the baseline after a population: not with a baseline run")
                policy.check_new_run_dir(policy.baseline_dir(args.run_dir))
            from popvae.population import run as runs

            run = runs.new_run(cfg, args.run_dir)
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    except OSError as err:  # e.g. a folder on the path that may not be listed
        return _fail(f"{err.filename or 'run folder'}: {err.strerror or err}")
    from ray.exceptions import RayError

    results, dirs = [], [run.run_dir]
    try:
        results.append(("population", _train_with_progress(run, args)))
        if args.compare_baseline:
            from popvae.population.policy import baseline_config, baseline_dir

            run = runs.new_run(baseline_config(run.cfg), baseline_dir(run.run_dir), run.data)
            dirs.append(run.run_dir)
            results.append(("baseline", _train_with_progress(run, args)))
            runs.draw_comparison(dirs[0], dirs[1])
    except ConfigError as err:  # the cluster cannot host the run, or the baseline's folder was taken meanwhile
        return _fail(str(err))
    except (RayError, RuntimeError) as err:  # RuntimeError: the coordinator kept dying (population.run)
        return _run_failed(err, run.run_dir)
    _print_results(results)
    from popvae.cluster.train_console import look_hints

    print("\n".join(look_hints(dirs)))
    return 0


def _train_with_progress(run: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run under the live console (stderr; --quiet: none), Tune-like: see cluster/train_console.py."""
    from popvae.cluster.train_console import TrainConsole, stderr_console
    from popvae.population.run import train_run

    cfg = run.cfg
    label = "baseline" if cfg.baseline else f"{cfg.members} members"
    first = 0
    if run.resume:
        import json

        try:
            first = int(json.loads((run.run_dir / "status.json").read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            first = 0
    with TrainConsole(stderr_console(args.quiet), run.run_dir, cfg.epochs, label, first) as live:
        return train_run(run, on_generation=live.on_generation, address=args.address, num_cpus=args.num_cpus,
                         verbose=args.verbose, on_scoring=live.on_scoring)


def _print_results(results: list[tuple[str, dict[str, Any]]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="test set (MSE per pixel on [0,1] of deterministic reconstructions)")
    for col in ("run", "best member", "tau", "test MSE", "test loss", "images"):
        table.add_column(col)
    for name, s in results:
        table.add_row(
            name,
            str(s["best_member"]),
            f"{s['best_tau']:.3f}",
            f"{s['test_mse']:.5f}",
            f"{s['test_loss']:.2f}" + (" (noisy)" if "with Gumbel noise" in s["evaluation"] else ""),
            str(s["test_images"]),
        )
    Console().print(table)


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="join this Ray cluster instead of starting one (or RAY_ADDRESS)")
    p.add_argument("--num-cpus", type=_int, help="CPUs for a Ray started here (default: all)")


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
    from popvae.population.plans import plan_robust

    try:
        plan = plan_robust(args.methods, args.run_dir, dataset=args.dataset, data_root=args.data_root, epochs=args.epochs,
                           batch_size=args.batch_size, steps_per_epoch=args.steps_per_epoch, seed=args.seed,
                           workers=args.workers)
        from popvae.models.data import load_split

        train, test = (load_split(args.dataset, split, args.data_root) for split in ("train", "test"))
    except (ValueError, DatasetError) as err:  # ConfigError and pydantic's ValidationError are ValueErrors
        return _fail(str(err).splitlines()[0])
    import ray

    from popvae.population import rundir
    from popvae.population.jobs import run_jobs
    from popvae.population.run import ensure_ray
    from popvae.population.runlock import RunLock

    lock = RunLock(args.run_dir)  # held until this process ends: jobs whose driver died read as interrupted
    try:
        lock.acquire()
    except ConfigError as err:
        return _fail(str(err))
    if not (args.run_dir / "config.json").exists():
        rundir.write_json(args.run_dir / "config.json", plan["config"])
    jobs = plan["jobs"]
    ensure_ray(args.address, args.num_cpus)
    workers = args.workers or max(1, min(len(jobs), int(ray.cluster_resources().get("CPU", 1))))
    print(f"{len(jobs)} jobs on {workers} workers; status in {args.run_dir / 'jobs'}/<method>/status.json", file=sys.stderr)
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
    from popvae.attacks.experiments import EXPERIMENTS

    p = sub.add_parser("evaluate", help="attack and evaluate a trained model (a run or job folder, or a checkpoint)")
    p.add_argument("target", type=Path, metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS), help=f"comma-separated from {', '.join(EXPERIMENTS)}")
    p.add_argument("--subset", type=int, help="evaluate on this many random test images (seeded) instead of all")
    p.add_argument("--dataset", help="default: the run's dataset, else fashion-mnist")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="reduced attack budgets for a CPU (stated in the report)")
    _cluster_flags(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from popvae import api

    try:
        evaluation = api.prepare_evaluation(args.target, experiments=args.experiments, subset=args.subset, dataset=args.dataset,
                                            data_root=args.data_root, seed=args.seed, quick=args.quick)
    except (ValueError, DatasetError, FileNotFoundError) as err:
        return _fail(str(err).splitlines()[0])
    try:
        report = api.run_evaluation(evaluation, address=args.address, num_cpus=args.num_cpus, progress=True)
    except RuntimeError as err:
        print(f"popvae: evaluation failed: {err}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    print(report.read_text())
    return 0


def _reproduce_parser(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="the papers' protocol and the ablations end to end, into one report")
    p.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "paper"),
                   help="budget: smoke (synthetic data, seconds), cpu (about an hour on 2 cores), paper (for GPUs)")
    p.add_argument("--dataset", help="default fashion-mnist (smoke: synthetic)")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--out", type=Path, help="folder of every run it trains (default runs/reproduction-DATASET-PRESET); "
                                            "the same command again continues an interrupted reproduction")
    p.add_argument("--report-dir", type=Path, help="where reproduction.md, .json and the plots go (default: --out)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished steps; train nothing")
    _cluster_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from popvae.population.reproduce import PRESETS, check_out_dir

    protocol = PRESETS[args.preset]
    try:
        if args.dataset:
            protocol = protocol.model_copy(update={"dataset": check_dataset_name(args.dataset)})
        out = args.out or Path("runs") / f"reproduction-{protocol.dataset}-{protocol.preset}"
        check_out_dir(out, protocol)
        from popvae.population.bounds import check_cluster_flags

        check_cluster_flags(args.address, args.num_cpus)
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    from popvae.population.reproduce import reproduce
    from popvae.population.runlock import as_interrupted, stop_on_signals

    stop_on_signals()
    again = f"popvae reproduce --preset {args.preset} --dataset {protocol.dataset} --out {out}"
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        report = reproduce(protocol, out, args.report_dir, data_root=args.data_root, address=args.address,
                           num_cpus=args.num_cpus, say=say, report_only=args.report_only)
    except KeyboardInterrupt as stop:
        stopped = _stop_ray()
        stop = as_interrupted(stop)
        print(f"popvae: interrupted by {stop}: finished steps are kept in {out}; continue with: {again}", file=sys.stderr)
        if not stopped:
            _exit_now(stop.exit_code)
        return stop.exit_code
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    except Exception as err:  # a run or job failed on the cluster
        print(f"popvae: reproduction failed: {_cause(err)}", file=sys.stderr)
        print(f"popvae: finished steps are kept in {out}; after a fix, continue with: {again}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


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
    if args.address or os.environ.get("RAY_ADDRESS"):
        from popvae.cluster.live_status import missing_ray_auth

        # Ray's client retries a refused token for a minute before it fails: say the likely cause once, up front
        if (missing := missing_ray_auth()) is not None:
            print(f"popvae serve: note: no Ray token in this environment; a cluster with token authentication (the "
                  f"Ray >= 2.59 default) will refuse the live view: {missing}", file=sys.stderr)
    serve(args.runs_root, args.host, args.port, args.address)
    return 0


def _status_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="print the population as a table, from the status service")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--run", help="run id (default: the most recently updated)")
    p.add_argument("--token", help="bearer token (default: $POPVAE_API_TOKEN)")
    p.add_argument("--watch", nargs="?", type=float, const=2.0, default=None, metavar="SECONDS",
                   help="redraw every SECONDS (default 2) until the run and its jobs end, or Ctrl-C")
    p.add_argument("--jobs", action="store_true", help="also list the run's robust and evaluation jobs")


def cmd_status(args: argparse.Namespace) -> int:
    from popvae.cluster.status_table import print_status

    if args.watch is not None and not args.watch > 0:
        raise SystemExit(f"popvae status: --watch needs a positive number of seconds, got {args.watch:g}")
    return print_status(args.url, args.run, args.token, watch=args.watch, jobs=args.jobs)


COMMANDS = {
    "train": (_train_parser, cmd_train),
    "robust": (_robust_parser, cmd_robust),
    "evaluate": (_evaluate_parser, cmd_evaluate),
    "reproduce": (_reproduce_parser, cmd_reproduce),
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
