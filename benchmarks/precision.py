"""How fast a pack's step runs in fp32 and bf16, vmapped and looped, against this machine's measured matmul ceiling.

In one process, one run (ratios are within the run: absolute times drift with the machine's load, recorded as
os.getloadavg()):
- `steps`: for each n in --members, the seconds of one training step of a pack of n default GS-VAEs (batch
  --batch-size) for fp32 vmap (the packed path before this benchmark), fp32 loop, bf16 vmap and bf16 loop: median of
  --repeats timed epochs of --steps steps each, after a warm-up epoch, with the spread;
- `flops`: the FLOPs of one member's training step (forward + backward, torch.utils.flop_counter), and the FLOP/s each
  variant achieves, against an fp32 and a bf16 --matmul-size matmul timed in the same run (the practical ceiling);
- `generation`: one generation of n = --generation-members (a pack's epoch of --generation-steps steps, select_on
  train, benchmarks/population.py's settings) at batch 64 and 128, today's packed fp32 (vmap) against what
  pack_mode auto and precision auto choose here;
- `amx` (CPU): which oneDNN kernels a bf16 looped step ran (ONEDNN_VERBOSE=1 in a child process): AMX ones are
  named `avx512_core_amx_bf16` by older oneDNN, `avx10_1_512_amx` by oneDNN 3.x;
- `profile`: the top ops by self time of one bf16 looped step of one member (torch.profiler).

Prints one JSON object and writes it to --out. From the repository root:
    .venv/bin/python -m benchmarks.precision --out benchmarks/results/precision-cpu.json
    .venv/bin/python -m benchmarks.precision --device cuda --members 1 8 16 --out benchmarks/results/precision-gpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import emit, spread
from popvae.models.dataset_loading import synthetic
from popvae.models.registry import build
from popvae.population.config import RunConfig
from popvae.population.pack import make_pack, pack_mode_for
from popvae.population.training import cpu_runs_bf16_fast, resolve_precision

VARIANTS = [("fp32", "vmap"), ("fp32", "loop"), ("bf16", "vmap"), ("bf16", "loop")]


def run_config(n: int, batch: int, steps: int, device: str, precision: str, mode: str, dataset: str = "synthetic") -> RunConfig:
    return RunConfig.model_validate({"dataset": dataset, "members": n, "batch_size": batch, "steps_per_epoch": steps,
                                     "select_on": "train", "device": device, "precision": precision, "pack_mode": mode})


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def epoch_seconds(cfg: RunConfig, images: np.ndarray, threads: int, repeats: int) -> list[float]:
    """Seconds of `repeats` epochs of a pack of cfg.members, after one warm-up epoch."""
    n = cfg.members
    pack = make_pack(list(range(1, n + 1)), cfg, images, images[:64], threads)
    taus = {i: 1.0 for i in range(1, n + 1)}
    pack.train_epoch(0, taus)
    out = []
    for g in range(1, repeats + 1):
        sync(cfg.device)
        started = time.perf_counter()
        pack.train_epoch(g, taus)
        sync(cfg.device)
        out.append(time.perf_counter() - started)
    return out


def step_flops(batch: int, device: str) -> int:
    """FLOPs of one default member's training step (forward, loss, backward) at `batch`, as torch counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build("gsvae", run_config(1, batch, 1, device, "fp32", "loop").model).to(device).train()
    x = torch.rand(batch, 1, 32, 32, device=device)
    with FlopCounterMode(display=False) as counter:
        model.loss(x)["total"].backward()
    return int(counter.get_total_flops())


def matmul_flops_per_s(size: int, dtype: torch.dtype, device: str, repeats: int = 5) -> dict[str, Any]:
    a, b = torch.rand(size, size, device=device, dtype=dtype), torch.rand(size, size, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - started)
    return {"size": size, "dtype": str(dtype).removeprefix("torch."), "seconds": spread(times),
            "flop_per_s": 2 * size**3 / min(times)}


AMX_CHILD = """
import torch
from popvae.models.registry import build
from popvae.population.config import RunConfig
from popvae.population.training import train_step
cfg = RunConfig.model_validate({"dataset": "synthetic", "device": "cpu", "precision": "bf16"})
model = build("gsvae", cfg.model).to(memory_format=torch.channels_last)
train_step(model, model.make_optimizer(), torch.rand(64, 1, 32, 32).contiguous(memory_format=torch.channels_last),
           precision="bf16")
"""


def amx_evidence() -> dict[str, Any]:
    """Run one bf16 looped step with ONEDNN_VERBOSE=1 in a child process and sort the primitives it ran by
    implementation. oneDNN 3.x names the AMX ISA `avx10_1_512_amx` in a primitive's implementation (older releases:
    `avx512_core_amx_bf16`); either counts as AMX here."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    out = subprocess.run([sys.executable, "-c", AMX_CHILD], capture_output=True, text=True, env=env, timeout=300).stdout
    rows = [ln.split(",") for ln in out.splitlines() if ln.startswith("onednn_verbose") and ",primitive,exec," in ln]
    by_impl: dict[str, int] = {}
    for r in rows:
        by_impl[f"{r[5]} {r[6]}"] = by_impl.get(f"{r[5]} {r[6]}", 0) + 1
    amx = [",".join(r) for r in rows if "amx" in r[6]]
    compute = [r for r in rows if r[5] in ("convolution", "deconvolution", "matmul", "inner_product")]
    return {"command": "ONEDNN_VERBOSE=1 python -c <one bf16 channels_last train_step of one member, batch 64>",
            "isa": [ln.split(",", 3)[-1] for ln in out.splitlines() if ",info,cpu," in ln or ",info,oneDNN" in ln],
            "primitives_executed": len(rows), "on_amx": len(amx),
            "compute_primitives_on_amx": f"{sum('amx' in r[6] for r in compute)} of {len(compute)}",
            "by_kind_and_implementation": by_impl, "sample_amx_lines": amx[:3]}


def profile_top_ops(batch: int, device: str, top: int = 12) -> list[dict[str, Any]]:
    """The top ops by self time of one bf16 looped step of one member (after a warm-up step)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = run_config(1, batch, 2, device, "bf16", "loop")
    images = synthetic(1024, seed=0).images
    pack = make_pack([1], cfg, images, images[:64], torch.get_num_threads())
    pack.train_epoch(0, {1: 1.0})
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities) as prof:
        pack.train_epoch(1, {1: 1.0})
    key = "self_cuda_time_total" if device == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)[:top]
    total = sum(getattr(e, key) for e in prof.key_averages())
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1000 / 2, "share": getattr(e, key) / total}
            for e in events]  # per step: the epoch had 2 steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 5, 8])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--generation-members", type=int, default=8)
    parser.add_argument("--generation-steps", type=int, default=20, help="benchmarks/population.py's --steps")
    parser.add_argument("--generation-batches", type=int, nargs="*", default=[64, 128])
    parser.add_argument("--matmul-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip", nargs="*", default=[], choices=["amx", "profile", "generation"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()
    images = synthetic(2048, seed=0).images
    flops = step_flops(args.batch_size, args.device)
    ceiling = {p: matmul_flops_per_s(args.matmul_size, dtype, args.device)
               for p, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    steps: dict[str, Any] = {}
    for n in args.members:
        row: dict[str, Any] = {}
        for precision, mode in VARIANTS:
            cfg = run_config(n, args.batch_size, args.steps, args.device, precision, mode)
            per_step = [s / args.steps for s in epoch_seconds(cfg, images, args.threads, args.repeats)]
            achieved = n * flops / min(per_step)
            row[f"{precision}_{mode}"] = {"step_s": spread(per_step), "flop_per_s": achieved,
                                          "of_ceiling": achieved / ceiling[precision]["flop_per_s"]}
        base = row["fp32_vmap"]["step_s"]["median"]
        row["speedup_over_fp32_vmap"] = {k: base / v["step_s"]["median"] for k, v in row.items()}
        steps[str(n)] = row
    chosen = {"precision": resolve_precision("auto", device), "pack_mode": pack_mode_for("auto", device)}
    result: dict[str, Any] = {
        "benchmark": "precision",
        "machine": {"cpus": os.cpu_count(), "threads": args.threads, "platform": platform.machine(),
                    "processor": platform.processor(), "torch": torch.__version__, "device": args.device,
                    "cpu_flags_amx_or_avx512_bf16": cpu_runs_bf16_fast(),
                    "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
                    "load_average_before": load_before},
        "config": {"batch_size": args.batch_size, "steps_per_timed_epoch": args.steps, "repeats": args.repeats,
                   "model": "default GS-VAE, 32x32, synthetic images", "auto_chooses": chosen},
        "flops": {"one_member_step_batch": args.batch_size, "one_member_step_flops": flops,
                  "counted_by": "torch.utils.flop_counter.FlopCounterMode (forward, loss, backward)",
                  "matmul_ceiling": ceiling},
        "steps": steps,
    }
    if "generation" not in args.skip:
        fmnist = "fashion-mnist" if Path("/usr/share/datasets/fashion-mnist").exists() else "synthetic"
        from popvae.models.dataset_loading import load_split

        train = load_split(fmnist, "train").images
        gen: dict[str, Any] = {"members": args.generation_members, "steps": args.generation_steps, "dataset": fmnist,
                               "what": "seconds of one pack epoch (a generation's training, select_on train), "
                                       "in-process (no Ray)"}
        for batch in args.generation_batches:
            runs: dict[str, list[float]] = {"today_fp32_vmap": [], "auto": []}
            for label, (precision, mode) in (("today_fp32_vmap", ("fp32", "vmap")), ("auto", ("auto", "auto"))):
                cfg = run_config(args.generation_members, batch, args.generation_steps, args.device, precision, mode, fmnist)
                runs[label] = epoch_seconds(cfg, train, args.threads, args.repeats)
            ratios = [a / b for a, b in zip(runs["today_fp32_vmap"], runs["auto"], strict=True)]
            gen[f"batch_{batch}"] = {"seconds": {k: spread(v) for k, v in runs.items()},
                                     "today_over_auto": spread(ratios)}
        result["generation"] = gen
    if args.device == "cpu" and "amx" not in args.skip:
        result["amx"] = amx_evidence()
    if "profile" not in args.skip:
        result["profile_bf16_loop_step"] = profile_top_ops(args.batch_size, args.device)
    result["machine"]["load_average_after"] = os.getloadavg()
    emit(result, args.out)


if __name__ == "__main__":
    main()
