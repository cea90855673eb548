"""Start-up time of the `popvae` command; prints one JSON object.

Each command runs as a fresh process, `--repeats` times, interleaved with `python -c pass` (the bare
interpreter, measured in the same run, so that machine load shows in both): the target is `--help` and every
rejection of bad input that needs no data under 1.5 s. Reported per command: wall seconds (median, min, max,
all runs), the median over `python -c pass`, and the exit code (2 for the rejections).

Also timed, without a target: `import popvae` with the API's names, and `--resume` of a run with nothing left to
train (it reads the checkpoint, so torch is imported; Ray is not started).

    .venv/bin/python -m benchmarks.startup [--repeats 5] [--out benchmarks/results/startup-cpu.json]
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

TARGET_S = 1.5


def timed(argv: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - start, done.returncode


def finished_run(folder: Path) -> Path:
    """A run folder whose checkpoint says every epoch is done (what a resume reads)."""
    import torch

    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dataset": "synthetic", "epochs": 2}))
    state = {"epochs_done": 2, "taus": {}, "patience": {}, "flags": {}, "weights": {}, "optimizers": {}}
    torch.save(state, folder / "checkpoints" / "latest.pt")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    popvae = str(Path(sys.executable).parent / "popvae")
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        bad_json = tmp_path / "bad.json"
        bad_json.write_text(json.dumps({"dataset": "synthetic", "memberz": 3}))
        new = str(tmp_path / "new")
        targeted = {
            "popvae --help": [popvae, "--help"],
            "popvae train --help": [popvae, "train", "--help"],
            "train: bad setting (--members 0)": [popvae, "train", "--dataset", "synthetic", "--members", "0", "--run-dir", new],
            "train: bad config file (unknown key)": [popvae, "train", "--config", str(bad_json), "--run-dir", new],
            "train: unknown dataset": [popvae, "train", "--dataset", "imagenet", "--run-dir", new],
            "train: --resume with --members": [popvae, "train", "--resume", new, "--members", "3"],
            "robust: unknown method": [popvae, "robust", "--methods", "gmm-dae,bad", "--run-dir", new],
            "evaluate: unknown experiment": [popvae, "evaluate", tmp, "--experiments", "telepathy"],
            "evaluate: missing target": [popvae, "evaluate", str(tmp_path / "nothing")],
        }
        others = {
            "import popvae (API names)": [py, "-c", "import popvae; popvae.RunConfig; popvae.train"],
            "train --resume: nothing left to train": [popvae, "train", "--resume", str(finished_run(tmp_path / "done"))],
        }
        commands = {"python -c pass": [py, "-c", "pass"], **targeted, **others}
        for argv in commands.values():  # warm the file cache once; not counted
            timed(argv)
        runs: dict[str, list[float]] = {name: [] for name in commands}
        codes: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, argv in commands.items():
                seconds, codes[name] = timed(argv)
                runs[name].append(seconds)
        if Path(new).exists():
            raise SystemExit(f"a rejection wrote {new}")
    bare = statistics.median(runs["python -c pass"])

    def row(name: str) -> dict[str, object]:
        xs = runs[name]
        return {"median_s": round(statistics.median(xs), 3), "min_s": round(min(xs), 3), "max_s": round(max(xs), 3),
                "minus_python_s": round(statistics.median(xs) - bare, 3), "exit_code": codes[name],
                "runs_s": [round(x, 3) for x in xs]}

    result = {
        "benchmark": "startup",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "repeats": args.repeats,
        "target_s": TARGET_S,
        "python -c pass": row("python -c pass"),
        "targeted": {name: row(name) for name in targeted},
        "all_targeted_under_target": all(max(runs[name]) < TARGET_S for name in targeted),
        "other": {name: row(name) for name in others},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
