"""How long a local run's Ray processes outlive a kill -9 of its driver alone (README, "Troubleshooting").

Starts `popvae train` (synthetic data, 2 members, 2 CPUs) in a session of its own, waits for its first epoch,
kill -9s the driver only, then prints when each process of that session is gone (at most `--wait` seconds).

    .venv/bin/python -m benchmarks.lingering [--wait 180]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def in_session(sid: int) -> dict[int, str]:
    """{pid: command name} of the live processes of session `sid`."""
    found = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[0].decode()
        except (OSError, IndexError, ValueError):
            continue
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wait", type=float, default=180.0)
    args = parser.parse_args()
    run = Path(tempfile.mkdtemp(prefix="popvae-lingering-")) / "run"
    driver = subprocess.Popen([sys.executable, "-m", "popvae.cluster.cli", "train", "--dataset", "synthetic",
                               "--members", "2", "--epochs", "400", "--steps-per-epoch", "2", "--run-dir", str(run),
                               "--num-cpus", "2", "--quiet"], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run / "status.json").is_file() or json.loads((run / "status.json").read_text())["epoch"] < 1:
        if driver.poll() is not None:
            sys.exit(f"the run ended by itself (exit {driver.returncode})")
        time.sleep(0.5)
    left = in_session(driver.pid)
    driver.kill()
    driver.wait()
    killed = time.monotonic()
    while left and time.monotonic() - killed < args.wait:
        now = in_session(driver.pid)
        for pid in sorted(set(left) - set(now)):
            print(f"{time.monotonic() - killed:6.1f} s  gone: {Path(left[pid]).name}")
        left = {pid: name for pid, name in left.items() if pid in now}  # the name seen first: an exiting one has none
        time.sleep(0.5)
    print(json.dumps({"still_alive_after_s": args.wait, "processes": sorted(left.values())}) if left else "all gone")


if __name__ == "__main__":
    main()
