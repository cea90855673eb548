"""Packed members against one member per process and against the sequential single-process loop, on this machine.

For n = 5 and 8 members, three repeats each (spread reported), the same config (batch 64, --steps per generation,
select_on train, CPU): the seconds of one generation of
- `packed`: the population on Ray with pack_size auto (one pack per CPU node: here one worker, torch threads = the
  node's CPUs);
- `one_per_process`: the population on Ray with pack_size 1 (a worker process per member, CPUs shared equally);
- `loop`: the reference code's design, no Ray: ReferenceMembers (plain nn.Modules) trained one after another in this
  process with all its CPUs, the best's weights then copied into the others;
and the resident memory of all worker processes (RSS and PSS from /proc), per member, packed and one per process.
Start-up: from `popvae train` (a fresh process) to the first training step (the run's status.json turns its members
to "training"), packed and one per process. Ratios are within one run: absolute times drift with the machine's load.

Prints one JSON object (and writes it with --out). From the repository root:
    .venv/bin/python -m benchmarks.population --out benchmarks/results/population-cpu.json
    .venv/bin/python -m benchmarks.population --startup-only --out benchmarks/results/startup-first-step-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray
import torch

from benchmarks.common import emit, spread
from popvae.population.config import parse_config
from popvae.population.contract import NAMESPACE
from popvae.population.coordinator import Coordinator
from popvae.population.driver import ensure_ray, load_run_data
from popvae.population.member import ReferenceMember
from popvae.population.temperature import next_taus

TARGETS = {"packed_over_loop": "<= 1.0 (never slower)", "one_per_process_over_packed_n8": ">= 1.2",
           "packed_rss_mb_per_member_n8": "<= 250", "startup_s": "<= 10 (idle machine)"}


SPEED = {"precision": "fp32", "pack_mode": "vmap"}  # what the packs ran when these numbers were first taken; --precision


def config(members: int, steps: int, generations: int, dataset: str, pack_size: str | int = "auto"):
    return parse_config({"dataset": dataset, "members": members, "epochs": generations, "steps_per_epoch": steps,
                         "batch_size": 64, "select_on": "train", "device": "cpu", "pack_size": pack_size, **SPEED})


def _proc_kb(pid: int, path: str, field: str) -> int:
    for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def ray_population(cfg, images, run_dir: Path) -> dict:
    """Seconds of every generation (status' generation_seconds) and the memory of every worker process after them."""
    coord = Coordinator.options(namespace=NAMESPACE).remote(cfg, str(run_dir), images, False)
    seconds = []
    for epoch in range(cfg.epochs):
        ray.get(coord.run_generation.remote(epoch))
        seconds.append(ray.get(coord.status.remote())["generation_seconds"])
    workers = {id(h): h for h in ray.get(coord.member_handles.remote()).values()}.values()
    pids = ray.get([w.pid.remote() for w in workers])
    rss = sum(_proc_kb(p, "status", "VmRSS") for p in pids) / 1024
    pss = sum(_proc_kb(p, "smaps_rollup", "Pss") for p in pids) / 1024
    for w in workers:
        ray.kill(w)
    ray.kill(coord)
    return {"seconds": seconds, "workers": len(pids), "rss_mb": rss, "pss_mb": pss}


def sequential_loop(cfg, data, threads: int) -> list[float]:
    """The reference design: one process (all cores), members trained one after another, then the best copied into
    the others."""
    torch.set_num_threads(threads)
    pop = [ReferenceMember(i, cfg, data.train.images, data.val.images, threads) for i in range(1, cfg.members + 1)]
    taus = {i: 1.0 for i in range(1, cfg.members + 1)}
    patience = {i: 0 for i in taus}
    times = []
    for g in range(cfg.epochs):
        start = time.perf_counter()
        losses = {m.index: m.train_epoch(g, taus[m.index])["loss"]["total"] for m in pop}
        best, moves = next_taus(taus, patience, losses, cfg.temperature)
        weights = pop[best - 1].get_weights()
        for m in pop:
            if m.index != best:
                m.set_weights(weights)
        taus = {i: mv.tau for i, mv in moves.items()}
        times.append(time.perf_counter() - start)
    return times


def startup(members: int, pack_size: str | int, dataset: str, cpus: int) -> dict:
    """`popvae train` as a fresh process: seconds until its members are training, and until it exits (1 step)."""
    popvae = Path(sys.executable).parent / "popvae"
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        status = run_dir / "status.json"
        started = time.perf_counter()
        proc = subprocess.Popen([str(popvae), "train", "--dataset", dataset, "--members", str(members), "--epochs", "1",
                                 "--steps-per-epoch", "1", "--batch-size", "64", "--select-on", "train", "--device",
                                 "cpu", "--pack-size", str(pack_size), "--precision", SPEED["precision"], "--pack-mode",
                                 SPEED["pack_mode"], "--run-dir", str(run_dir), "--quiet",
                                 "--num-cpus", str(cpus)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        first_step = None
        while proc.poll() is None:
            if first_step is None and status.exists():
                try:
                    members_state = [m["state"] for m in json.loads(status.read_text())["members"]]
                except (ValueError, KeyError):
                    members_state = []
                if members_state and all(s == "training" for s in members_state):
                    first_step = time.perf_counter() - started
            time.sleep(0.02)
        if proc.returncode != 0:
            raise RuntimeError(f"popvae train failed: {proc.stderr.read()[-2000:]}")
        return {"to_first_step_s": first_step, "to_exit_s": time.perf_counter() - started}


def raylets_running() -> int:
    """Ray nodes already running on this machine: a local Ray started beside one (even a stopped one) waits about
    3.4 s for its dashboard agent to give up on the port the first one holds (52365), so start-up is only comparable
    with none."""
    count = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            count += comm.read_text().strip() == "raylet"
        except OSError:
            pass
    return count


def startup_layouts(dataset: str, cpus: int, repeats: int) -> dict:
    """`popvae train` of 8 members (pack_size auto) to its first step, fp32 vmap packs (the CPU default before bf16)
    against precision and pack mode auto, taking turns so that load drifts hit both."""
    layouts = {"fp32_vmap": ("fp32", "vmap"), "auto": ("auto", "auto")}
    runs: dict[str, list[dict]] = {label: [] for label in layouts}
    load_before, raylets = os.getloadavg(), raylets_running()
    for _ in range(repeats):
        for label, (precision, mode) in layouts.items():
            SPEED.update(precision=precision, pack_mode=mode)
            runs[label].append(startup(8, "auto", dataset, cpus))
    return {"benchmark": "startup to the first step", "machine": {"cpus": cpus, "dataset": dataset,
            "load_average_before": load_before, "load_average_after": os.getloadavg(),
            "other_ray_nodes_on_this_machine": raylets}, "target": TARGETS["startup_s"],
            "layouts": {label: {k: spread([r[k] for r in rs]) for k in rs[0]} for label, rs in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20, help="batches of 64 per generation")
    parser.add_argument("--generations", type=int, default=3, help="per population; the first is warm-up, not counted")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--members", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--pack-mode", default="vmap", choices=["auto", "vmap", "loop"])
    parser.add_argument("--startup-only", action="store_true",
                        help="only the start-up of 8 members with pack_size auto, at each --precision/--pack-mode pair")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    SPEED.update(precision=args.precision, pack_mode=args.pack_mode)
    dataset = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").exists() else "synthetic"
    cpus = os.cpu_count() or 1
    if args.startup_only:
        emit(startup_layouts(dataset, cpus, args.repeats), args.out)
        return
    load_before = os.getloadavg()
    data = load_run_data(config(2, args.steps, args.generations, dataset))
    ensure_ray(num_cpus=cpus)
    images = (data.train.images, data.val.images)  # by value: the coordinator puts them in the object store
    counted = lambda xs: statistics.median(xs[1:])  # noqa: E731  (drop the warm-up generation)
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.members:
            runs: dict[str, list] = {"packed": [], "one_per_process": [], "loop": []}
            memory: dict[str, dict] = {}
            for r in range(args.repeats):
                for label, pack_size in (("packed", "auto"), ("one_per_process", 1)):
                    out = ray_population(config(n, args.steps, args.generations, dataset, pack_size), images,
                                         Path(tmp) / f"{n}-{label}-{r}")
                    runs[label].append(counted(out["seconds"]))
                    memory[label] = {"workers": out["workers"], "rss_mb_per_member": out["rss_mb"] / n,
                                     "pss_mb_per_member": out["pss_mb"] / n, "rss_mb_all_workers": out["rss_mb"]}
                runs["loop"].append(counted(sequential_loop(config(n, args.steps, args.generations, dataset), data, cpus)))
            ratios = [{"packed_over_loop": p / q, "one_per_process_over_packed": u / p}
                      for p, u, q in zip(runs["packed"], runs["one_per_process"], runs["loop"], strict=True)]
            sizes[str(n)] = {
                "generation_seconds": {k: spread(v) for k, v in runs.items()},
                "ratios_per_repeat": ratios,
                "ratios": {k: spread([x[k] for x in ratios]) for k in ratios[0]},
                "memory": memory,
            }
    ray.shutdown()
    start = {label: [startup(8, ps, dataset, cpus) for _ in range(args.repeats)] for label, ps in
             (("packed", "auto"), ("one_per_process", 1))}
    n8 = sizes.get("8")
    result = {
        "machine": {"cpus": cpus, "platform": platform.machine(), "torch": torch.__version__, "ray": ray.__version__,
                    "device": "cpu", "gpu": "none: no GPU machine was available to this task, so no population-gpu.json",
                    "dataset": dataset, "load_average_before": load_before, "load_average_after": os.getloadavg()},
        "config": {"steps_per_generation": args.steps, "batch_size": 64, "generations": args.generations,
                   "generations_counted": args.generations - 1, "repeats": args.repeats, "select_on": "train",
                   "packed": "pack_size auto: 1 worker, torch threads = CPUs", "one_per_process":
                   "pack_size 1: n workers, CPUs shared equally (1 torch thread each)",
                   "loop": "no Ray: n ReferenceMembers one after another, torch threads = CPUs", **SPEED},
        "members": sizes,
        "startup_8_members": {k: {"to_first_step_s": spread([x["to_first_step_s"] for x in v]),
                                  "to_exit_s": spread([x["to_exit_s"] for x in v])} for k, v in start.items()},
        "targets": TARGETS,
    }
    if n8 is not None:
        result["met"] = {
            "packed_over_loop": all(s["ratios"]["packed_over_loop"]["median"] <= 1.0 for s in sizes.values()),
            "one_per_process_over_packed_n8": n8["ratios"]["one_per_process_over_packed"]["median"] >= 1.2,
            "packed_rss_mb_per_member_n8": n8["memory"]["packed"]["rss_mb_per_member"] <= 250,
            "startup_s": result["startup_8_members"]["packed"]["to_first_step_s"]["median"] <= 10,
        }
    emit(result, args.out)


if __name__ == "__main__":
    main()
