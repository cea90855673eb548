"""The `popvae` command: parsing and dispatch. Bad input exits with code 2 and one line on stderr, before anything
is written; a failure on the cluster, or a cluster that does not answer, exits 1 with one line.

Arguments are read before torch or Ray is imported: `--help` and input that needs no data are answered at once.
The work is done by `population` (flags to config, run policies, job plans, runs, evaluations); the notebook API
(`popvae.api`) sits above this layer and calls the same functions, so this module never imports it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from popvae.models.dataset_names import DATASETS, DatasetError, check_dataset_name
from popvae.population.config import MAX_DURATION_S, ConfigError, parse_config
from popvae.population.flags import PACK_SIZE, TRAIN_FLAGS, check_resume_flags, flag_default, train_config
from popvae.population.methods import METHODS

EXIT_BAD_INPUT = 2
STOP_BUDGET_S = 8.0  # from a stop signal to the exit: population.driver's clean-up (at most 4 s), then Ray's shutdown


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


def _seconds(text: str) -> float:
    """A duration: more than 0 and at most MAX_DURATION_S seconds."""
    value = _float(text)
    if not 0 < value <= MAX_DURATION_S:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, {MAX_DURATION_S:g}], got {text!r}")
    return value


def _pack_size(text: str) -> str | int:
    """`auto` or a positive integer (members per worker process)."""
    if text == "auto":
        return text
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected auto or an integer >= 1, got {text!r}")
    return value


def _class_list(text: str) -> list[int]:
    """`--exclude-classes 0,5`."""
    try:
        return [_int(c) for c in text.split(",") if c.strip()]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected class numbers separated by commas, got {text!r}") from None


def _port(text: str) -> int:
    port = int(text) if text.isascii() and text.isdigit() else -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number in 1..65535, got {text!r}")
    return port


def _url(text: str) -> str:
    """The status service's address: http(s)://HOST[:PORT]."""
    from urllib.parse import SplitResult, urlsplit

    parts: SplitResult | None
    try:
        parts = urlsplit(text)
        _ = parts.port  # ValueError when it is out of range or no number
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected http://HOST[:PORT] or https://..., got {text!r}")
    return text


PARSERS: dict[Any, Any] = {int: _int, float: _float, str: str, PACK_SIZE: _pack_size}


def _fail(message: str) -> int:
    print(f"popvae: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _unreachable(err: Exception) -> int:
    """No cluster answered at a well-formed address (population.bounds.ClusterUnreachable): exit 1, nothing written."""
    print(f"popvae: error: {err}", file=sys.stderr)
    return 1


def _warn_on_head_loss(address: str | None, kept: Callable[[], str]) -> None:
    """Watch the head of the cluster at --address (population.bounds.watch_head): when it stops answering, one line of
    what the run keeps (`kept()`, read then) and how to go on, before Ray ends this command."""
    from popvae.population.bounds import ray_address, watch_head

    if (address := ray_address(address)) is None:  # a Ray started here goes down with this process, not before it
        return

    def warn(bound: float) -> None:
        hint = kept()
        hint += f" --address {address}" if "continue with: " in hint else ""
        print(f"popvae: the Ray cluster at {address} stopped answering; Ray ends this command unless its head is back "
              f"within {bound:g} s. {hint}", file=sys.stderr, flush=True)

    watch_head(address, warn)


def _interrupted(stop: Any, kept: str) -> int:
    """One line, what was kept and how to go on; every Ray process this driver started is stopped, by STOP_BUDGET_S
    after the signal (at least 1 s). When Ray's shutdown cannot finish (its processes died with the process group and
    it waits on them), the process ends at once, without Python's exit hooks: Ray's own would wait again."""
    stopped = True
    if "ray" in sys.modules:
        import ray

        from popvae.population.deadline import within
        from popvae.population.stop_signals import stop_time_left

        stopped = within(max(1.0, stop_time_left(STOP_BUDGET_S)), ray.shutdown)
    print(f"popvae: interrupted by {stop}: {kept}", file=sys.stderr)
    if not stopped:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.exit_code)
    return stop.exit_code


def _cluster_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="join this Ray cluster (HOST:PORT) instead of starting one (or RAY_ADDRESS); "
                                     "given up after $POPVAE_CONNECT_TIMEOUT_S seconds (default 30)")
    p.add_argument("--num-cpus", type=_int, help="CPUs for a Ray started here (default: all); not with --address")


def _train_parser(sub: Any) -> None:
    p = sub.add_parser("train", help="train a population of GS-VAEs (or the annealed baseline)")
    p.add_argument("--run-dir", type=Path, help="folder for this run (must be new or empty)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run at its next epoch")
    p.add_argument("--config", type=Path, help="JSON or YAML file of settings (at most 1 MB, no YAML aliases); flags override it")
    for flag, (path, typ, help_) in TRAIN_FLAGS.items():
        default = flag_default(path)
        shown = f"{default:.4g}" if isinstance(default, float) else default
        said = "default" in help_ or default is None
        p.add_argument(flag, type=PARSERS[typ], help=help_ if said else f"{help_} (default {shown})")
    p.add_argument("--exclude-classes", type=_class_list, help="e.g. 0,5: train without them")
    p.add_argument("--baseline", action="store_true", help="train the standard GS-VAE: one member, tau annealed")
    p.add_argument("--no-reset-patience", action="store_true", help="keep counting patience after a feedback step")
    p.add_argument("--reference-dynamics", action="store_true",
                   help="the authors' tau rates (s(i)=1, +0.5, -0.002, x1.03, x0.999, feedback 0.01 after 5, no upper clip); "
                        "the tau flags override single values")
    p.add_argument("--no-broadcast", action="store_true", help="ablation: members train independently, best picked at the end")
    p.add_argument("--compare-baseline", action="store_true",
                   help="then train the baseline on the same budget into RUN_DIR-baseline and compare")
    _cluster_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--verbose", action="store_true", help="also show Ray's own start-up messages")


def cmd_train(args: argparse.Namespace) -> int:
    if (args.run_dir is None) == (args.resume is None):
        return _fail("give exactly one of --run-dir (a new run) or --resume RUN_DIR")
    from popvae.population.preflight import ended_run_hint
    from popvae.population.stop_signals import as_interrupted, stop_on_signals

    stop_on_signals()
    try:
        return _train(args)
    except KeyboardInterrupt as stop:  # Interrupted, or what Ray's ray.get made of it
        return _interrupted(as_interrupted(stop), ended_run_hint(args.run_dir or args.resume))


def _train(args: argparse.Namespace) -> int:
    from popvae.population import preflight
    from popvae.population.bounds import ClusterUnreachable, check_cluster_flags, check_reachable

    try:
        check_cluster_flags(args.address, args.num_cpus)
        if args.resume:
            check_resume_flags(vars(args))
            from popvae.population import driver

            run = driver.resumed_run(args.resume, args.epochs)
        else:
            cfg = parse_config(train_config(vars(args)))
            preflight.check_new_run(cfg, args.run_dir, args.compare_baseline)  # said before torch and Ray are imported
            from popvae.population import driver

            run = driver.new_run(cfg, args.run_dir, compare_baseline=args.compare_baseline)
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    except OSError as err:  # e.g. a folder on the path that may not be listed
        return _fail(f"{err.filename or 'run folder'}: {err.strerror or err}")
    try:
        check_reachable(args.address)  # before the live console: a cluster that does not answer is one line
    except ClusterUnreachable as err:
        return _unreachable(err)
    from ray.exceptions import RayError

    from popvae.models.atomic import NoSpaceLeft

    current = [run]
    _warn_on_head_loss(args.address, lambda: preflight.ended_run_hint(current[0].run_dir))

    def train(one: Any) -> dict[str, Any]:
        current[0] = one
        return _train_with_progress(one, args)

    try:
        results = driver.train_with_baseline(run, train) if args.compare_baseline else [("population", train(run))]
    except ConfigError as err:  # the cluster cannot host the run, or the baseline's folder was taken meanwhile
        return _fail(str(err))
    except ClusterUnreachable as err:
        return _unreachable(err)
    except (RayError, RuntimeError, NoSpaceLeft) as err:  # RuntimeError: the coordinator kept dying (population.driver)
        print(f"popvae: run failed: {driver.failure_cause(err)}; {preflight.ended_run_hint(current[0].run_dir)}", file=sys.stderr)
        return 1
    from popvae.cluster.train_console import look_hints, print_results

    print_results(results)
    print("\n".join(look_hints([run.run_dir, *([preflight.baseline_dir(run.run_dir)] if args.compare_baseline else [])])))
    return 0


def _train_with_progress(run: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Train one run under the live console (stderr; --quiet: none), Tune-like: see cluster/train_console.py."""
    from popvae.cluster.train_console import TrainConsole, stderr_console
    from popvae.population.driver import train_run

    label = "baseline" if run.cfg.baseline else f"{run.cfg.members} members"
    with TrainConsole(stderr_console(args.quiet), run.run_dir, run.cfg.epochs, label, run.first_epoch) as live:
        return train_run(run, on_generation=live.on_generation, address=args.address, num_cpus=args.num_cpus,
                         verbose=args.verbose, on_scoring=live.on_scoring, on_progress=live.on_progress)


def _robust_parser(sub: Any) -> None:
    p = sub.add_parser("robust", help="train robust autoencoders as jobs on the worker pool")
    p.add_argument("--methods", help=f"comma-separated, from {', '.join(METHODS)}")
    p.add_argument("--preset", choices=("paper", "smoke"),
                   help="instead of --methods: every method at its paper's settings and budget (or to a plateau), "
                        "seeds, attacks and the report beside the papers (smoke: synthetic data, about a minute); the same "
                        "command again continues")
    p.add_argument("--dataset", help="one of " + ", ".join(DATASETS) + " (default fashion-mnist; the smoke preset: synthetic)")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--epochs", type=_int, help="epochs per job, default 5 (a preset sets its own)")
    p.add_argument("--batch-size", type=_int, help="images per step, default 128 (a preset sets its own)")
    p.add_argument("--steps-per-epoch", type=_int, help="cap the batches per epoch (default: a full pass)")
    p.add_argument("--seed", type=_int, help="seeds weights, batches and noise, default 0 (a preset sets its own seeds)")
    p.add_argument("--run-dir", type=Path, required=True, help="jobs go to RUN_DIR/jobs/<method>/ (a preset's: <method>-s<seed>)")
    p.add_argument("--report-dir", type=Path, help="a preset's robust-converged.md, .json and plot (default: RUN_DIR)")
    p.add_argument("--carry", action="store_true", help="with --preset: take the jobs that the report in --report-dir "
                   "(same preset and settings) holds finished instead of training them again")
    p.add_argument("--report-only", action="store_true", help="a preset's report from what is finished; train nothing")
    p.add_argument("--workers", type=_int, help="jobs running at once (default: one per method, at most the CPUs)")
    p.add_argument("--precision", default="auto",
                   help="auto | fp32 | bf16 (auto: bf16 on a GPU with it or a CPU with AMX or AVX512-BF16, else fp32)")
    _cluster_flags(p)


def cmd_robust(args: argparse.Namespace) -> int:
    from popvae.population.bounds import ClusterUnreachable, check_cluster_flags
    from popvae.population.plans import plan_robust

    if args.preset:
        return _robust_preset(args)
    if not args.methods:
        return _fail("give --methods, or --preset paper for every method at its paper's settings")
    if args.report_dir or args.report_only or args.carry:
        return _fail("--report-dir, --report-only and --carry go with --preset")
    try:
        check_cluster_flags(args.address, args.num_cpus)
        plan = plan_robust(args.methods, args.run_dir, dataset=args.dataset or "fashion-mnist", data_root=args.data_root,
                           epochs=5 if args.epochs is None else args.epochs,
                           batch_size=128 if args.batch_size is None else args.batch_size,
                           steps_per_epoch=args.steps_per_epoch, seed=args.seed or 0,
                           workers=args.workers, precision=args.precision)
        from popvae.models.dataset_loading import load_split

        train, test = (load_split(plan["config"]["dataset"], split, args.data_root) for split in ("train", "test"))
    except (ValueError, DatasetError) as err:  # ConfigError and pydantic's ValidationError are ValueErrors
        return _fail(str(err).splitlines()[0])
    from popvae.cluster.train_console import print_job_table
    from popvae.population.jobs import run_robust

    def say(line: str) -> None:
        print(line, file=sys.stderr)

    try:
        results = run_robust(plan, train, test, workers=args.workers, address=args.address, num_cpus=args.num_cpus,
                             say=say, on_done=lambda job, r: say(f"{job['id']}: {r['state']}"))
    except ConfigError as err:  # the folder is in use by another process
        return _fail(str(err))
    except ClusterUnreachable as err:
        return _unreachable(err)
    print_job_table(results)
    return 0 if all(r["state"] == "done" for r in results.values()) else 1


def _robust_preset(args: argparse.Namespace) -> int:
    """`popvae robust --preset`: the section of `population.robust_converged`, continued when run again."""
    from popvae.population.bounds import ClusterUnreachable, check_cluster_flags, check_reachable
    from popvae.population.config import PRECISIONS, validated
    from popvae.population.plans import JobSettings
    from popvae.population.robust_converged import PRESETS, check_out

    given = [f"--{name.replace('_', '-')}" for name in ("methods", "epochs", "batch_size", "steps_per_epoch", "seed")
             if getattr(args, name) is not None]
    if given:
        return _fail(f"{', '.join(given)} cannot go with --preset (the preset sets them)")
    section = PRESETS[args.preset]
    try:
        if args.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {args.precision!r}")
        section = section.model_copy(update={"dataset": check_dataset_name(args.dataset or section.dataset),
                                             "precision": args.precision})
        validated(JobSettings, {"workers": args.workers}, flags=True)
        if args.carry and args.report_dir is None:
            raise ConfigError("--carry takes the finished jobs of the report in --report-dir: give --report-dir")
        check_out(args.run_dir, section)
        check_cluster_flags(args.address, args.num_cpus)
        check_reachable(args.address)  # before --run-dir is written
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    except ClusterUnreachable as err:
        return _unreachable(err)
    from popvae.population.robust_converged import run_section
    from popvae.population.stop_signals import as_interrupted, stop_on_signals

    stop_on_signals()
    again = f"popvae robust --preset {args.preset} --dataset {section.dataset} --run-dir {args.run_dir}"
    _warn_on_head_loss(args.address, lambda: f"finished epochs are kept in {args.run_dir}; continue with: {again}")
    try:
        report = run_section(section, args.run_dir, args.report_dir, data_root=args.data_root, address=args.address,
                             num_cpus=args.num_cpus, workers=args.workers, report_only=args.report_only, carry=args.carry,
                             say=lambda line: print(line, file=sys.stderr, flush=True))
    except KeyboardInterrupt as stop:
        return _interrupted(as_interrupted(stop), f"finished epochs are kept in {args.run_dir}; continue with: {again}")
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    except ClusterUnreachable as err:
        return _unreachable(err)
    print(f"report: {report}")
    return 0


def _evaluate_parser(sub: Any) -> None:
    from popvae.attacks.experiments import EXPERIMENTS

    p = sub.add_parser("evaluate", help="attack and evaluate a trained model (a run or job folder, or a checkpoint)",
                       description="Attack and evaluate a trained model; the report (report.md, report.json, PNGs) goes "
                                   "to its own folder, RUN/jobs/evaluation-TIME/. The first evaluation on a dataset fits "
                                   "the purification CNN once (5 epochs over the training set: minutes on a CPU, with "
                                   "progress and an ETA) and caches it under $POPVAE_CACHE, else ~/.cache/popvae; later "
                                   "evaluations load it.")
    p.add_argument("target", type=Path, metavar="RUN_OR_CHECKPOINT")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS), help=f"comma-separated from {', '.join(EXPERIMENTS)} "
                                                                        "(default: all)")
    p.add_argument("--subset", type=_int, help="evaluate on this many random test images (seeded) instead of all")
    p.add_argument("--dataset", help="default: the run's dataset, else fashion-mnist")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--seed", type=_int, default=0, help="seeds the subset, the attacks and the classifiers")
    p.add_argument("--quick", action="store_true", help="reduced attack budgets for a CPU (stated in the report)")
    p.add_argument("--fid-weights", type=Path, metavar="FILE", help="pt_inception-2015-12-05 weights: adds the real FID")
    p.add_argument("--lpips-weights", type=Path, metavar="FILE",
                   help="torchvision's alexnet-owt-7be5be79.pth: adds LPIPS to latent-pgd")
    _cluster_flags(p)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from popvae.population.bounds import ClusterUnreachable, check_cluster_flags

    try:
        check_cluster_flags(args.address, args.num_cpus)
        from popvae.population.evaluation import prepare_evaluation, run_evaluation

        evaluation = prepare_evaluation(args.target, experiments=args.experiments, subset=args.subset, dataset=args.dataset,
                                        data_root=args.data_root, seed=args.seed, quick=args.quick,
                                        fid_weights=args.fid_weights, lpips_weights=args.lpips_weights)
    except (ValueError, DatasetError, FileNotFoundError) as err:
        return _fail(str(err).splitlines()[0])
    from popvae.models.atomic import NoSpaceLeft

    try:
        report = run_evaluation(evaluation, address=args.address, num_cpus=args.num_cpus, progress=True)
    except ConfigError as err:  # the folder is in use by another process
        return _fail(str(err))
    except ClusterUnreachable as err:
        return _unreachable(err)
    except (RuntimeError, NoSpaceLeft) as err:
        print(f"popvae: evaluation failed: {err}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    print(report.read_text())
    return 0


def _reproduce_parser(sub: Any) -> None:
    p = sub.add_parser("reproduce", help="the papers' protocol and the ablations end to end, into one report")
    p.add_argument("--preset", default="cpu", choices=("smoke", "cpu", "cpu-long", "paper"),
                   help="budget: smoke (synthetic data, minutes), cpu (73 min with one seed on 2 cores), cpu-long (the "
                        "core arms to 10 full epochs: many hours, continued across sessions), paper (for GPUs)")
    p.add_argument("--seeds", type=_int, metavar="K",
                   help="training seeds of the population and the annealed baseline, each its own run (default: the "
                        "preset's: smoke 2, cpu 3, cpu-long 3, paper 1); the other core arms take at most as many")
    p.add_argument("--epochs", type=_int, metavar="N",
                   help="generations (epochs) of every GS-VAE run (default: the preset's: smoke 2, cpu 20, cpu-long 10, "
                        "paper 100), e.g. what a GPU's time allows of the paper's 100; the report states it")
    p.add_argument("--only", metavar="STEP[,STEP...]",
                   help="run only these steps (population-reference,baseline: Table 1; evaluation:RUN: the attacks on "
                        "RUN); the report names the rest as not yet run, and a later command without --only continues "
                        "with them")
    p.add_argument("--dataset", help="default fashion-mnist (smoke: synthetic)")
    p.add_argument("--data-root", help="folder holding the dataset files")
    p.add_argument("--out", type=Path, help="folder of every run it trains (default runs/reproduction-DATASET-PRESET); "
                                            "the same command again continues an interrupted reproduction")
    p.add_argument("--report-dir", type=Path, help="where reproduction.md, .json, the plots and each run's per-image "
                   "scores go (default: --out)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the finished steps; train nothing")
    p.add_argument("--carry", action="store_true", help="take the steps that the report in --report-dir (same preset "
                   "and settings) holds finished instead of running them again, e.g. on a machine that lost --out")
    _cluster_flags(p)
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from popvae.population.bounds import ClusterUnreachable, check_cluster_flags, check_reachable
    from popvae.population.reproduce import PRESETS, check_only, check_out_dir, with_epochs, with_seeds

    protocol, only = PRESETS[args.preset], None
    try:
        if args.dataset:
            protocol = protocol.model_copy(update={"dataset": check_dataset_name(args.dataset)})
        if args.seeds is not None:
            protocol = with_seeds(protocol, args.seeds)
        if args.epochs is not None:
            protocol = with_epochs(protocol, args.epochs)
        if args.only is not None:
            only = check_only(protocol, args.only)
        out = args.out or Path("runs") / f"reproduction-{protocol.dataset}-{protocol.preset}"
        if args.carry and args.report_dir is None:
            raise ConfigError("--carry takes the finished steps of the report in --report-dir: give --report-dir")
        check_out_dir(out, protocol)
        check_cluster_flags(args.address, args.num_cpus)
        check_reachable(args.address)  # before --out is written
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    except ClusterUnreachable as err:
        return _unreachable(err)
    from popvae.population.reproduce import again_command, reproduce
    from popvae.population.stop_signals import as_interrupted, stop_on_signals

    stop_on_signals()
    again = again_command(protocol, out, args.report_dir, only)
    _warn_on_head_loss(args.address, lambda: f"finished steps are kept in {out}; continue with: {again}")
    say = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    try:
        report = reproduce(protocol, out, args.report_dir, data_root=args.data_root, address=args.address,
                           num_cpus=args.num_cpus, say=say, report_only=args.report_only, carry=args.carry, only=only)
    except KeyboardInterrupt as stop:
        return _interrupted(as_interrupted(stop), f"finished steps are kept in {out}; continue with: {again}")
    except (ConfigError, DatasetError) as err:
        return _fail(str(err))
    except ClusterUnreachable as err:
        return _unreachable(err)
    except Exception as err:  # a run or job failed on the cluster
        from popvae.population.driver import failure_cause

        print(f"popvae: reproduction failed: {failure_cause(err)}; finished steps are kept in {out}; after a fix, "
              f"continue with: {again}", file=sys.stderr)
        return 1
    print(f"report: {report}")
    return 0


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="the read-only REST status service")
    p.add_argument("--runs-root", type=Path, default=Path("runs"), help="folder whose subfolders are runs")
    p.add_argument("--host", default="127.0.0.1", help="bind address (non-loopback needs $POPVAE_API_TOKEN)")
    p.add_argument("--port", type=_port, default=8000, help="port to listen on")
    p.add_argument("--address", help="Ray cluster to find live coordinators in (or RAY_ADDRESS)")


def cmd_serve(args: argparse.Namespace) -> int:
    from popvae.cluster.service import check_serve, serve
    from popvae.population.bounds import ClusterRefused, check_cluster_flags, check_ray_auth, ray_address

    try:
        check_cluster_flags(args.address, None)
        check_serve(args.runs_root, args.host, args.port)
        if (address := ray_address(args.address)) is not None:
            check_ray_auth(address)  # a cluster that is not up yet is the live view's to retry; a refused token is said now
    except ConfigError as err:
        return _fail(str(err))
    except ClusterRefused as err:
        return _unreachable(err)
    serve(args.runs_root, args.host, args.port, args.address)
    return 0


def _status_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="print the population as a table, from the status service")
    p.add_argument("--url", type=_url, default="http://127.0.0.1:8000", help="the status service (popvae serve)")
    p.add_argument("--run", help="run id (default: the most recently updated)")
    p.add_argument("--token", help="bearer token (default: $POPVAE_API_TOKEN)")
    p.add_argument("--watch", nargs="?", type=_seconds, const=2.0, default=None, metavar="SECONDS",
                   help="redraw every SECONDS (default 2) until the run and its jobs end, or Ctrl-C")
    p.add_argument("--jobs", action="store_true", help="also list the run's robust and evaluation jobs")


def cmd_status(args: argparse.Namespace) -> int:
    from popvae.cluster.status_table import print_status

    return print_status(args.url, args.run, args.token, watch=args.watch, jobs=args.jobs)


COMMANDS = {
    "train": (_train_parser, cmd_train),
    "robust": (_robust_parser, cmd_robust),
    "evaluate": (_evaluate_parser, cmd_evaluate),
    "reproduce": (_reproduce_parser, cmd_reproduce),
    "serve": (_serve_parser, cmd_serve),
    "status": (_status_parser, cmd_status),
}


class _Help(argparse.HelpFormatter):
    """Every option that has a default says it (argparse's own formatter would also print "default: None")."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and "default" not in text and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2) rather than the whole usage text; defaults in --help."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


DESCRIPTION = ("Population training of Gumbel-Softmax VAEs, robust autoencoders and their adversarial evaluation, on Ray. "
               "Bad input is refused before anything is written, in one line with exit code 2.")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("popvae")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="popvae", description=DESCRIPTION,
                     epilog="popvae COMMAND --help says more; the README and docs/ARCHITECTURE.md say everything.")
    parser.add_argument("--version", action="version", version=f"popvae {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    args = parser.parse_args(argv)
    return COMMANDS[args.command][1](args)


if __name__ == "__main__":
    sys.exit(main())
