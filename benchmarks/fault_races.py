"""How often two fault races end a real `popvae train` the wrong way, over repeated tries (tests check one try each).

- `sigterm-group`: SIGTERM to the whole process group of a training run (as `timeout` and systemd send it); right is
  exit 143 with the run folder "interrupted". It used to end with exit 1 from inside Ray, when the driver owned
  stored objects and tried to recover them after the raylet died.
- `kill-pack`: kill -9 of one pack's process of a live run; right is the member event `restarted` while the run goes
  on. A kill that landed while the coordinator gathered the checkpoint used to restart the whole coordinator instead.

Prints one JSON object. From the repository root (each try starts its own Ray; about 30 s a try):
    .venv/bin/python -m benchmarks.fault_races --race sigterm-group --tries 12
    .venv/bin/python -m benchmarks.fault_races --race kill-pack --tries 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from popvae.population import folder_io
from tests.test_faults import epoch, process_of, start, status, wait_for
from tests.test_stop_faults import sigterm_to_the_whole_group


def sigterm_group(tmp: Path) -> dict:
    code, err, run = sigterm_to_the_whole_group(tmp)
    state = status(run)["state"]
    return {"right": code == 143 and state == "interrupted", "exit": code, "state": state, "stderr_tail": err[-300:]}


def kill_pack(tmp: Path) -> dict:
    run = tmp / "run"
    proc = start(tmp, "train", "--config", str(tmp / "small.json"), "--run-dir", str(run), "--epochs", "400",
                 "--num-cpus", "2", "--quiet")
    try:
        wait_for(lambda: epoch(run) >= 1, proc=proc)
        killed = time.monotonic()
        os.kill(process_of(proc.pid, "ray::Worker"), signal.SIGKILL)
        try:
            wait_for(lambda: any(r["event"] == "restarted" for r in folder_io.read_rows(run / "history.parquet")),
                     proc=proc, timeout=60)
            outcome = {"right": True, "seconds_to_restarted": time.monotonic() - killed}
        except AssertionError as err:
            outcome = {"right": False, "why": str(err)[:300]}
        outcome["coordinator_restarts"] = status(run).get("coordinator_restarts", 0)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=60)
    return outcome


RACES = {"sigterm-group": sigterm_group, "kill-pack": kill_pack}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--race", choices=sorted(RACES), required=True)
    parser.add_argument("--tries", type=int, default=5)
    args = parser.parse_args()
    tries = []
    for _ in range(args.tries):
        with tempfile.TemporaryDirectory() as tmp:
            tries.append(RACES[args.race](Path(tmp)))
    print(json.dumps({"race": args.race, "tries": args.tries, "wrong": sum(not t["right"] for t in tries),
                      "load_average": os.getloadavg(), "each": tries}, indent=1))


if __name__ == "__main__":
    main()
