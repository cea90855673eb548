"""popvae against Ray Tune's PopulationBasedTraining doing the same work, on this machine.

The same work: n GS-VAE members (the same model, batch 64, `--steps` batches per generation, `--generations`
generations, select on the epoch's training loss), on the same Ray (`num_cpus` = this machine's CPUs). Tune trains
each member as a function trainable (ReferenceMember: the plain nn.Module member) with 1 torch thread and CPUs/n each, so
all n run at once; every iteration is one generation; PBT exploits every iteration (perturbation_interval 1, tau
mutated), through Tune's checkpoint API (tune.report with a Checkpoint of model + Adam state, tune.get_checkpoint on
restore). Runs: synchronous PBT, asynchronous PBT, synchronous with reuse_actors=True. popvae runs the same members
packed (pack_size auto: one worker, threads = CPUs) and one per process (pack_size 1: 1 torch thread, CPUs/n each,
the layout Tune gets).

Measured, per run (steady generations: the first is not counted):
- total wall seconds from ray.init to the last generation's result (start-up included);
- per-generation overhead beyond pure training time: a generation's wall time minus the longest training time a
  member (Tune trial) or pack (popvae) measured inside its own process for that generation. Synchronous PBT and
  popvae: the generation's wall is the time between two barriers (the last member's report); asynchronous PBT (no
  barrier): the time between a trial's consecutive reports, minus its own training time, median over trials;
- exploits: popvae's broadcasts (members that received the best's weights), Tune's perturbations (trials restored
  from another trial's checkpoint).

Prints one JSON object (and writes it with --out). From the repository root:
    .venv/bin/python -m benchmarks.vs_tune --out benchmarks/results/vs-tune-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

from benchmarks.common import emit, spread
from popvae.population.config import parse_config
from popvae.population.contract import NAMESPACE
from popvae.population.driver import load_run_data

TARGETS = {"tune_sync_overhead_over_popvae": ">= 50", "tune_sync_total_wall_over_popvae": ">= 3"}


def run_config(members: int, steps: int, generations: int, dataset: str, pack_size: Any = "auto") -> dict:
    return {"dataset": dataset, "members": members, "epochs": generations, "steps_per_epoch": steps, "batch_size": 64,
            "select_on": "train", "device": "cpu", "pack_size": pack_size}


def _init(cpus: int) -> None:
    ray.init(num_cpus=cpus, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False, configure_logging=False)


def popvae_run(cfg_dict: dict, data, cpus: int, tmp: Path) -> dict:
    from popvae.population.coordinator import Coordinator

    started = time.perf_counter()
    _init(cpus)
    cfg = parse_config(cfg_dict)
    images = (data.train.images, data.val.images)  # by value: the coordinator puts them in the object store
    coord = Coordinator.options(namespace=NAMESPACE).remote(cfg, str(tmp), images, False)
    entries, first = [], None
    for epoch in range(cfg.epochs):
        entries.append(ray.get(coord.run_generation.remote(epoch)))
        first = first or time.perf_counter() - started
    total = time.perf_counter() - started
    rows = _history(tmp)
    overhead = []
    for e in entries[1:]:
        train_inside = max(r["seconds"] for r in rows if r["epoch"] == e["epoch"])  # the slowest pack's own epoch
        overhead.append(e["seconds"]["train"] + e["seconds"]["coordination"] - train_inside)
    ray.shutdown()
    return {"total_wall_s": total, "first_generation_done_s": first, "overhead_s_per_generation": spread(overhead),
            "generation_s": spread([e["seconds"]["train"] + e["seconds"]["coordination"] for e in entries[1:]]),
            "exploits": sum(len(e["received"]) for e in entries)}


def _history(run_dir: Path) -> list[dict]:
    from popvae.population import folder_io

    return folder_io.read_rows(run_dir / "history.parquet")


def _trainable(config: dict, train=None, val=None) -> None:
    """One Tune trial: one member, one generation per iteration, its state through Tune's checkpoints."""
    from ray import tune

    from popvae.population.member import ReferenceMember

    torch.set_num_threads(1)
    cfg = parse_config(config["run"])
    member = ReferenceMember(config["index"], cfg, train, val, 1)
    trial = tune.get_context().get_trial_id()
    generation, source = 0, trial
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
        member.model.load_state_dict(state["model"])
        member.optimizer.load_state_dict(state["optimizer"])
        generation, source = state["generation"], state["trial"]
    # Restored from another trial's checkpoint: PBT exploited. (Not config["index"]: an exploit copies the donor's
    # whole config, index included, into this trial.)
    exploited = int(source != trial)
    while True:
        t0 = time.perf_counter()
        result = member.train_epoch(generation, float(config["tau"]))
        train_s = time.perf_counter() - t0
        generation += 1
        row = {"loss": result["loss"]["total"], "train_s": train_s, "t": time.time(), "generation": generation,
               "exploited": exploited, "member": config["index"], "trial": trial}
        with open(config["log"], "a") as log:  # our own record of every report (one machine)
            log.write(json.dumps(row) + "\n")
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": member.model.state_dict(), "optimizer": member.optimizer.state_dict(),
                        "generation": generation, "trial": trial}, Path(d) / "state.pt")
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(d))
        exploited = 0


def tune_run(cfg_dict: dict, data, cpus: int, tmp: Path, synch: bool, reuse: bool) -> dict:
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining

    n, generations = cfg_dict["members"], cfg_dict["epochs"]
    started = time.perf_counter()
    _init(cpus)
    pbt = PopulationBasedTraining(time_attr="training_iteration", metric="loss", mode="min", perturbation_interval=1,
                                  hyperparam_mutations={"tau": tune.uniform(0.5, 2.0)}, synch=synch)
    trainable = tune.with_resources(tune.with_parameters(_trainable, train=data.train.images, val=data.val.images),
                                    {"cpu": cpus / n})
    tuner = tune.Tuner(
        trainable,
        param_space={"run": cfg_dict, "log": str(tmp / "reports.jsonl"), "index": tune.grid_search(list(range(1, n + 1))),
                     "tau": tune.uniform(0.5, 2.0)},
        tune_config=tune.TuneConfig(scheduler=pbt, num_samples=1, reuse_actors=reuse, max_concurrent_trials=n),
        run_config=tune.RunConfig(stop={"training_iteration": generations}, storage_path=str(tmp), verbose=0),
    )
    tmp.mkdir(parents=True, exist_ok=True)
    results = tuner.fit()
    total = time.perf_counter() - started
    ray.shutdown()
    rows = [json.loads(line) for line in (tmp / "reports.jsonl").read_text().splitlines()]
    by_iter: dict[int, list[dict]] = {}
    for r in rows:
        by_iter.setdefault(int(r["generation"]), []).append(r)
    overhead, gen_s = [], []
    if synch:
        barriers = {g: max(r["t"] for r in rs) for g, rs in by_iter.items()}
        for g in sorted(by_iter)[1:]:
            if g - 1 in barriers:
                wall = barriers[g] - barriers[g - 1]
                gen_s.append(wall)
                overhead.append(wall - max(r["train_s"] for r in by_iter[g]))
    else:
        per_trial: dict[str, list[dict]] = {}
        for r in rows:
            per_trial.setdefault(r["trial"], []).append(r)
        for trial_rows in (sorted(v, key=lambda r: r["t"]) for v in per_trial.values()):
            for a, b in zip(trial_rows[1:], trial_rows[2:]):
                gen_s.append(b["t"] - a["t"])
                overhead.append(b["t"] - a["t"] - b["train_s"])
    return {"total_wall_s": total, "overhead_s_per_generation": spread(overhead), "generation_s": spread(gen_s),
            "exploits": int(sum(r.get("exploited", 0) for r in rows)),
            "pbt_perturbations": int(getattr(pbt, "_num_perturbations", -1)), "trials": len(results),
            "trial_errors": sum(1 for res in results if res.error is not None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--members", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    dataset = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").exists() else "synthetic"
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()
    data = load_run_data(parse_config(run_config(2, args.steps, args.generations, dataset)))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.members:
            runs: dict[str, Any] = {}
            for label, ps in (("popvae_packed", "auto"), ("popvae_one_per_process", 1)):
                runs[label] = popvae_run(run_config(n, args.steps, args.generations, dataset, ps), data, cpus,
                                         Path(tmp) / f"{label}-{n}")
            for label, synch, reuse in (("tune_pbt_sync", True, False), ("tune_pbt_async", False, False),
                                        ("tune_pbt_sync_reuse_actors", True, True)):
                runs[label] = tune_run(run_config(n, args.steps, args.generations, dataset), data, cpus,
                                       Path(tmp) / f"{label}-{n}", synch, reuse)
            pop = runs["popvae_packed"]
            sync = runs["tune_pbt_sync"]
            runs["ratios"] = {
                "tune_sync_overhead_over_popvae": sync["overhead_s_per_generation"]["median"]
                / max(pop["overhead_s_per_generation"]["median"], 1e-9),
                "tune_sync_total_wall_over_popvae": sync["total_wall_s"] / pop["total_wall_s"],
                "tune_sync_overhead_over_popvae_one_per_process": sync["overhead_s_per_generation"]["median"]
                / max(runs["popvae_one_per_process"]["overhead_s_per_generation"]["median"], 1e-9),
                "tune_sync_total_wall_over_popvae_one_per_process": sync["total_wall_s"]
                / runs["popvae_one_per_process"]["total_wall_s"],
            }
            out[str(n)] = runs
    result = {
        "machine": {"cpus": cpus, "platform": platform.machine(), "torch": torch.__version__, "ray": ray.__version__,
                    "device": "cpu", "gpu": "none available to this task", "dataset": dataset,
                    "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "config": {"steps_per_generation": args.steps, "batch_size": 64, "generations": args.generations,
                   "generations_counted": args.generations - 1, "select_on": "train", "exploit": "every generation"},
        "members": out,
        "targets": TARGETS,
        "met": {k: all(v["ratios"][k] >= float(TARGETS[k].split()[-1]) for v in out.values()) for k in TARGETS},
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
