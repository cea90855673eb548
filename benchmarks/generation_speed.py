"""One generation of n members on real Ray: today's packed fp32 (one vmap pack per node) against other layouts.

A layout is precision x pack mode x pack size: `fp32/vmap/auto` is the packed path as it was before bf16 (one
worker per node, torch threads = the node's CPUs, the members under vmap); `bf16/loop/4` is bf16 autocast with the
members stepped one after another, at most 4 per worker (so on 2 CPUs: two workers of one torch thread each, side by
side). Every layout trains the same population (Fashion-MNIST when installed, select_on train, --steps batches per
generation) for --generations generations; the first is warm-up and not counted. The layouts take turns within each
repeat, so load drifts hit them alike; ratios (today over the layout: above 1 is faster) are per repeat, then
summarised as median, min and max.

Prints one JSON object (and writes it with --out). From the repository root, on an otherwise idle machine:
    .venv/bin/python -m benchmarks.generation_speed --out benchmarks/results/generation-speed-cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

import ray
import torch

from benchmarks.common import emit, spread
from benchmarks.population import ray_population
from popvae.population.config import RunConfig, parse_config
from popvae.population.driver import ensure_ray, load_run_data
from popvae.population.training import cpu_model

TODAY = "fp32/vmap/auto"
LAYOUTS = [TODAY, "fp32/loop/4", "bf16/loop/8", "bf16/loop/4", "auto/auto/auto"]


def layout_config(layout: str, members: int, batch: int, steps: int, generations: int, dataset: str) -> RunConfig:
    precision, mode, size = layout.split("/")
    return parse_config({"dataset": dataset, "members": members, "epochs": generations, "steps_per_epoch": steps,
                         "batch_size": batch, "select_on": "train", "device": "cpu", "precision": precision,
                         "pack_mode": mode, "pack_size": size if size == "auto" else int(size)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--steps", type=int, default=20, help="batches per generation")
    parser.add_argument("--generations", type=int, default=2, help="per population; the first is warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layouts", nargs="+", default=LAYOUTS, help="precision/pack_mode/pack_size; the first is the "
                        "baseline the others are divided by")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.generations < 2:
        parser.error("--generations must be at least 2 (the first is warm-up)")
    dataset = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").exists() else "synthetic"
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()
    data = load_run_data(layout_config(TODAY, 2, 64, args.steps, args.generations, dataset))
    ensure_ray(num_cpus=cpus)
    images = (data.train.images, data.val.images)  # by value: the coordinator puts them in the object store
    base = args.layouts[0]
    batches = {}
    with tempfile.TemporaryDirectory() as tmp:
        for batch in args.batch_sizes:
            seconds: dict[str, list[float]] = {layout: [] for layout in args.layouts}
            workers: dict[str, int] = {}
            for r in range(args.repeats):
                for layout in args.layouts:
                    cfg = layout_config(layout, args.members, batch, args.steps, args.generations, dataset)
                    out = ray_population(cfg, images, Path(tmp) / f"{batch}-{layout.replace('/', '-')}-{r}")
                    seconds[layout].append(statistics.median(out["seconds"][1:]))
                    workers[layout] = out["workers"]
            batches[str(batch)] = {
                "generation_seconds": {layout: spread(v) for layout, v in seconds.items()},
                "workers": workers,
                "speedup_over_" + base.replace("/", "_"): {
                    layout: spread([b / x for b, x in zip(seconds[base], v, strict=True)])
                    for layout, v in seconds.items() if layout != base},
            }
    ray.shutdown()
    emit({
        "benchmark": "generation_speed",
        "machine": {"cpus": cpus, "cpu": cpu_model(), "platform": platform.machine(), "torch": torch.__version__,
                    "ray": ray.__version__, "device": "cpu", "dataset": dataset, "load_average_before": load_before,
                    "load_average_after": os.getloadavg()},
        "config": {"members": args.members, "steps_per_generation": args.steps, "generations": args.generations,
                   "generations_counted": args.generations - 1, "repeats": args.repeats, "select_on": "train",
                   "baseline": base, "layout": "precision/pack_mode/pack_size"},
        "batch_sizes": batches,
    }, args.out)


if __name__ == "__main__":
    main()
