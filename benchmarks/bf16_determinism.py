"""Where a bf16 run can lose bit-identity on a CPU: a member's training steps repeated, in fresh processes, at
different thread counts, and across a save/load (a resume without Ray).

A bf16 run resumed through Ray was once not bit for bit the uninterrupted run (tests/test_population.py). This
benchmark narrowed down where: the steps themselves are reproducible, so the cause was elsewhere (it was the resume
turning a recorded looped pack into a vmap one: population/driver.resolve_speed now keeps what the run recorded).
Each case prints the sha256 (12 hex digits) of the
weights after `--steps` steps of one member at batch --batch-size. Equal digests inside a case = reproducible.
- `repeat`: the same steps --repeats times in one process, per precision, thread count and memory format;
- `processes`: the same in --processes fresh interpreters (a new oneDNN state each time);
- `resume`: half the steps, torch.save/torch.load of the weights and Adam, the other half in a fresh process, against
  all the steps in one (the single-model analogue of a resume).

    .venv/bin/python -m benchmarks.bf16_determinism --out benchmarks/results/bf16-determinism-cpu.json
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import emit
from popvae.models.registry import build
from popvae.population.config import RunConfig
from popvae.population.training import train_step

SMALL = {"widths": [8, 16, 16, 16], "z1_vars": 4, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}


def member(small: bool, channels_last: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    config = RunConfig.model_validate({"dataset": "synthetic", "members": 1, **({"model": SMALL} if small else {})})
    torch.manual_seed(0)
    model = build("gsvae", config.model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, torch.optim.Adam(model.parameters(), 1e-3)


def steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, precision: str, channels_last: bool, batch: int,
          first: int, count: int) -> None:
    """Steps first..first+count-1; step t's batch depends on t alone, so a split run draws what a whole one does."""
    for t in range(first, first + count):
        x = torch.rand(batch, 1, 32, 32, generator=torch.Generator().manual_seed(1000 + t))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(2000 + t)  # the model's own Gumbel draws
        train_step(model, optimizer, x, precision=precision)  # type: ignore[arg-type]


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


def one(args: argparse.Namespace, precision: str, threads: int, channels_last: bool, start: str | None = None,
        save: str | None = None) -> str:
    """`args.steps` steps from a fresh member (or the second half from `start`, or the first half saved to `save`)."""
    torch.set_num_threads(threads)
    model, optimizer = member(args.small, channels_last)
    half = args.steps // 2
    if start is not None:
        state = torch.load(start)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        steps(model, optimizer, precision, channels_last, args.batch_size, half, args.steps - half)
    elif save is not None:
        steps(model, optimizer, precision, channels_last, args.batch_size, 0, half)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, save)
    else:
        steps(model, optimizer, precision, channels_last, args.batch_size, 0, args.steps)
    return digest(model)


def child(args: argparse.Namespace, *extra: str) -> str:
    """`one` in a fresh interpreter: its digest."""
    cmd = [sys.executable, "-m", "benchmarks.bf16_determinism", "--steps", str(args.steps), "--batch-size",
           str(args.batch_size), *(["--small"] if args.small else []), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--small", action="store_true", help="the tests' small model (default: the default GS-VAE)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--one", nargs=3, metavar=("PRECISION", "THREADS", "FORMAT"), help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        precision, threads, layout = args.one
        print(one(args, precision, int(threads), layout == "channels_last", args.start, args.save))
        return

    cases: dict[str, Any] = {}
    for precision in ("fp32", "bf16"):
        for threads in (1, 2):
            for layout in ("contiguous", "channels_last"):
                key = f"{precision}/{threads}-threads/{layout}"
                flag = ["--one", precision, str(threads), layout]
                repeat = [one(args, precision, threads, layout == "channels_last") for _ in range(args.repeats)]
                processes = [child(args, *flag) for _ in range(args.processes)]
                with tempfile.TemporaryDirectory() as tmp:
                    saved = str(Path(tmp) / "half.pt")
                    child(args, *flag, "--save", saved)
                    resumed = child(args, *flag, "--start", saved)
                cases[key] = {"repeat": repeat, "processes": processes, "resumed": resumed,
                              "reproducible": len(set(repeat) | set(processes) | {resumed}) == 1}
    by_threads = {p: len({cases[f"{p}/{t}-threads/contiguous"]["repeat"][0] for t in (1, 2)}) == 1 for p in ("fp32", "bf16")}
    emit({"benchmark": "bf16_determinism", "steps": args.steps, "batch_size": args.batch_size,
          "model": "small (tests)" if args.small else "default GS-VAE", "torch": torch.__version__, "cases": cases,
          "same_bits_at_1_and_2_threads": by_threads}, args.out)


if __name__ == "__main__":
    main()
