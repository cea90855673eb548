"""Entry point for `ray submit cluster/cluster.yaml cluster/train.py -- ARGS` (and `ray job submit ... -- python -m
popvae.cluster.train ARGS`): join the running cluster, then run exactly what `popvae train ARGS` runs.

It exists because `ray submit` runs a script, not a console command, on the head node; joining first
(address "auto") makes `popvae train` use that cluster instead of starting a Ray of its own.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from popvae.cluster.cli import main


def run(argv: list[str]) -> int:
    import ray
    import torch  # noqa: F401  before ray.init: torch first loaded after it dies in a Ray job ("oneMKL FATAL ERROR")

    from popvae.population.contract import NAMESPACE

    _leave_job_working_dir()
    ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
    return main(["train", *argv])


def _leave_job_working_dir() -> None:
    """Run from the home folder, not from a Ray job's unpacked working_dir: Ray may unpack that folder again while the
    job runs (nodes that share one machine's temp folder each set it up), and a process whose folder was replaced
    fails in os.getcwd(), which torch calls on import. The code stays importable (the folder is on sys.path), and a
    relative --run-dir lands in the home folder instead of a temporary one that Ray deletes after the job."""
    if "working_dir_files" in Path.cwd().parts:
        os.chdir(Path.home())


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
