"""`popvae robust --preset paper`: every robust autoencoder trained at its paper's budget (or to a plateau), several
seeds where the claims rest on them, then attacked, then one report beside the papers' numbers.

Each (method, seed) is a robust job (OUT/jobs/<method>-s<seed>/) and each attack an evaluation job
(OUT/evaluations/<method>-s<seed>/report.json), all on the worker pool in parallel. Running the same command again
continues: a job that is done is skipped, one that was interrupted resumes after its last checkpointed epoch, one
with no checkpoint starts again. The report (`population.robust_converged_report`) is rewritten at the end from
whatever is finished, naming what is missing. The report also outlives its run folder: a job that an earlier report
in the same report folder holds finished (same section, attacked) and that OUT has not trained is carried into the new
report with `--carry`, not trained again, so a committed report continues on a new machine. Planning is pure (no torch, no Ray).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from popvae.population import folder_io
from popvae.population.config import ConfigError
from popvae.population.robust_presets import PAPER, PAPER_SEEDS, Schedule
from popvae.population.run_folder import RunFolder

# Table 1 and 3 of Robust GMM-DAE (VAE, GMM-DAE, Robust GMM-DAE), RAVEN against the VAE, Lu & Chen's MMD / SWT VAE-DAE
# twins with and without latent adversarial training, in the order the report lists them (`queued` orders the
# training: the latent-adversarial twins, about 3.5x the cost of a step of their plain twins, last).
CONVERGED_METHODS = ("vae-kl", "gmm-dae", "robust-gmm-dae", "raven", "vae-mmd", "dae-mmd", "vae-swt", "dae-swt",
                     "vae-mmd-lat", "dae-mmd-lat", "vae-swt-lat", "dae-swt-lat")
EXPERIMENTS = ["latent", "max-damage", "latent-pgd"]


class Section(BaseModel):
    """One preset of the section: data, arms, seeds, the training settings of each method, the attacks' budgets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str
    dataset: str = "fashion-mnist"
    synthetic_size: int = 512
    methods: tuple[str, ...] = CONVERGED_METHODS
    seeds: dict[str, int] = PAPER_SEEDS  # a method not named has one seed (0)
    settings: dict[str, tuple[dict[str, Any], Schedule]] = PAPER
    eval_subset: int | None = None  # test images the attacks draw from (None: all)
    eval_settings: dict[str, dict[str, Any]] = {}  # keyword arguments per experiment (`attacks.report.evaluate`)
    precision: str = "auto"


def _smoke_settings() -> dict[str, tuple[dict[str, Any], Schedule]]:
    """The paper's overrides and decay rules at a budget of seconds: at most 3 epochs of 2 steps, batch 16."""
    return {m: (over, s.model_copy(update={"batch_size": 16, "epochs": 3, "steps_per_epoch": 2, "stop_patience": 1,
                                           "decay_patience": 0}))
            for m, (over, s) in PAPER.items()}


PRESETS: dict[str, Section] = {
    # Robust GMM-DAE Table 1's protocol (the attacks' defaults): 100 test images x 10 trials at L2 1 / 3 / 5, drawn
    # from a seeded 1,000-image subset of the test split, on which latent PGD and the Frechet distance are measured.
    "paper": Section(preset="paper", eval_subset=1000),
    "smoke": Section(preset="smoke", dataset="synthetic", synthetic_size=96, methods=("vae-kl", "robust-gmm-dae", "raven"),
                     seeds={"vae-kl": 2}, settings=_smoke_settings(), eval_subset=16,
                     eval_settings={"latent": {"n_images": 4, "trials": 2, "steps": 2},
                                    "max-damage": {"n_images": 4, "trials": 2, "steps": 2},
                                    "latent-pgd": {"eps_grid": (0.0, 1.0, 2.0), "steps": 2}}),
}


def arms(section: Section) -> list[tuple[str, int]]:
    """(method, seed) for every training job, in the order they are queued."""
    return [(m, seed) for m in section.methods for seed in range(section.seeds.get(m, 1))]


def job_id(method: str, seed: int) -> str:
    return f"{method}-s{seed}"


def training_jobs(section: Section, out: Path) -> list[dict[str, Any]]:
    """The worker pool's robust jobs, each carrying its method's overrides and schedule."""
    jobs = []
    for method, seed in arms(section):
        overrides, schedule = section.settings[method]
        jobs.append({"id": job_id(method, seed), "kind": "robust", "method": method,
                     "dir": str(RunFolder(out).job(job_id(method, seed)).path), "epochs": schedule.epochs,
                     "batch_size": schedule.batch_size, "steps_per_epoch": schedule.steps_per_epoch, "seed": seed,
                     "precision": section.precision, "overrides": overrides, "schedule": schedule.model_dump(mode="json")})
    return jobs


def queued(section: Section, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Training jobs in the order the worker pool takes them: the cheapest steps first (the MLP encoders of GMM-DAE
    and Robust GMM-DAE, then the conv models, the latent-adversarial twins last), each class in the section's order.
    Table 1's cheapest claims are then settled first, and a session that ends early leaves whole methods trained
    rather than a spread of half-trained ones."""
    return sorted(jobs, key=lambda j: (j["method"].endswith("-lat"), section.settings[j["method"]][0].get("arch") != "mlp"))


def evaluation_job(section: Section, out: Path, job: dict[str, Any]) -> dict[str, Any]:
    """The attacks on one trained job's model.pt, its report in OUT/evaluations/<job id>/."""
    eval_id = f"evaluation-{job['id']}"
    return {"id": eval_id, "kind": "evaluation", "method": job["id"], "dir": str(RunFolder(out).job(eval_id).path),
            "checkpoint": str(RunFolder(job["dir"]).model_path), "out_dir": str(evaluation_dir(out, job["id"])),
            "experiments": EXPERIMENTS, "subset": section.eval_subset, "seed": 0, "held_out": [],
            "settings": {k: v for k, v in section.eval_settings.items() if k in EXPERIMENTS}}


def evaluation_dir(out: Path, job: str) -> Path:
    return Path(out) / "evaluations" / job


def trained(job: dict[str, Any]) -> bool:
    """A robust job whose status says done and whose model.pt is there."""
    folder = RunFolder(job["dir"])
    return folder.recorded_state() == "done" and folder.model_path.is_file()


def evaluated(out: Path, job_id: str) -> bool:
    return (evaluation_dir(out, job_id) / "report.json").is_file()


def check_out(out: Path, section: Section) -> None:
    """A new folder, or one this same section started (continued); ConfigError otherwise, before anything is written."""
    saved = Path(out) / "section.json"
    if saved.is_file():
        try:
            previous = Section.model_validate(folder_io.read_json(saved))
        except Exception as err:
            raise ConfigError(f"{saved} is unreadable: {str(err).splitlines()[0]}") from None
        if previous.model_dump(mode="json") != section.model_dump(mode="json"):
            raise ConfigError(f"{out} holds the {previous.preset!r} robust preset with other settings; give another "
                              f"--run-dir to run {section.preset!r}")
    elif Path(out).exists() and (not Path(out).is_dir() or any(Path(out).iterdir())):
        raise ConfigError(f"--run-dir {out} is not empty and holds no robust preset; give a new folder")


def run_section(section: Section, out: Path, report_dir: Path | None = None, *, data_root: str | None = None,
                address: str | None = None, num_cpus: int | None = None, workers: int | None = None,
                say: Callable[[str], None] | None = None, report_only: bool = False, carry: bool = False) -> Path:
    """Train what is not trained, attack what is not attacked, write the report; returns its markdown path. Holds
    OUT's lock throughout. A failed job is recorded and the others go on; the report names what is missing. `carry`:
    first take the jobs that the report in `report_dir` holds finished (`earlier_results`)."""
    import ray

    from popvae.models.dataset_loading import load_split
    from popvae.population.driver import ensure_ray
    from popvae.population.folder_lock import holding
    from popvae.population.jobs import run_jobs
    from popvae.population.robust_converged_report import earlier_results, write_report

    out, say = Path(out), say or (lambda line: None)
    report_dir = Path(report_dir or out)
    check_out(out, section)
    jobs = training_jobs(section, out)
    earlier = earlier_results(section, report_dir)  # what a lost run folder had finished
    carried = {j["id"]: earlier[j["id"]] for j in jobs if not trained(j) and j["id"] in earlier}
    if carried and not carry:  # rewriting the report without them would lose their only record
        raise ConfigError(f"{report_dir} holds finished jobs that {out} has not ({', '.join(carried)}); give --carry to "
                          "take them, or another --report-dir")
    with holding(out):
        folder_io.write_json(out / "section.json", section.model_dump(mode="json"))
        folder = RunFolder(out)
        if not folder.config_path.exists():
            folder.write_config({"kind": "robust", "dataset": section.dataset, "data_root": data_root,
                                 "methods": list(section.methods), "preset": section.preset})
        if not report_only:
            train, test = (load_split(section.dataset, split, data_root, section.synthetic_size) for split in ("train", "test"))
            ensure_ray(address, num_cpus)
            count = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
            # a training job attacks its model in the same worker; a model trained earlier is attacked on its own
            todo = [j | {"evaluation": evaluation_job(section, out, j)} for j in queued(section, jobs)
                    if not trained(j) and j["id"] not in carried]
            todo += [evaluation_job(section, out, j) for j in jobs if trained(j) and not evaluated(out, j["id"])]
            left = sum(1 for j in todo if j["kind"] == "robust")
            say(f"{left} of {len(jobs)} trainings to run (each then attacks its model), {len(todo) - left} attacks of "
                f"models trained before, {len(carried)} carried from {report_dir}, on {min(count, len(todo))} workers")
            if todo:
                run_jobs(todo, train, test, min(count, len(todo)), on_done=lambda j, r: say(f"{j['id']}: {r['state']}"))
        return write_report(section, out, report_dir, jobs, carried)
