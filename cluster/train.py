"""Entry point for `ray submit cluster/cluster.yaml cluster/train.py -- ARGS` (and `ray job submit ... -- python
cluster/train.py ARGS`): join the running cluster, then run exactly what `popvae train ARGS` runs.

It exists because `ray submit` runs a script, not a console command, on the head node; joining first
(address "auto") makes `popvae train` use that cluster instead of starting a Ray of its own.
"""

from __future__ import annotations

import sys

from popvae.cluster.cli import main


def run(argv: list[str]) -> int:
    import ray
    import torch  # noqa: F401  before ray.init: torch first loaded after it dies in a Ray job ("oneMKL FATAL ERROR")

    from popvae.population.contract import NAMESPACE

    ray.init(address="auto", namespace=NAMESPACE, log_to_driver=False)
    return main(["train", *argv])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
