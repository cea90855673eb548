"""Several `popvae` command lines run in one fresh interpreter (no Ray, no torch until a command imports them): one
interpreter start for many cases. For each: its exit code, the heavy modules imported so far (they stay imported, so a
case is checked for what it added) and what it wrote to stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

HEAVY = ("torch", "ray", "torchmetrics", "torchvision", "pyarrow")

PROBE = """
import contextlib, io, json, sys
from popvae.cluster.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    results.append({"code": code, "heavy": sorted(m for m in HEAVY if m in sys.modules), "err": err.getvalue().strip()})
print(json.dumps(results))
""".replace("HEAVY", repr(HEAVY))


def probe(*argvs: tuple[str, ...], env: dict[str, str] | None = None) -> list[tuple[int, list[str], str]]:
    """(exit code, heavy modules imported so far, stderr) of each command line, in order, in one fresh interpreter."""
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argvs)], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return [(r["code"], r["heavy"], r["err"]) for r in json.loads(done.stdout.strip().splitlines()[-1])]
