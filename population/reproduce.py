"""`popvae reproduce`: the papers' protocol end to end, with the ablations no paper ran, into one folder.

Every training it starts is a normal run folder (OUT/runs/<step>) or robust job (OUT/robust/jobs/<method>), every
attack an evaluation report (OUT/evaluations/<step>); a step whose result is on disk is never redone, a population
run that was interrupted is resumed from its checkpoint, so running the same command again continues. The report
(`population.repro_report`) is rewritten from whatever is finished after a step (at most once a minute, so that short
steps do not wait on its plots) and whenever the command ends, finished, stopped or failed. The report also carries
the results on: a new OUT given an earlier report of the same protocol as --report-dir takes its finished steps from
it (`carry_in`, asked for with `--carry`) instead of training them again.

The core arms (`CORE`: the population with the authors' dynamics, the annealed baseline, the baseline with n x the
steps, the fixed-tau grid's best, the winning schedule alone, popvae's defaults) run once per training seed, each
seed its own run folder (`seeded`); the report gives their mean with a t-interval over seeds.

Presets fix the budget: `smoke` (synthetic data, minutes: the tests), `cpu` (Fashion-MNIST on a 2-core machine: 73 min
with one seed), `cpu-long` (the core arms only, 10 full epochs, meant to run across sessions), `paper` (the
papers' budgets, for GPUs).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from popvae.models.atomic import atomic_write
from popvae.population import folder_io
from popvae.population.config import ConfigError, StopConfig
from popvae.population.paper_numbers import FGSM_EPS, PGD_EPS
from popvae.population.run_folder import RunFolder
from popvae.population.temperature import REFERENCE_DYNAMICS

PAPER_EPS = tuple(sorted(set(FGSM_EPS + PGD_EPS) - {0.0}))  # both attacks on every eps either table reports
# Robust-AE methods the report compares: Robust GMM-DAE Table 1 (VAE, GMM-DAE, Robust GMM-DAE), Lu & Chen's VAE/DAE
# twins with and without latent adversarial training, RAVEN against the plain VAE.
ROBUST_METHODS = ("vae-kl", "gmm-dae", "robust-gmm-dae", "vae-mmd", "dae-mmd", "vae-swt", "dae-swt", "vae-kl-lat",
                  "dae-mmd-lat", "raven")
HEADLINE = "population-reference"  # the run every ablation is compared with
# The arms that run once per seed: `Protocol.seeds` of the first two, `Protocol.other_seeds` of the rest.
CORE = ("population-reference", "baseline", "population-defaults", "baseline-equal-compute", "fixed-tau-grid",
        "winning-schedule-alone")
MOST_SEEDED = CORE[:2]
ABLATIONS = ("population-reference", "population-defaults", "winning-schedule-alone", "fixed-tau-grid", "no-broadcast",
             "no-feedback", "baseline", "baseline-equal-compute")
MAX_SEEDS = 20
MAX_EPOCHS = 100_000


class Protocol(BaseModel):
    """One preset's budget: everything that decides what the reproduction trains and attacks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str
    dataset: str = "fashion-mnist"
    synthetic_size: int = 512
    members: int = 8  # n of every population (the papers' n)
    generations: int  # epochs = generations of every GS-VAE run
    steps: int | None  # optimizer steps per member and generation (None: one pass over the training split)
    batch_size: int
    sizes: tuple[int, ...] = (1, 2, 4, 8)  # Figure 4's n
    held_out: tuple[int, ...] = (2, 3)  # Figure 7: classes the unseen-class runs never see
    eval_subset: int | None  # test images the attacks use (None: all)
    eval_settings: dict[str, dict[str, Any]]  # keyword arguments per experiment (`attacks.report.evaluate`)
    robust_methods: tuple[str, ...] = ROBUST_METHODS
    robust_epochs: int
    robust_steps: int | None
    robust_batch: int = 128
    seed: int = 0  # the first training seed; seed k of an arm is seed + k
    seeds: int = Field(1, ge=1, le=MAX_SEEDS)  # training seeds of the population and the annealed baseline
    other_seeds: int | None = Field(None, ge=1)  # training seeds of the other core arms (None: `seeds`)
    extras: bool = True  # also the ablations outside `CORE`, Figures 4 and 7, the attacks and the robust autoencoders
    grid: tuple[float, float] = (0.25, 16.0)  # the fixed-tau grid's ends: n taus, geometric between them
    stop: StopConfig | None = None  # every GS-VAE run's plateau stopper (RunConfig.stop); None: every epoch
    pack_size: Literal["auto"] | int = "auto"  # every GS-VAE run's RunConfig.pack_size

    def seeds_of(self, arm: str) -> list[int]:
        """The training seeds an arm runs with (the ablations outside `CORE`: the first only)."""
        k = self.seeds if arm in MOST_SEEDED else min(self.seeds, self.other_seeds or self.seeds) if arm in CORE else 1
        return [self.seed + i for i in range(k)]

    def grid_taus(self) -> list[float]:
        """The fixed-tau grid: `members` taus, geometric from grid[0] to grid[1]."""
        low, high = self.grid
        n = self.members
        return [low * (high / low) ** (i / (n - 1)) for i in range(n)] if n > 1 else [low]


PRESETS: dict[str, Protocol] = {
    "smoke": Protocol(
        preset="smoke", dataset="synthetic", synthetic_size=128, members=4, generations=2, steps=2, batch_size=16,
        sizes=(4,), held_out=(0,), eval_subset=16,  # Figure 4: the headline alone (a run fewer)
        eval_settings={"purification": {"eps_grid": (0.1, 0.3), "pgd_steps": 2, "eot_samples": 1},
                       "latent": {"n_images": 4, "trials": 1, "steps": 2}, "max-damage": {"n_images": 4, "trials": 1, "steps": 2},
                       "latent-pgd": {"eps_grid": (0.0, 1.0), "steps": 2}, "patches": {"sizes": (4,)}},
        robust_methods=("vae-kl", "robust-gmm-dae"), robust_epochs=1, robust_steps=2, robust_batch=16,
        seeds=2, other_seeds=1,  # two seeds where the headline's interval over seeds needs them, one elsewhere
        stop=StopConfig(plateau_generations=2, min_delta=0.0),  # the stopper's path (2 generations: the budget ends first)
        pack_size=4,  # one worker per run: runs of seconds are start-up bound, and each worker process imports torch
    ),
    "cpu": Protocol(
        preset="cpu", generations=20, steps=30, batch_size=64, eval_subset=500,
        eval_settings={"purification": {"eps_grid": PAPER_EPS, "pgd_steps": 10, "eot_samples": 2},
                       "latent": {"n_images": 50, "trials": 4, "steps": 20},
                       "max-damage": {"n_images": 50, "trials": 4, "steps": 20},
                       "latent-pgd": {"eps_grid": (0.0, 0.5, 1.0, 2.0, 3.0), "steps": 15}},
        robust_epochs=3, robust_steps=100, seeds=3,
    ),
    # The core arms to 10 full passes (421 steps of batch 128 per member and epoch on Fashion-MNIST), 3 seeds of the
    # population and the baseline, 1 of the rest: 10 runs, 218,920 member-steps (population, defaults, grid and
    # equal-compute baseline 33,680 each per seed; baseline and winning schedule 4,210). At the CPU defaults (bf16
    # looped packs, one per core) a generation of 8 members x 20 steps of batch 128 took 13.7 s on both idle cores
    # (benchmarks/generation_speed.py, learning curve included): 0.086 s of the machine per member-step, so about
    # 218,920 x 0.086 = 18,800 s, about 5.2 h, less what the plateau stopper saves (in fp32 vmap packs, 33.4 s a
    # generation: 12.7 h). Several sessions, each continuing with the same command; slower when shared.
    "cpu-long": Protocol(
        preset="cpu-long", generations=10, steps=None, batch_size=128, eval_subset=None, eval_settings={},
        robust_epochs=1, robust_steps=None, seeds=3, other_seeds=1, extras=False,
        stop=StopConfig(plateau_generations=3, min_delta=0.001),  # 3 generations without a 0.1 % better best: converged
    ),
    "paper": Protocol(
        preset="paper", generations=100, steps=None, batch_size=128, eval_subset=None,
        eval_settings={"purification": {"eps_grid": PAPER_EPS}}, robust_epochs=30, robust_steps=None,
    ),
}


class Step(BaseModel):
    """One unit of the protocol: a GS-VAE run, an evaluation of one, or the robust-AE jobs."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: str  # "run" | "evaluation" | "robust"
    what: str  # one line for the report
    config: dict[str, Any] = {}  # run: the RunConfig; evaluation: experiments, target, held_out


def _run(p: Protocol, **changes: Any) -> dict[str, Any]:
    base = {"dataset": p.dataset, "synthetic_size": p.synthetic_size, "epochs": p.generations, "steps_per_epoch": p.steps,
            "batch_size": p.batch_size, "seed": p.seed, "checkpoint_every": max(1, p.generations // 10),
            "pack_size": p.pack_size}
    return base | ({"stop": p.stop.model_dump()} if p.stop else {}) | changes


def _reference(p: Protocol, **changes: Any) -> dict[str, Any]:
    """The paper's population: n members, the authors' dynamics, selection on the epoch's training loss."""
    return _run(p, members=p.members, select_on="train", temperature=dict(REFERENCE_DYNAMICS)) | changes


def seeded(arm: str, seed: int, p: Protocol) -> str:
    """The run folder name of an arm's seed: the arm's own name for the first seed, `ARM-seedS` for the others."""
    return arm if seed == p.seed else f"{arm}-seed{seed}"


def _core(p: Protocol, arm: str, seed: int, per_generation: int, winner: int | None) -> Step | None:
    """One core arm at one seed (None: the winning schedule before its seed's reference population is done)."""
    n = p.members
    baseline = {"baseline": True, "members": 1, "seed": seed}
    arms = {
        "population-reference": lambda: (_reference(p, seed=seed),
                                         f"population, n = {n}, the authors' dynamics (docs/ALGORITHMS.md §3), selection "
                                         "on training loss"),
        "baseline": lambda: (_run(p, **baseline), "standard GS-VAE: one member, tau annealed"),
        "population-defaults": lambda: (_run(p, members=n, seed=seed),
                                        f"population, n = {n}, popvae's defaults (tau clipped to [0.1, 2], selection on "
                                        "validation loss)"),
        "baseline-equal-compute": lambda: (_run(p, **baseline, steps_per_epoch=n * per_generation),
                                           f"the baseline given {n}x the steps per epoch (the population's compute)"),
        "fixed-tau-grid": lambda: (_run(p, members=n, seed=seed, broadcast=False, fixed_taus=p.grid_taus(),
                                        temperature={"tau_min": min(0.1, p.grid[0]), "tau_max": p.grid[1]}),
                                   f"{n} single members at fixed taus {p.grid[0]:g} to {p.grid[1]:g} (geometric), trained "
                                   "independently; the best on validation loss (random search at equal compute)"),
        "winning-schedule-alone": lambda: (_run(p, members=1, seed=seed, select_on="train", schedule_of=winner,
                                                temperature=dict(REFERENCE_DYNAMICS)),
                                           f"member {winner}'s schedule (the reference population's most frequent winner "
                                           "at this seed), trained alone"),
    }
    if arm == "winning-schedule-alone" and winner is None:
        return None
    config, what = arms[arm]()
    return Step(name=seeded(arm, seed, p), kind="run", config=config, what=what + ("" if seed == p.seed else f"; seed {seed}"))


def steps_of(p: Protocol, steps_per_pass: int, winners: dict[int, int | None]) -> list[Step]:
    """Every step, in the order they run: the headline comparison first, then the other core arms, their further
    seeds, and the extras. `steps_per_pass`: a full pass's optimizer steps (for the equal-compute baseline when the
    preset trains full passes); `winners`: per seed, the member whose schedule won most generations of that seed's
    reference population (missing or None until that run is done: its winning-schedule step is left out until then)."""
    per_generation = p.steps or steps_per_pass

    def core(arms: tuple[str, ...], first: bool) -> list[Step]:  # the first seed, or every further seed in turn
        seeds = [p.seed] if first else sorted({s for arm in arms for s in p.seeds_of(arm)} - {p.seed})
        found = [_core(p, arm, seed, per_generation, winners.get(seed)) for seed in seeds for arm in arms
                 if seed in p.seeds_of(arm)]
        return [step for step in found if step is not None]

    steps = core(MOST_SEEDED, first=True)
    if p.extras:
        steps += [Step(name=name, kind="evaluation", config={"experiments": ["purification", "patches"]},
                       what=f"Tables 2-3 and Figure 9 on the {label}") for name, label in ((HEADLINE, "population"),
                                                                                          ("baseline", "baseline"))]
    steps += core(CORE[2:], first=True)
    steps += core(CORE, first=False)  # the seeds that put an interval on the core arms before one-seed ablations
    if p.extras:
        steps += [
            Step(name="no-broadcast", kind="run", config=_reference(p, broadcast=False),
                 what="the reference population without the broadcast: members independent, best picked at the end"),
            Step(name="no-feedback", kind="run", config=_reference(p, temperature=REFERENCE_DYNAMICS | {"lr_tau": 0.0}),
                 what="the reference population without feedback (lr_tau = 0)"),
        ]
    if not p.extras:
        return steps
    steps += [Step(name=f"population-n{n}", kind="run", config=_reference(p, members=n),
                   what=f"Figure 4: the reference population with n = {n}") for n in p.sizes if n != p.members]
    held = list(p.held_out)
    baseline = {"baseline": True, "members": 1}
    steps += [
        Step(name="unseen-population", kind="run", config=_reference(p, exclude_classes=held),
             what=f"Figure 7: the reference population trained without classes {held}"),
        Step(name="unseen-baseline", kind="run", config=_run(p, **baseline, exclude_classes=held),
             what=f"Figure 7: the baseline trained without classes {held}"),
        Step(name="unseen-population", kind="evaluation", config={"experiments": ["unseen"], "held_out": held},
             what="Figure 7 on the population"),
        Step(name="unseen-baseline", kind="evaluation", config={"experiments": ["unseen"], "held_out": held},
             what="Figure 7 on the baseline"),
        Step(name="robust", kind="robust", config={"methods": list(p.robust_methods)},
             what="the robust autoencoders, trained as jobs on the worker pool"),
    ]
    steps += [Step(name=f"robust-{m}", kind="evaluation", config={"experiments": ["latent", "max-damage", "latent-pgd"],
                                                                  "target": f"robust/jobs/{m}"},
                   what=f"latent, maximum-damage and latent PGD attacks on {m}") for m in p.robust_methods]
    return steps


def planned(p: Protocol, steps_per_pass: int) -> int:
    """How many steps the protocol has in all, the winning schedules included before their winners are known."""
    return len(steps_of(p, steps_per_pass, {seed: 1 for seed in p.seeds_of(HEADLINE)}))


# --- where each step leaves its result ---
def run_dir(out: Path, name: str) -> Path:
    return out / "runs" / name


def run_done(folder: Path) -> bool:
    """A run whose status says done and whose summary.json is there."""
    run = RunFolder(folder)
    return run.recorded_state() == "done" and run.summary_path.is_file()


def evaluation_dir(out: Path, name: str) -> Path:
    return out / "evaluations" / name


def robust_job_dir(out: Path, method: str) -> Path:
    return RunFolder(out / "robust").job(method).path


def robust_done(out: Path, method: str) -> bool:
    """A robust job whose status says done and whose model.pt is there, or one carried from an earlier report."""
    job = RunFolder(robust_job_dir(out, method))
    return (job.recorded_state() == "done" and job.model_path.is_file()) or carried_path(out, "robust", method).is_file()


def carried_path(out: Path, kind: Literal["runs", "robust"], name: str) -> Path:
    """Where `carry_in` left a finished run's facts (or a robust job's metrics) taken from an earlier report, in place
    of a run folder that was lost."""
    return out / "carried" / kind / f"{name}.json"


def carried(out: Path, kind: Literal["runs", "robust"], name: str) -> dict[str, Any] | None:
    path = carried_path(out, kind, name)
    return folder_io.read_json(path) if path.is_file() else None


def run_finished(out: Path, name: str) -> bool:
    """A run done in OUT, or carried into it from an earlier report."""
    return run_done(run_dir(out, name)) or carried_path(out, "runs", name).is_file()


def step_done(out: Path, step: Step) -> bool:
    if step.kind == "run":
        return run_finished(out, step.name)
    if step.kind == "evaluation":
        return (evaluation_dir(out, step.name) / "report.json").is_file()
    return all(robust_done(out, m) for m in step.config["methods"])


def generation_wins(folder: Path) -> dict[int, int]:
    """How many generations each member won, from a run's lineage."""
    wins: dict[int, int] = {}
    for generation in RunFolder(folder).read_lineage():
        wins[generation.best] = wins.get(generation.best, 0) + 1
    return wins


def winning_member(out: Path, name: str) -> int | None:
    """The member that was best in the most generations of a finished run, in OUT or carried (ties: the lower index)."""
    if (facts := carried(out, "runs", name)) is not None:
        wins = {int(k): v for k, v in facts["wins"].items()}
    elif run_done(run_dir(out, name)):
        wins = generation_wins(run_dir(out, name))
    else:
        return None
    return min(wins, key=lambda i: (-wins[i], i))


def earlier_report(out: Path, protocol: Protocol, report_dir: Path) -> dict[str, Any] | None:
    """The facts of the report in `report_dir` when it is another folder's and of this same protocol, else None."""
    path = report_dir / "reproduction.json"
    if report_dir == out or not path.is_file():
        return None
    facts = folder_io.read_json(path)
    return facts if facts.get("protocol") == protocol.model_dump(mode="json") else None


def carry_in(out: Path, protocol: Protocol, report_dir: Path, steps: list[Step]) -> list[str]:
    """Restore into OUT what an earlier report of this same protocol in `report_dir` holds and OUT lacks: finished runs
    (their facts, and their per-image scores from REPORT/scores/), robust jobs' metrics, and the evaluation reports of
    both. The report is what survives when the run folder does not (a scratch disk lost, a new machine), so a committed
    report continues there. A run or robust job whose attacks the protocol asks for and the report lacks is not carried:
    its model is gone, so it trains again. Returns the names carried."""
    facts = earlier_report(out, protocol, report_dir)
    if facts is None:
        return []
    evaluations, attacked = facts.get("evaluations", {}), {s.name for s in steps if s.kind == "evaluation"}
    names = []
    for name, run in facts.get("runs", {}).items():
        scores = report_dir / "scores" / f"{name}.npy"
        if run_finished(out, name) or not scores.is_file() or (name in attacked and name not in evaluations):
            continue
        atomic_write(out / "scores" / scores.name, lambda fh, src=scores: fh.write(src.read_bytes()))
        folder_io.write_json(carried_path(out, "runs", name), run)
        names.append(name)
    for method, metrics in facts.get("robust", {}).items():
        if robust_done(out, method) or (f"robust-{method}" in attacked and f"robust-{method}" not in evaluations):
            continue
        folder_io.write_json(carried_path(out, "robust", method), metrics)
        names.append(f"robust-{method}")
    for name in names:  # the attacks of what was carried come with it
        if name in evaluations and not (evaluation_dir(out, name) / "report.json").is_file():
            folder_io.write_json(evaluation_dir(out, name) / "report.json", evaluations[name])
    if names and not (out / "progress.json").is_file():  # the time the carried steps took
        steps_carried = set(names) | ({"robust"} if any(n.startswith("robust-") for n in names) else set())
        seconds = {k: v for k, v in facts.get("step_seconds", {}).items() if k.split(":", 1)[1] in steps_carried}
        folder_io.write_json(out / "progress.json", {"seconds": seconds, "wall_seconds": sum(seconds.values())})
    return names


def check_report_kept(out: Path, protocol: Protocol, report_dir: Path, carried: bool = False) -> None:
    """ConfigError when the report in `report_dir` (same protocol) holds finished runs that OUT has not: rewriting it
    without them would lose the only record of them (their run folders are gone). --carry takes those it can;
    `carried`: this is the check after it did, so what is left cannot be carried."""
    facts = earlier_report(out, protocol, report_dir)
    if facts is None:
        return
    lost = [n for n in facts.get("runs", {}) if not run_finished(out, n)]
    if lost:
        how = ("--carry cannot take them (the report lacks their per-image scores or attacks): give another "
               "--report-dir, or move that report away to start over") if carried else \
            "give --carry to take them, or another --report-dir"
        raise ConfigError(f"{report_dir / 'reproduction.json'} holds finished runs that {out} has not ({', '.join(lost)}); {how}")


# --- running it ---
def check_out_dir(out: Path, protocol: Protocol) -> None:
    """A new folder, or one this same protocol started (continued); ConfigError otherwise, before anything is written."""
    saved = out / "protocol.json"
    if saved.is_file():
        try:
            previous = Protocol.model_validate(folder_io.read_json(saved))
        except Exception as err:
            raise ConfigError(f"{saved} is unreadable: {str(err).splitlines()[0]}") from None
        before, now = previous.model_dump(mode="json"), protocol.model_dump(mode="json")  # JSON turned tuples into lists
        if before != now:
            if (previous.preset, previous.dataset) != (protocol.preset, protocol.dataset):
                raise ConfigError(f"{out} holds the {previous.preset!r} preset on {previous.dataset}; give another --out "
                                  f"to run {protocol.preset!r} on {protocol.dataset}")
            changed = ", ".join(f"{k} {before[k]} (now {now[k]})" for k in sorted(now) if before.get(k) != now[k])
            raise ConfigError(f"{out} holds the {protocol.preset!r} preset with other settings: {changed}; continue it "
                              "with the settings it started with, or give another --out")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} is not empty and holds no reproduction; give a new folder")


def with_seeds(protocol: Protocol, seeds: int) -> Protocol:
    """The protocol with `seeds` training seeds of the population and the baseline (`--seeds`); ConfigError when out
    of range. The other core arms keep their own count, at most `seeds`."""
    if not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"--seeds must be between 1 and {MAX_SEEDS}, got {seeds}")
    return protocol.model_copy(update={"seeds": seeds})


def with_epochs(protocol: Protocol, epochs: int) -> Protocol:
    """The protocol with `epochs` generations of every GS-VAE run (`--epochs`, e.g. what a GPU's time allows of the
    paper preset's 100); ConfigError when out of range."""
    if not 1 <= epochs <= MAX_EPOCHS:
        raise ConfigError(f"--epochs must be between 1 and {MAX_EPOCHS}, got {epochs}")
    return protocol.model_copy(update={"generations": epochs})


def step_id(step: Step) -> str:
    """A step's name for --only: a run's (or the robust step's) own name; `evaluation:RUN` for the attacks on RUN."""
    return f"evaluation:{step.name}" if step.kind == "evaluation" else step.name


def step_names(protocol: Protocol) -> list[str]:
    """Every step's id (`step_id`), in the order they run (the winning schedules' included)."""
    return [step_id(step) for step in steps_of(protocol, 1, {seed: 1 for seed in protocol.seeds_of(HEADLINE)})]


def check_only(protocol: Protocol, names: str) -> frozenset[str]:
    """`--only A,B`: the steps to run, each one of the protocol's (ConfigError naming the unknown and the known)."""
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    known = step_names(protocol)
    if not wanted or (unknown := [name for name in wanted if name not in known]):
        raise ConfigError(f"--only takes step names of the {protocol.preset!r} preset, comma-separated"
                          f"{f'; not one: {unknown[0]!r}' if wanted else ''}; they are: {', '.join(known)}")
    return frozenset(wanted)


def again_command(protocol: Protocol, out: Path, report_dir: Path | None, only: frozenset[str] | None = None) -> str:
    """The command that continues this reproduction (printed on an interruption and in the report)."""
    preset = PRESETS.get(protocol.preset)
    seeds = "" if preset is not None and preset.seeds == protocol.seeds else f" --seeds {protocol.seeds}"
    epochs = "" if preset is not None and preset.generations == protocol.generations else f" --epochs {protocol.generations}"
    report = "" if report_dir is None or Path(report_dir) == Path(out) else f" --report-dir {report_dir}"
    steps = "" if only is None else f" --only {','.join(n for n in step_names(protocol) if n in only)}"
    return f"popvae reproduce --preset {protocol.preset} --dataset {protocol.dataset}{seeds}{epochs} --out {out}{report}{steps}"


def reproduce(protocol: Protocol, out: Path, report_dir: Path | None = None, *, data_root: str | None = None,
              address: str | None = None, num_cpus: int | None = None, say: Callable[[str], None] | None = None,
              on_generation: Callable[[str, dict[str, Any]], bool | None] | None = None,
              report_only: bool = False, carry: bool = False, only: frozenset[str] | None = None) -> Path:
    """Run (or continue) every step of `protocol` into `out`, or the steps named in `only` (`check_only`); returns
    reproduction.md (in `report_dir`, default `out`), which names what has not run yet.

    `say(line)` hears each step's start and end; `on_generation(step, lineage_entry)` returning True stops that run
    after the generation (it is resumed by the next call): how the tests interrupt a reproduction. `report_only`
    rewrites the report from what is finished and trains nothing; `carry` first takes what the report in `report_dir`
    holds finished (`carry_in`).
    """
    from popvae.population.folder_lock import holding
    from popvae.population.repro_report import write_report

    out, report_dir = Path(out), Path(report_dir or out)
    say = say or (lambda line: None)
    check_out_dir(out, protocol)
    if not carry:
        check_report_kept(out, protocol, report_dir)
    with holding(out):
        folder_io.write_json(out / "protocol.json", protocol.model_dump(mode="json"))
        data = _Data(protocol, data_root)

        def current_steps() -> list[Step]:  # a winning schedule's step appears once its seed's reference run is done
            winners = {s: winning_member(out, seeded(HEADLINE, s, protocol)) for s in protocol.seeds_of(HEADLINE)}
            return steps_of(protocol, data.steps_per_pass(), winners)

        if carry:
            if names := carry_in(out, protocol, report_dir, current_steps()):
                say(f"carried from {report_dir / 'reproduction.json'} (not run again): {', '.join(names)}")
            check_report_kept(out, protocol, report_dir, carried=True)

        if report_only:
            write_report(out, report_dir, protocol, current_steps(), data.split("test"), data.steps_per_pass())
            return report_dir / "reproduction.md"
        progress = folder_io.read_json(out / "progress.json") if (out / "progress.json").is_file() else {"seconds": {}}
        started = time.perf_counter()

        def report() -> None:
            write_report(out, report_dir, protocol, current_steps(), data.split("test"), data.steps_per_pass())

        reported = time.monotonic()
        try:
            while True:
                steps = [s for s in current_steps() if only is None or step_id(s) in only]
                todo = [s for s in steps if not step_done(out, s)]
                if not todo:
                    break
                step = todo[0]
                key = f"{step.kind}:{step.name}"
                total = planned(protocol, data.steps_per_pass()) if only is None else len(only)
                say(f"[{len(steps) - len(todo) + 1}/{total}] {step.kind} {step.name}: {step.what}")
                began = time.perf_counter()
                try:
                    finished = _execute(step, out, protocol, data, address, num_cpus, on_generation)
                finally:
                    progress["seconds"][key] = progress["seconds"].get(key, 0.0) + time.perf_counter() - began
                    progress["wall_seconds"] = progress.get("wall_seconds", 0.0) + time.perf_counter() - started
                    started = time.perf_counter()
                    folder_io.write_json(out / "progress.json", progress)
                say(f"    {'done' if finished else 'stopped'} in {time.perf_counter() - began:.0f} s")
                if not finished:
                    break
                if time.monotonic() - reported >= REPORT_EVERY_S:
                    report()
                    reported = time.monotonic()
        except BaseException:
            with contextlib.suppress(Exception):  # the steps finished so far, reported before the error goes on
                report()
            raise
        if only is not None and (waiting := sorted(only - {step_id(s) for s in current_steps()})):
            say(f"not run: {', '.join(waiting)}: a winning schedule needs its seed's population-reference done first")
        report()
        return report_dir / "reproduction.md"


REPORT_EVERY_S = 60.0  # while steps run, the report is rewritten after a step at most this often (and always at the end)


class _Data:
    """The dataset's splits, loaded once and only when a step needs them."""

    def __init__(self, protocol: Protocol, data_root: str | None) -> None:
        self.protocol, self.root = protocol, data_root
        self._splits: dict[str, Any] = {}

    def split(self, name: str) -> Any:
        if name not in self._splits:
            from popvae.models.dataset_loading import load_split

            self._splits[name] = load_split(self.protocol.dataset, name, self.root, self.protocol.synthetic_size)
        return self._splits[name]

    def steps_per_pass(self) -> int:
        """Optimizer steps in one pass over a run's training split (the full train split less validation)."""
        from popvae.population.config import RunConfig

        val_fraction = RunConfig.model_fields["val_fraction"].default
        return max(1, int(len(self.split("train")) * (1 - val_fraction)) // self.protocol.batch_size)


def _execute(step: Step, out: Path, p: Protocol, data: _Data, address: str | None, num_cpus: int | None,
             on_generation: Callable[[str, dict[str, Any]], bool | None] | None) -> bool:
    """Run one step; False when it stopped early (on_generation asked) and must be continued."""
    if step.kind == "run":
        return _train(step, run_dir(out, step.name), data.root, address, num_cpus, on_generation)
    if step.kind == "robust":
        _robust(step.config["methods"], out, p, data, address, num_cpus)
        return True
    _evaluate(step, out, p, data)
    return True


def _train(step: Step, folder: Path, data_root: str | None, address: str | None, num_cpus: int | None,
           on_generation: Callable[[str, dict[str, Any]], bool | None] | None) -> bool:
    from popvae.population import driver
    from popvae.population.config import parse_config

    hook = None if on_generation is None else (lambda entry, status: on_generation(step.name, entry))
    if RunFolder(folder).has_checkpoint():
        run = driver.resumed_run(folder)
    else:
        if folder.exists():
            shutil.rmtree(folder)  # no epoch finished there: nothing to keep
        run = driver.new_run(parse_config(step.config | {"data_root": data_root}), folder)
    driver.train_run(run, hook, address, num_cpus)
    return run_done(folder)


def _robust(methods: list[str], out: Path, p: Protocol, data: _Data, address: str | None, num_cpus: int | None) -> None:
    """The methods not yet done, as jobs on the worker pool (a job that did not finish is started again)."""
    from popvae.population.jobs import run_robust
    from popvae.population.plans import plan_robust

    todo = [m for m in methods if not robust_done(out, m)]
    for m in todo:
        shutil.rmtree(robust_job_dir(out, m), ignore_errors=True)
    plan = plan_robust(todo, out / "robust", dataset=p.dataset, epochs=p.robust_epochs, batch_size=p.robust_batch,
                       steps_per_epoch=p.robust_steps, seed=p.seed)
    results = run_robust(plan | {"config": plan["config"] | {"methods": methods}}, data.split("train"), data.split("test"),
                         address=address, num_cpus=num_cpus)
    failed = {k: r["error"] for k, r in results.items() if r["state"] != "done"}
    if failed:
        raise RuntimeError(f"robust jobs failed: {failed}")


def _evaluate(step: Step, out: Path, p: Protocol, data: _Data) -> None:
    from popvae.attacks.report import evaluate
    from popvae.population.evaluation import load_evaluable
    from popvae.population.training import pick_device

    device = str(pick_device("auto"))
    model, _ = load_evaluable(out / step.config.get("target", f"runs/{step.name}"), map_location=device)  # best.pt / model.pt
    experiments = step.config["experiments"]
    settings = {k: v for k, v in p.eval_settings.items() if k in experiments}
    subset = None if experiments == ["unseen"] else p.eval_subset  # reconstructions only: the full test split is cheap
    evaluate(model, data.split("train"), data.split("test"), experiments, subset,
             evaluation_dir(out, step.name), p.seed, device, progress=False, held_out=step.config.get("held_out"),
             cache_dir=out / "cache", settings=settings)
